"""Leases and settling in the Store contract: expiry, renewal, ack, requeue, release,
max_deliveries, and consumers fetching concurrently, over every store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tq_kombu.priority import Priority
from tq_kombu.store import Store, open_store
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    Lease,
    QueueCounts,
    State,
)

from .store_contract import (
    LONG_LEASE,
    PROJECT_ROOT,
    fetch,
    fetch_within,
    ids,
    message,
    only,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


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


def test_a_message_given_back_unstarted_is_ready_at_its_priority_and_delivery_count(
    store: Store,
) -> None:
    # Given a high priority message delivered once and requeued (count 1), then fetched again
    store.enqueue("default", message("a", Priority.HIGH))
    store.enqueue("default", message("low", Priority.LOW))
    assert store.requeue(only(fetch(store, ["default"])).lease)
    held = only(fetch(store, ["default"]))
    assert held.delivery_count == 2
    # When it is given back without having started (prefetched at a warm shutdown)
    assert store.give_back(held.lease) is True
    assert store.give_back(held.lease) is False  # once only
    # Then it is ready at its priority, with the count it had before that fetch
    info = store.info("default", "a")
    assert info is not None and info.state is State.READY
    assert info.priority == Priority.HIGH and info.delivery_count == 1
    again = fetch(store, ["default"], max_count=2)
    assert ids(again) == ["a", "low"]
    assert again.deliveries[0].delivery_count == 2


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
