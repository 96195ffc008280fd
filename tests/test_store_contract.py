"""The Store contract, run over every store (the ``store`` fixture is parametrised).

Each test states one promise the transport and the extension rely on. Leases and
ETAs are short where time has to pass; everything else uses long leases so that a
slow machine cannot make a lease expire by accident. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tq_kombu.errors import PriorityError
from tq_kombu.priority import Priority
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import (
    Binding,
    DeadLetter,
    DeadReason,
    Delivery,
    FetchResult,
    Lease,
    NewMessage,
    QueueCounts,
    RetentionPolicy,
    State,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Long enough that no lease expires unless a test means it to.
LONG_LEASE = 60.0
#: Slack for stores that keep times in milliseconds or on a server clock.
CLOCK_SLACK = 0.01


# -- helpers -----------------------------------------------------------------
def message(
    message_id: str,
    priority: int = Priority.NORMAL,
    *,
    eta: float | None = None,
    task_name: str = "tasks.example",
    task_id: str = "",
    waiting: bool = False,
    payload: bytes | None = None,
) -> NewMessage:
    return NewMessage(
        message_id=message_id,
        payload=f"payload of {message_id}".encode() if payload is None else payload,
        priority=int(priority),
        eta=eta,
        task_name=task_name,
        task_id=task_id or f"task-{message_id}",
        waiting=waiting,
    )


def fetch(
    store: Store,
    queues: Sequence[str],
    max_count: int = 1,
    *,
    consumer: str = "consumer-1",
    lease_seconds: float = LONG_LEASE,
    max_deliveries: int = 5,
    skip: Collection[str] = (),
) -> FetchResult:
    return store.fetch(queues, max_count, consumer, lease_seconds, max_deliveries, skip)


def ids(result: FetchResult) -> list[str]:
    return [delivery.lease.message_id for delivery in result.deliveries]


def only(result: FetchResult) -> Delivery:
    assert len(result.deliveries) == 1, result
    return result.deliveries[0]


def fetch_within(
    store: Store, queues: Sequence[str], seconds: float = 5.0, **options: object
) -> FetchResult:
    """Fetch until something is delivered (time has to pass for it) or ``seconds`` run out."""
    deadline = time.monotonic() + seconds
    while True:
        result = fetch(store, queues, **options)  # type: ignore[arg-type]
        if result.deliveries or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` run out; return its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


# -- connection ----------------------------------------------------------------
def test_a_fresh_store_answers_ping_and_holds_nothing(store: Store) -> None:
    store.ping()
    assert store.counts("default") == QueueCounts()
    assert fetch(store, ["default"]) == FetchResult([], more_ready=False, next_due=None)


def test_a_closed_store_reconnects_on_next_use(store: Store) -> None:
    store.enqueue("default", message("a"))
    store.close()
    store.enqueue("default", message("b"))
    assert store.counts("default").ready == 2


# -- priority and order ----------------------------------------------------------
def test_a_higher_priority_message_is_fetched_first(store: Store) -> None:
    # Given messages enqueued from the lowest to the highest priority
    for name, priority in [
        ("low", Priority.LOW),
        ("normal", Priority.NORMAL),
        ("urgent", Priority.URGENT),
        ("high", Priority.HIGH),
    ]:
        store.enqueue("default", message(name, priority))
    # When they are fetched one at a time
    order = [ids(fetch(store, ["default"]))[0] for _ in range(4)]
    # Then the most urgent comes first
    assert order == ["urgent", "high", "normal", "low"]


def test_one_fetch_hands_out_up_to_max_count_messages_in_priority_order(store: Store) -> None:
    for index, priority in enumerate([1, 200, 7, 255, 0]):
        store.enqueue("default", message(f"m{index}", priority))
    result = fetch(store, ["default"], max_count=3)
    assert ids(result) == ["m3", "m1", "m2"]
    assert [d.priority for d in result.deliveries] == [255, 200, 7]
    assert result.more_ready is True


def test_messages_of_one_priority_are_fetched_in_the_order_they_were_enqueued(
    store: Store,
) -> None:
    names = [f"m{index:02}" for index in range(12)]
    for name in names:
        store.enqueue("default", message(name))
    fetched = ids(fetch(store, ["default"], max_count=5))
    fetched += [ids(fetch(store, ["default"]))[0] for _ in range(7)]
    assert fetched == names


def test_priority_is_strict_across_all_the_fetched_queues(store: Store) -> None:
    # Given low priority work in one queue and urgent work in another
    store.enqueue("emails", message("email-1", Priority.LOW))
    store.enqueue("emails", message("email-2", Priority.LOW))
    store.enqueue("reports", message("report-1", Priority.URGENT))
    store.enqueue("reports", message("report-2", Priority.NORMAL))
    # When a consumer fetches from both, naming the low priority queue first
    result = fetch(store, ["emails", "reports"], max_count=4)
    # Then the urgent message comes first whatever the order of the queues
    assert ids(result) == ["report-1", "report-2", "email-1", "email-2"]
    assert [d.lease.queue for d in result.deliveries] == ["reports", "reports", "emails", "emails"]


def test_a_queue_named_twice_in_a_fetch_hands_out_each_message_once(store: Store) -> None:
    store.enqueue("default", message("a"))
    store.enqueue("default", message("b"))
    assert sorted(ids(fetch(store, ["default", "default"], max_count=5))) == ["a", "b"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0, 1, 5, 10, 255])),
        min_size=1,
        max_size=25,
    ),
    batch=st.integers(min_value=1, max_value=7),
)
def test_any_mix_of_queues_and_priorities_is_handed_out_by_priority_then_arrival(
    store: Store, plan: list[tuple[str, int]], batch: int
) -> None:
    # Given messages spread over three queues (fresh queue names for every example)
    prefix = uuid.uuid4().hex[:8]
    queues = [f"{prefix}-{name}" for name in ("a", "b", "c")]
    arrival: dict[str, int] = {}
    priority_of: dict[str, int] = {}
    queue_of: dict[str, str] = {}
    for index, (queue_name, priority) in enumerate(plan):
        message_id = f"m{index}"
        arrival[message_id], priority_of[message_id] = index, priority
        queue_of[message_id] = f"{prefix}-{queue_name}"
        store.enqueue(queue_of[message_id], message(message_id, priority))
    # When everything is fetched in batches
    fetched: list[str] = []
    while True:
        got = ids(fetch(store, queues, max_count=batch))
        if not got:
            break
        fetched.extend(got)
    # Then every message came exactly once, never before a more urgent one,
    # and first in first out within one queue and priority
    assert sorted(fetched) == sorted(arrival)
    priorities = [priority_of[m] for m in fetched]
    assert priorities == sorted(priorities, reverse=True)
    for queue in queues:
        for priority in set(priorities):
            same = [m for m in fetched if queue_of[m] == queue and priority_of[m] == priority]
            assert same == sorted(same, key=arrival.__getitem__)


# -- delays --------------------------------------------------------------------
def test_a_delayed_message_is_not_handed_out_before_its_eta_and_is_after(store: Store) -> None:
    # Given a message due in 0.4 s
    eta = time.time() + 0.4
    store.enqueue("default", message("later", eta=eta))
    # When a consumer fetches at once, then Then it gets nothing but learns when to come back
    early = fetch(store, ["default"])
    assert early.deliveries == []
    assert early.next_due == pytest.approx(eta, abs=CLOCK_SLACK)
    assert store.counts("default").delayed == 1
    # When the consumer keeps fetching, Then it gets the message once the ETA has passed
    late = fetch_within(store, ["default"])
    assert ids(late) == ["later"]
    assert time.time() >= eta - CLOCK_SLACK


def test_a_message_whose_eta_has_passed_is_ready_at_once(store: Store) -> None:
    store.enqueue("default", message("overdue", eta=time.time() - 60))
    assert store.counts("default").ready == 1
    assert ids(fetch(store, ["default"])) == ["overdue"]


def test_a_delayed_message_keeps_its_priority_once_due(store: Store) -> None:
    store.enqueue("default", message("plain"))
    store.enqueue("default", message("urgent-later", Priority.URGENT, eta=time.time() + 0.2))
    assert eventually(lambda: store.info("default", "urgent-later") is not None)
    time.sleep(0.3)  # the ETA must pass
    assert ids(fetch(store, ["default"], max_count=2)) == ["urgent-later", "plain"]


# -- leases --------------------------------------------------------------------
def test_an_expired_lease_returns_the_message_to_ready_with_its_delivery_count_raised(
    store: Store,
) -> None:
    # Given a message delivered once with a short lease that is never renewed
    store.enqueue("default", message("a"))
    first = only(fetch(store, ["default"], consumer="c1", lease_seconds=0.3))
    assert first.delivery_count == 1
    # When the lease runs out, Then another consumer gets it, counted as a second delivery
    second = only(fetch_within(store, ["default"], consumer="c2"))
    assert second.lease.message_id == "a"
    assert second.delivery_count == 2
    assert second.lease.token != first.lease.token
    assert second.payload == first.payload


def test_renewing_a_lease_keeps_it_past_its_original_expiry(store: Store) -> None:
    # Given a message leased for 0.5 s
    store.enqueue("default", message("a"))
    lease = only(fetch(store, ["default"], consumer="c1", lease_seconds=0.5)).lease
    # When its holder renews it for a minute before it runs out
    assert store.renew([lease], LONG_LEASE) == []
    time.sleep(0.7)  # the original lease must run out
    # Then nobody else gets the message and the holder can still settle it
    assert fetch(store, ["default"], consumer="c2").deliveries == []
    assert store.renew([lease], LONG_LEASE) == []
    assert store.ack(lease) is True


def test_a_stale_lease_can_neither_settle_nor_renew_after_redelivery(store: Store) -> None:
    # Given a message whose lease expired and which went to a second consumer
    store.enqueue("default", message("a"))
    stale = only(fetch(store, ["default"], consumer="c1", lease_seconds=0.3)).lease
    current = only(fetch_within(store, ["default"], consumer="c2")).lease
    # When the first consumer tries to renew or settle it, Then nothing happens
    assert store.renew([stale, current], LONG_LEASE) == [stale]
    assert store.ack(stale) is False
    assert store.release(stale) is False
    assert store.requeue(stale) is False
    assert store.bury(stale, DeadLetter(DeadReason.FAILED)) is False
    info = store.info("default", "a")
    assert info is not None and info.state is State.INFLIGHT and info.delivery_count == 2
    # And the current holder still owns it
    assert store.ack(current) is True
    assert store.info("default", "a") is None


def test_a_lease_the_store_never_issued_changes_nothing(store: Store) -> None:
    store.enqueue("default", message("a"))
    held = only(fetch(store, ["default"])).lease
    forged = Lease("default", "a", "someone-else:1")
    missing = Lease("default", "nope", "consumer-1:1")
    for lease in (forged, missing):
        assert store.ack(lease) is False
        assert store.release(lease) is False
        assert store.requeue(lease) is False
        assert store.bury(lease, DeadLetter(DeadReason.REJECTED)) is False
    assert store.renew([forged, missing], LONG_LEASE) == [forged, missing]
    assert store.renew([], LONG_LEASE) == []
    assert store.ack(held) is True


def test_an_acked_message_is_gone_and_cannot_be_acked_again(store: Store) -> None:
    store.enqueue("default", message("a"))
    lease = only(fetch(store, ["default"])).lease
    assert store.ack(lease) is True
    assert store.ack(lease) is False
    assert store.info("default", "a") is None
    assert store.payload("default", "a") is None
    assert store.counts("default") == QueueCounts()


def test_a_message_delivered_more_than_max_deliveries_times_goes_to_dead_with_that_reason(
    store: Store,
) -> None:
    # Given a message that was handed out twice and requeued each time
    store.enqueue("default", message("poison", Priority.HIGH))
    store.enqueue("default", message("healthy", Priority.LOW))
    for expected_count in (1, 2):
        delivery = only(fetch(store, ["default"], max_deliveries=2))
        assert (delivery.lease.message_id, delivery.delivery_count) == ("poison", expected_count)
        assert store.requeue(delivery.lease) is True
    # When a third delivery is attempted with max_deliveries=2
    result = fetch(store, ["default"], max_deliveries=2)
    # Then the poison message is set aside as dead and the fetch moves on to the next one
    assert ids(result) == ["healthy"]
    assert store.counts("default") == QueueCounts(inflight=1, dead=1)
    info = store.info("default", "poison")
    assert info is not None
    assert info.state is State.DEAD
    assert info.dead_reason == DeadReason.MAX_DELIVERIES.value == "max_deliveries"


# -- settling a delivery -------------------------------------------------------------
def test_a_requeued_message_keeps_its_priority_and_goes_behind_its_level(store: Store) -> None:
    # Given two high and one low priority message, the first high one delivered
    store.enqueue("default", message("high-1", Priority.HIGH))
    store.enqueue("default", message("high-2", Priority.HIGH))
    store.enqueue("default", message("low", Priority.LOW))
    lease = only(fetch(store, ["default"])).lease
    # When it is rejected with requeue
    assert store.requeue(lease) is True
    # Then it comes back after the other high one but before the low one, still counted
    result = fetch(store, ["default"], max_count=3)
    assert ids(result) == ["high-2", "high-1", "low"]
    assert result.deliveries[1].priority == Priority.HIGH
    assert result.deliveries[1].delivery_count == 2


def test_releasing_a_message_returns_it_to_ready_and_never_lowers_its_delivery_count(
    store: Store,
) -> None:
    store.enqueue("default", message("a"))
    lease = only(fetch(store, ["default"])).lease
    assert store.release(lease) is True
    assert store.counts("default") == QueueCounts(ready=1)
    again = only(fetch(store, ["default"]))
    assert again.delivery_count == 2


def test_a_message_released_on_every_delivery_still_reaches_max_deliveries(store: Store) -> None:
    # Given a message that crashes every worker it reaches, released at each shutdown
    store.enqueue("default", message("a"))
    for _ in range(3):
        assert store.release(only(fetch(store, ["default"], max_deliveries=3)).lease)
    # When it would be handed out a fourth time, Then it is dead instead
    assert fetch(store, ["default"], max_deliveries=3).deliveries == []
    info = store.info("default", "a")
    assert info is not None and info.state is State.DEAD
    assert info.dead_reason == DeadReason.MAX_DELIVERIES.value


def test_a_buried_message_shows_as_dead_with_its_reason_in_counts_info_and_listing(
    store: Store,
) -> None:
    store.enqueue("default", message("a", Priority.HIGH, task_name="tasks.fragile"))
    lease = only(fetch(store, ["default"])).lease
    assert store.bury(lease, DeadLetter(DeadReason.REJECTED, "rejected by the task")) is True
    assert store.counts("default") == QueueCounts(dead=1)
    info = store.info("default", "a")
    assert info is not None
    assert (info.state, info.dead_reason, info.dead_detail) == (
        State.DEAD,
        "rejected",
        "rejected by the task",
    )
    assert (info.priority, info.task_name, info.delivery_count) == (
        Priority.HIGH,
        "tasks.fragile",
        1,
    )
    assert [m.message_id for m in store.list_messages("default", State.DEAD)] == ["a"]
    assert store.payload("default", "a") == b"payload of a"
    # A dead message is not handed out again, nor settled again
    assert fetch(store, ["default"]).deliveries == []
    assert store.ack(lease) is False


def test_a_payload_can_be_stored_straight_into_the_dead_set(store: Store) -> None:
    store.bury_payload(
        "default",
        message("broken", task_name="tasks.x"),
        DeadLetter(DeadReason.UNDECRYPTABLE, "unknown key id 7"),
    )
    assert store.counts("default") == QueueCounts(dead=1)
    info = store.info("default", "broken")
    assert info is not None
    assert (info.state, info.dead_reason, info.dead_detail) == (
        State.DEAD,
        "undecryptable",
        "unknown key id 7",
    )
    assert store.payload("default", "broken") == b"payload of broken"
    assert fetch(store, ["default"]).deliveries == []


# -- inspection ------------------------------------------------------------------
def test_counts_cover_every_state(store: Store) -> None:
    store.enqueue("default", message("in-flight", Priority.URGENT))
    store.enqueue("default", message("ready"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    store.bury_payload("default", message("dead"), DeadLetter(DeadReason.FAILED))
    assert ids(fetch(store, ["default"])) == ["in-flight"]
    assert store.counts("default") == QueueCounts(ready=1, delayed=1, inflight=1, dead=1, waiting=1)
    assert store.counts("another") == QueueCounts()


def test_info_describes_a_message_without_its_payload(store: Store) -> None:
    eta = time.time() + 3600
    store.enqueue("default", message("a", 42, eta=eta, task_name="tasks.add", task_id="t-1"))
    info = store.info("default", "a")
    assert info is not None
    assert (info.queue, info.message_id, info.state) == ("default", "a", State.DELAYED)
    assert (info.priority, info.task_name, info.task_id) == (42, "tasks.add", "t-1")
    assert info.delivery_count == 0
    assert info.eta == pytest.approx(eta, abs=CLOCK_SLACK)
    assert info.dead_reason is None
    assert store.info("default", "missing") is None
    assert store.info("another", "a") is None


def test_payloads_come_back_byte_for_byte_in_every_state(store: Store) -> None:
    blob = bytes(range(256)) * 40
    store.enqueue("default", message("a", payload=blob))
    assert store.payload("default", "a") == blob
    delivery = only(fetch(store, ["default"]))
    assert delivery.payload == blob
    assert store.payload("default", "a") == blob
    assert store.payload("default", "missing") is None


def test_list_messages_gives_each_state_in_its_own_order(store: Store) -> None:
    now = time.time()
    # ready: hand-out order
    for name, priority in [("r-low", 1), ("r-high-1", 10), ("r-high-2", 10)]:
        store.enqueue("default", message(name, priority))
    # delayed: due order
    store.enqueue("default", message("d-late", eta=now + 300))
    store.enqueue("default", message("d-soon", eta=now + 100))
    # waiting: arrival order
    store.enqueue("default", message("w-1", waiting=True))
    store.enqueue("default", message("w-2", waiting=True))
    # dead: order of death
    store.bury_payload("default", message("x-first"), DeadLetter(DeadReason.FAILED))
    store.bury_payload("default", message("x-second"), DeadLetter(DeadReason.FAILED))
    # in flight: expiry order
    store.enqueue("other", message("f-long", Priority.URGENT))
    store.enqueue("other", message("f-short", Priority.URGENT))
    fetch(store, ["other"], lease_seconds=300)
    fetch(store, ["other"], lease_seconds=100)

    def listed(queue: str, state: State, offset: int = 0, limit: int = 100) -> list[str]:
        return [m.message_id for m in store.list_messages(queue, state, offset, limit)]

    assert listed("default", State.READY) == ["r-high-1", "r-high-2", "r-low"]
    assert listed("default", State.DELAYED) == ["d-soon", "d-late"]
    assert listed("default", State.WAITING) == ["w-1", "w-2"]
    assert listed("default", State.DEAD) == ["x-first", "x-second"]
    assert listed("other", State.INFLIGHT) == ["f-short", "f-long"]
    assert listed("default", State.INFLIGHT) == []
    # and pages through them
    assert listed("default", State.READY, offset=1, limit=1) == ["r-high-2"]
    assert listed("default", State.READY, offset=3) == []
    assert all(m.state is State.READY for m in store.list_messages("default", State.READY))


# -- administration --------------------------------------------------------------
def test_cancel_removes_a_ready_delayed_or_waiting_message_but_not_one_in_flight(
    store: Store,
) -> None:
    store.enqueue("default", message("in-flight", Priority.URGENT))
    lease = only(fetch(store, ["default"])).lease
    store.enqueue("default", message("ready"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    for name in ("ready", "delayed", "waiting"):
        assert store.cancel("default", name) is True
        assert store.info("default", name) is None
    assert store.cancel("default", "in-flight") is False
    assert store.cancel("default", "missing") is False
    assert store.counts("default") == QueueCounts(inflight=1)
    assert store.ack(lease) is True


def test_set_priority_reorders_queued_messages(store: Store) -> None:
    store.enqueue("default", message("first", Priority.NORMAL))
    store.enqueue("default", message("second", Priority.NORMAL))
    store.enqueue("default", message("last", Priority.LOW))
    assert store.set_priority("default", "last", Priority.URGENT) is True
    info = store.info("default", "last")
    assert info is not None and info.priority == Priority.URGENT
    assert ids(fetch(store, ["default"], max_count=3)) == ["last", "first", "second"]


def test_set_priority_applies_to_delayed_and_waiting_but_not_in_flight_messages(
    store: Store,
) -> None:
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    store.enqueue("default", message("in-flight"))
    only(fetch(store, ["default"]))
    assert store.set_priority("default", "delayed", 99) is True
    assert store.set_priority("default", "waiting", 98) is True
    assert store.set_priority("default", "in-flight", 97) is False
    assert store.set_priority("default", "missing", 96) is False
    priorities = {
        name: info.priority
        for name in ("delayed", "waiting", "in-flight")
        if (info := store.info("default", name)) is not None
    }
    assert priorities == {"delayed": 99, "waiting": 98, "in-flight": Priority.NORMAL}


@pytest.mark.parametrize("bad", [-1, 256, "high", 2.5, True])
def test_set_priority_refuses_what_is_not_a_priority(store: Store, bad: object) -> None:
    store.enqueue("default", message("a"))
    with pytest.raises(PriorityError):
        store.set_priority("default", "a", bad)  # type: ignore[arg-type]
    info = store.info("default", "a")
    assert info is not None and info.priority == Priority.NORMAL


def test_a_waiting_message_is_held_until_released(store: Store) -> None:
    # Given a message waiting on its dependencies, behind a lower priority one
    store.enqueue("default", message("dependent", Priority.HIGH, waiting=True))
    store.enqueue("default", message("other", Priority.LOW))
    # Then it is not handed out
    assert ids(fetch(store, ["default"], max_count=5)) == ["other"]
    # When the dependency resolver releases it, Then it is ready at its priority
    assert store.release_waiting("default", "dependent") is True
    info = store.info("default", "dependent")
    assert info is not None and info.state is State.READY
    assert ids(fetch(store, ["default"])) == ["dependent"]
    # A message that is not waiting cannot be released
    assert store.release_waiting("default", "dependent") is False
    assert store.release_waiting("default", "missing") is False


def test_a_released_waiting_message_with_a_future_eta_becomes_delayed(store: Store) -> None:
    eta = time.time() + 3600
    store.enqueue("default", message("dependent", eta=eta, waiting=True))
    assert store.release_waiting("default", "dependent") is True
    info = store.info("default", "dependent")
    assert info is not None and info.state is State.DELAYED
    assert fetch(store, ["default"]).deliveries == []


def test_purge_deletes_only_the_given_state_and_says_how_many(store: Store) -> None:
    store.enqueue("default", message("ready-1"))
    store.enqueue("default", message("ready-2"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.bury_payload("default", message("dead"), DeadLetter(DeadReason.FAILED))
    store.enqueue("other", message("elsewhere"))
    assert store.purge("default") == 2  # ready is the default
    assert store.counts("default") == QueueCounts(delayed=1, dead=1)
    assert store.purge("default", State.DEAD) == 1
    assert store.purge("default", State.DEAD) == 0
    assert store.purge("default", State.DELAYED) == 1
    assert store.counts("default") == QueueCounts()
    assert store.counts("other") == QueueCounts(ready=1)


def test_delete_queue_removes_messages_in_every_state_and_nothing_else(store: Store) -> None:
    store.enqueue("doomed", message("in-flight", Priority.URGENT))
    lease = only(fetch(store, ["doomed"])).lease
    store.enqueue("doomed", message("ready"))
    store.enqueue("doomed", message("delayed", eta=time.time() + 3600))
    store.enqueue("doomed", message("waiting", waiting=True))
    store.bury_payload("doomed", message("dead"), DeadLetter(DeadReason.FAILED))
    store.enqueue("kept", message("ready"))
    store.delete_queue("doomed")
    assert store.counts("doomed") == QueueCounts()
    assert store.info("doomed", "ready") is None
    assert store.ack(lease) is False
    assert store.counts("kept") == QueueCounts(ready=1)
    # the queue can be used again afterwards
    store.enqueue("doomed", message("new"))
    assert ids(fetch(store, ["doomed"])) == ["new"]


# -- what a fetch reports ------------------------------------------------------------
def test_messages_of_skipped_task_names_stay_ready(store: Store) -> None:
    # Given an urgent message of a task the consumer must not take now
    store.enqueue("default", message("limited", Priority.URGENT, task_name="tasks.limited"))
    store.enqueue("default", message("free", Priority.LOW, task_name="tasks.free"))
    # When it fetches skipping that task name
    result = fetch(store, ["default"], max_count=5, skip={"tasks.limited"})
    # Then it gets the other message, the skipped one stays ready and is not "more ready"
    assert ids(result) == ["free"]
    assert result.more_ready is False
    assert store.counts("default") == QueueCounts(ready=1, inflight=1)
    # And a fetch without skipping gets it
    assert ids(fetch(store, ["default"])) == ["limited"]


def test_more_ready_says_whether_ready_messages_were_left_behind(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.enqueue("default", message(name))
    assert fetch(store, ["default"], max_count=2).more_ready is True
    assert fetch(store, ["default"], max_count=1).more_ready is False
    store.enqueue("other", message("d"))
    assert fetch(store, ["default"]).more_ready is False
    assert fetch(store, ["default", "other"], max_count=0).more_ready is True


def test_next_due_is_the_earliest_eta_or_lease_expiry_in_the_fetched_queues(
    store: Store,
) -> None:
    # Nothing delayed or in flight: nothing is due
    assert fetch(store, ["default"]).next_due is None
    # A lease taken now is due when it expires
    store.enqueue("default", message("a"))
    before = time.time()
    result = fetch(store, ["default"], lease_seconds=300)
    after = time.time()
    assert result.next_due is not None
    assert before + 300 - CLOCK_SLACK <= result.next_due <= after + 300 + CLOCK_SLACK
    # A delayed message due sooner takes over
    eta = time.time() + 100
    store.enqueue("default", message("b", eta=eta))
    assert fetch(store, ["default"]).next_due == pytest.approx(eta, abs=CLOCK_SLACK)
    # ...but only in the queues that were fetched
    store.enqueue("other", message("c", eta=time.time() + 10))
    assert fetch(store, ["default"]).next_due == pytest.approx(eta, abs=CLOCK_SLACK)


# -- waiting for work -------------------------------------------------------------------
def test_wait_returns_at_once_when_a_message_is_ready(store: Store) -> None:
    store.enqueue("default", message("a"))
    assert timed(lambda: store.wait(["default"], 10)) < 1.0


def test_wait_returns_promptly_when_a_message_is_enqueued_from_another_thread(
    store: Store,
) -> None:
    # Given a consumer thread waiting up to 10 s on an empty queue
    finished = threading.Event()
    elapsed: list[float] = []

    def consumer() -> None:
        elapsed.append(timed(lambda: store.wait(["default"], 10)))
        finished.set()

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    time.sleep(0.2)  # let the consumer block first
    # When a producer enqueues a message
    enqueued_at = time.monotonic()
    store.enqueue("default", message("a"))
    # Then the consumer wakes well before its timeout
    assert finished.wait(3.0), "wait() did not return within 3 s of the enqueue"
    assert time.monotonic() - enqueued_at < 3.0
    assert elapsed[0] < 5.0
    thread.join(5)


def test_wait_returns_by_its_timeout_when_nothing_arrives(store: Store) -> None:
    elapsed = timed(lambda: store.wait(["default"], 0.3))
    assert elapsed < 2.0
    assert timed(lambda: store.wait(["default"], 0)) < 1.0


def test_wait_wakes_when_a_delayed_message_comes_due(store: Store) -> None:
    store.enqueue("default", message("later", eta=time.time() + 0.3))
    assert timed(lambda: store.wait(["default"], 10)) < 3.0


def test_wait_wakes_when_a_lease_expires(store: Store) -> None:
    store.enqueue("default", message("a"))
    fetch(store, ["default"], lease_seconds=0.3)
    assert timed(lambda: store.wait(["default"], 10)) < 3.0


# -- bindings --------------------------------------------------------------------------
def test_bindings_are_shared_until_unbound(store: Store) -> None:
    emails = Binding("celery.fanout", "", "", "emails")
    reports = Binding("celery.fanout", "", "", "reports")
    elsewhere = Binding("direct", "key", "key", "emails")
    store.bind(emails)
    store.bind(reports)
    store.bind(reports)  # binding twice records it once
    store.bind(elsewhere)
    assert sorted(store.bindings("celery.fanout"), key=lambda b: b.queue) == [emails, reports]
    store.unbind(emails)
    assert store.bindings("celery.fanout") == [reports]
    assert store.bindings("unknown") == []
    store.unbind(emails)  # unbinding what is not bound is harmless


def test_a_binding_with_an_expiry_vanishes_unless_refreshed(store: Store) -> None:
    permanent = Binding("celery.pidbox", "", "", "permanent")
    fading = Binding("celery.pidbox", "", "", "fading")
    refreshed = Binding("celery.pidbox", "", "", "refreshed")
    store.bind(permanent)
    store.bind(fading, expires_seconds=0.3)
    store.bind(refreshed, expires_seconds=0.3)
    assert {b.queue for b in store.bindings("celery.pidbox")} == {
        "permanent",
        "fading",
        "refreshed",
    }
    store.bind(refreshed, expires_seconds=LONG_LEASE)
    assert eventually(
        lambda: {b.queue for b in store.bindings("celery.pidbox")} == {"permanent", "refreshed"}
    )


# -- workers ---------------------------------------------------------------------------
def test_workers_are_listed_while_their_heartbeats_last(store: Store) -> None:
    before = time.time()
    store.heartbeat("worker-1@host", LONG_LEASE, {"pid": 101, "queues": ["default"]})
    store.heartbeat("worker-2@host", 0.3, {})
    beats = {beat.worker: beat for beat in store.workers()}
    assert set(beats) == {"worker-1@host", "worker-2@host"}
    assert beats["worker-1@host"].info == {"pid": 101, "queues": ["default"]}
    assert beats["worker-1@host"].seen_at == pytest.approx(before, abs=1.0)
    # A worker that stops beating drops out; one that beats again is updated
    store.heartbeat("worker-1@host", LONG_LEASE, {"pid": 102})
    assert eventually(lambda: [b.worker for b in store.workers()] == ["worker-1@host"])
    assert store.workers()[0].info == {"pid": 102}


# -- concurrency ---------------------------------------------------------------------------
def test_consumer_threads_sharing_one_store_get_every_message_exactly_once(
    store: Store,
) -> None:
    total = 200
    for index in range(total):
        store.enqueue("default", message(f"m{index}", index % 4))
    taken: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def consume(slot: int) -> None:
        try:
            while True:
                result = fetch(store, ["default"], max_count=3, consumer=f"thread-{slot}")
                for delivery in result.deliveries:
                    taken[slot].append(delivery.lease.message_id)
                    assert store.ack(delivery.lease)
                if not result.deliveries:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    everything = [name for names in taken for name in names]
    assert sorted(everything) == sorted(f"m{index}" for index in range(total))
    assert store.counts("default") == QueueCounts()


CONSUMER_PROCESS = r"""
import json, sys
from tq_kombu.store import open_store

url, consumer = sys.argv[1], sys.argv[2]
store = open_store(url)
store.ping()
print("ready", flush=True)
sys.stdin.readline()  # start together with the other consumers
taken = []
while True:
    result = store.fetch(["jobs", "chores"], 4, consumer, 60.0, 5)
    for delivery in result.deliveries:
        taken.append(delivery.lease.message_id)
        if not store.ack(delivery.lease):
            sys.exit("ack refused for " + delivery.lease.message_id)
    if not result.deliveries and not result.more_ready:
        break
store.close()
print(json.dumps(taken), flush=True)
"""


def test_consumer_processes_fetching_concurrently_get_every_message_exactly_once(
    store_url: str,
) -> None:
    # Given 300 messages over two queues and three priorities (stores shared by processes)
    store = open_store(store_url)
    total = 300
    for index in range(total):
        store.enqueue("jobs" if index % 3 else "chores", message(f"m{index}", index % 3))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # When three consumer processes fetch and ack concurrently
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER_PROCESS, store_url, f"process-{slot}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for slot in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip() == "ready", process.communicate(timeout=10)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    # Then every message was delivered exactly once, to one of them
    taken: list[str] = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        taken.extend(json.loads(out.strip().splitlines()[-1]))
    assert len(taken) == total
    assert sorted(taken) == sorted(f"m{index}" for index in range(total))
    assert store.counts("jobs") == QueueCounts()
    assert store.counts("chores") == QueueCounts()
    store.close()


# -- dead letters: records, replay, retention ------------------------------------------


def test_a_buried_message_keeps_its_failure_record_hostname_and_times(store: Store) -> None:
    store.enqueue("default", message("m"))
    [delivery] = fetch(store, ["default"]).deliveries
    dead = DeadLetter(DeadReason.FAILED, "ValueError: boom", failure=b"\x00sealed", hostname="w1")
    assert store.bury(delivery.lease, dead) is True
    info = store.info("default", "m")
    assert info is not None and info.state == State.DEAD
    assert (info.dead_reason, info.dead_detail, info.hostname) == (
        "failed",
        "ValueError: boom",
        "w1",
    )
    assert info.created_at is not None and info.dead_at is not None
    assert info.created_at <= info.dead_at
    assert store.dead_failure("default", "m") == b"\x00sealed"


def test_replay_returns_a_dead_message_to_ready_with_its_delivery_count_reset(store: Store) -> None:
    store.enqueue("default", message("m", Priority.HIGH))
    [delivery] = fetch(store, ["default"]).deliveries
    store.bury(delivery.lease, DeadLetter(DeadReason.REJECTED))
    assert store.replay("default", "m") is True
    assert store.replay("default", "m") is False  # no longer dead
    assert store.counts("default") == QueueCounts(ready=1)
    [again] = fetch(store, ["default"]).deliveries
    assert (again.lease.message_id, again.priority, again.delivery_count) == ("m", Priority.HIGH, 1)
    assert again.payload == b"payload of m"


def test_replay_can_move_a_message_to_another_queue_at_a_new_priority(store: Store) -> None:
    store.bury_payload("default", message("m", Priority.LOW), DeadLetter(DeadReason.FAILED))
    assert store.replay("default", "m", to_queue="elsewhere", priority=Priority.URGENT) is True
    assert store.counts("default") == QueueCounts()
    [delivery] = fetch(store, ["elsewhere"]).deliveries
    assert (delivery.lease.message_id, delivery.priority) == ("m", Priority.URGENT)


def test_retention_keeps_at_most_the_newest_dead_messages(store: Store) -> None:
    store.retention = RetentionPolicy(ttl_seconds=3600, max_per_queue=3)
    for i in range(5):
        store.bury_payload("default", message(f"d{i}"), DeadLetter(DeadReason.FAILED))
    dead = [m.message_id for m in store.list_messages("default", State.DEAD)]
    assert dead == ["d2", "d3", "d4"]


def test_retention_drops_dead_messages_older_than_the_ttl(store: Store) -> None:
    store.bury_payload("default", message("old"), DeadLetter(DeadReason.FAILED))
    time.sleep(0.3)
    store.bury_payload("default", message("new"), DeadLetter(DeadReason.FAILED))
    dropped = store.trim_dead("default", RetentionPolicy(ttl_seconds=0.2, max_per_queue=100))
    assert dropped == 1
    assert [m.message_id for m in store.list_messages("default", State.DEAD)] == ["new"]


def test_ready_levels_count_ready_messages_per_priority(store: Store) -> None:
    before = time.time()
    for i, level in enumerate([Priority.LOW, Priority.HIGH, Priority.HIGH, Priority.URGENT]):
        store.enqueue("default", message(f"m{i}", level))
    levels = store.ready_levels("default")
    assert {p: n for p, (n, _) in levels.items()} == {1: 1, 10: 2, 15: 1}
    for _, created in levels.values():
        assert created is not None and before - 1 <= created <= time.time() + 1


def test_ready_levels_report_the_oldest_arrival_even_when_it_was_requeued(store: Store) -> None:
    store.enqueue("default", message("first"))
    time.sleep(0.05)
    store.enqueue("default", message("second"))
    [delivery] = fetch(store, ["default"]).deliveries
    assert store.requeue(delivery.lease)  # "first" now waits behind "second"
    first = store.info("default", "first")
    assert first is not None and first.created_at is not None
    [(count, oldest)] = store.ready_levels("default").values()
    assert count == 2 and oldest == pytest.approx(first.created_at, abs=0.002)


# -- dead letters without a lease (bury_payload), queue discovery ----------------------


def test_bury_payload_sets_a_message_in_flight_aside_in_place(store: Store) -> None:
    # Given a message delivered twice (its first lease expired) and held in flight
    store.enqueue("default", message("m", Priority.HIGH))
    only(fetch(store, ["default"], lease_seconds=0.05))
    delivery = only(fetch_within(store, ["default"]))
    first_seen = store.info("default", "m").created_at  # type: ignore[union-attr]
    # When it is set aside by id, with another payload offered
    dead = DeadLetter(DeadReason.FAILED, "ValueError", b"sealed", "w1@host", attempts=3)
    assert store.bury_payload("default", message("m", payload=b"rebuilt"), dead) == State.INFLIGHT
    # Then it is dead with the original payload, first-seen time and delivery count
    info = store.info("default", "m")
    assert info is not None and info.state == State.DEAD
    assert (info.dead_reason, info.dead_detail, info.hostname, info.attempts) == (
        "failed",
        "ValueError",
        "w1@host",
        3,
    )
    assert (info.delivery_count, info.priority) == (2, Priority.HIGH)
    assert info.created_at == pytest.approx(first_seen)
    assert store.payload("default", "m") == b"payload of m"
    assert store.dead_failure("default", "m") == b"sealed"
    assert store.counts("default") == QueueCounts(dead=1)
    # And the consumer's lease no longer settles anything, nor renews
    assert store.ack(delivery.lease) is False
    assert store.renew([delivery.lease], LONG_LEASE) == [delivery.lease]
    assert store.counts("default") == QueueCounts(dead=1)


def test_bury_payload_stores_a_message_the_store_no_longer_holds(store: Store) -> None:
    # Given a message delivered and acknowledged (an early ack), so gone from the store
    store.enqueue("default", message("m"))
    delivery = only(fetch(store, ["default"]))
    assert delivery.created_at is not None
    assert store.ack(delivery.lease)
    # When it is set aside by id with the payload rebuilt from the task
    dead = DeadLetter(
        DeadReason.MAX_RETRIES_EXCEEDED,
        "ValueError",
        b"sealed",
        "w1@host",
        attempts=4,
        delivery_count=delivery.delivery_count,
        first_seen=delivery.created_at,
    )
    rebuilt = message("m", Priority.URGENT, payload=b"rebuilt", task_name="tasks.t", task_id="t-1")
    assert store.bury_payload("default", rebuilt, dead) is None
    # Then the rebuilt message is dead with the record, the count and the first-seen time
    info = store.info("default", "m")
    assert info is not None and info.state == State.DEAD
    assert (info.task_name, info.task_id, info.priority) == ("tasks.t", "t-1", Priority.URGENT)
    assert (info.dead_reason, info.attempts, info.delivery_count) == ("max_retries_exceeded", 4, 1)
    assert info.created_at == pytest.approx(delivery.created_at, abs=CLOCK_SLACK)
    assert info.dead_at is not None and info.dead_at >= info.created_at - CLOCK_SLACK
    assert store.payload("default", "m") == b"rebuilt"
    assert store.dead_failure("default", "m") == b"sealed"


def test_bury_payload_of_a_ready_message_keeps_it_from_being_handed_out(store: Store) -> None:
    store.enqueue("default", message("m"))
    store.enqueue("default", message("later", eta=time.time() + 600))
    failed, expired = DeadLetter(DeadReason.FAILED), DeadLetter(DeadReason.EXPIRED)
    assert store.bury_payload("default", message("m"), failed) == State.READY
    assert store.bury_payload("default", message("later"), expired) == State.DELAYED
    assert fetch(store, ["default"]).deliveries == []
    assert store.counts("default") == QueueCounts(dead=2)


def test_bury_payload_of_a_dead_message_changes_nothing(store: Store) -> None:
    store.enqueue("default", message("m"))
    store.bury(only(fetch(store, ["default"])).lease, DeadLetter(DeadReason.REJECTED, "first"))
    again = DeadLetter(DeadReason.FAILED, "second", b"sealed")
    assert store.bury_payload("default", message("m", payload=b"other"), again) == State.DEAD
    info = store.info("default", "m")
    assert info is not None and (info.dead_reason, info.dead_detail) == ("rejected", "first")
    assert store.payload("default", "m") == b"payload of m"
    assert store.dead_failure("default", "m") == b""


def test_retention_applies_whichever_way_a_message_dies(store: Store) -> None:
    # Given a queue keeping at most two dead messages
    store.retention = RetentionPolicy(ttl_seconds=3600, max_per_queue=2)
    for i in range(4):
        store.enqueue("default", message(f"m{i}"))
    # When one is buried by lease, one by id, and two exceed max_deliveries
    store.bury(only(fetch(store, ["default"])).lease, DeadLetter(DeadReason.REJECTED))
    store.bury_payload("default", message("m1"), DeadLetter(DeadReason.FAILED))
    for delivery in fetch(store, ["default"], max_count=2).deliveries:
        assert store.requeue(delivery.lease)  # the delivery stays counted
    assert fetch(store, ["default"], max_count=10, max_deliveries=1).deliveries == []
    # Then only the two newest dead messages are kept
    assert store.counts("default") == QueueCounts(dead=2)
    assert [m.message_id for m in store.list_messages("default", State.DEAD)] == ["m2", "m3"]


def test_a_buried_message_records_its_attempts_and_replay_drops_the_record(store: Store) -> None:
    store.enqueue("default", message("m"))
    dead = DeadLetter(DeadReason.FAILED, "boom", b"sealed", "w1", attempts=2)
    store.bury(only(fetch(store, ["default"])).lease, dead)
    assert store.info("default", "m").attempts == 2  # type: ignore[union-attr]
    assert store.replay("default", "m")
    info = store.info("default", "m")
    assert info is not None and info.state == State.READY
    assert (info.dead_reason, info.dead_detail, info.attempts, info.hostname) == (
        None,
        None,
        None,
        None,
    )
    assert info.dead_at is None and store.dead_failure("default", "m") == b""


def test_replay_into_a_queue_already_holding_that_id_changes_nothing(store: Store) -> None:
    store.bury_payload("default", message("m"), DeadLetter(DeadReason.FAILED))
    store.enqueue("other", message("m", payload=b"another message with that id"))
    assert store.replay("default", "m", to_queue="other") is False
    assert store.counts("default") == QueueCounts(dead=1)
    assert store.counts("other") == QueueCounts(ready=1)
    assert store.payload("other", "m") == b"another message with that id"


def test_a_delivery_carries_the_time_the_store_first_took_the_message(store: Store) -> None:
    store.enqueue("default", message("m"))
    info = store.info("default", "m")
    delivery = only(fetch(store, ["default"]))
    assert info is not None and info.created_at is not None
    assert delivery.created_at == pytest.approx(info.created_at, abs=CLOCK_SLACK)


def test_queues_lists_every_queue_holding_a_message_in_any_state(store: Store) -> None:
    assert store.queues() == []
    store.enqueue("emails", message("ready"))
    store.enqueue("reports", message("later", eta=time.time() + 600))
    store.enqueue("waiting-room", message("w", waiting=True))
    store.bury_payload("graveyard", message("d"), DeadLetter(DeadReason.FAILED))
    store.enqueue("chores", message("c"))
    in_flight = only(fetch(store, ["chores"]))
    assert store.queues() == ["chores", "emails", "graveyard", "reports", "waiting-room"]
    # A queue left empty is no longer listed
    assert store.ack(in_flight.lease)
    assert store.cancel("emails", "ready")
    assert store.queues() == ["graveyard", "reports", "waiting-room"]


def test_replay_many_replays_each_dead_message_once_in_batches(store: Store) -> None:
    # Given 520 dead messages (more than one batch) and one ready message
    for i in range(520):
        store.bury_payload("default", message(f"d{i:03}"), DeadLetter(DeadReason.FAILED))
    store.enqueue("default", message("ready"))
    # When all of them, an unknown id, a repeated id and the ready one are replayed
    wanted = [f"d{i:03}" for i in range(520)] + ["d000", "no-such-id", "ready"]
    assert store.replay_many("default", wanted, priority=Priority.HIGH) == 520
    # Then each dead message is ready once, at the new priority
    assert store.counts("default") == QueueCounts(ready=521)
    assert {m.priority for m in store.list_messages("default", State.READY, limit=600)} == {
        Priority.HIGH,
        Priority.NORMAL,
    }
    assert store.replay_many("default", ["d000"]) == 0
