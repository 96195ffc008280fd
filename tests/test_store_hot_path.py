"""The hot path of the Store contract: publish, order by priority, delays, what a fetch
reports and waiting for work, over every store."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    FetchResult,
    QueueCounts,
)

from .store_contract import (
    CLOCK_SLACK,
    eventually,
    fetch,
    fetch_within,
    ids,
    message,
    timed,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


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
    assert not finished.is_set(), "wait() returned before anything was enqueued"
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
    assert 0.3 - CLOCK_SLACK <= elapsed < 2.0  # it did wait, and not much longer
    assert timed(lambda: store.wait(["default"], 0)) < 1.0


def test_wait_wakes_when_a_delayed_message_comes_due(store: Store) -> None:
    store.enqueue("default", message("later", eta=time.time() + 0.3))
    # it does not sleep through the due time (it may wake earlier: see HotPath.wait)
    assert timed(lambda: store.wait(["default"], 10)) < 3.0


def test_wait_wakes_when_a_lease_expires(store: Store) -> None:
    store.enqueue("default", message("a"))
    fetch(store, ["default"], lease_seconds=0.3)
    # it does not sleep through the expiry (it may wake earlier: see HotPath.wait)
    assert timed(lambda: store.wait(["default"], 10)) < 3.0
