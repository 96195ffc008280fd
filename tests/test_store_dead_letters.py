"""Dead letters in the Store contract: burial with and without a lease, failure records,
replay and retention, over every store."""

from __future__ import annotations

import time

import pytest

from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    QueueCounts,
    RetentionPolicy,
    State,
)

from .store_contract import (
    CLOCK_SLACK,
    LONG_LEASE,
    fetch,
    fetch_within,
    message,
    only,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


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
