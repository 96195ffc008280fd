"""Finding a message by its Celery task id: an index lookup on every store (Inspection)."""

from __future__ import annotations

import time

import pytest

from tq_kombu.store import Store
from tq_kombu.store.base import DeadLetter, DeadReason, NewMessage, RetentionPolicy, State

LONG_LEASE = 60.0


@pytest.fixture
def store(contract_store: Store) -> Store:
    return contract_store


def message(message_id: str, task_id: str, *, eta: float | None = None) -> NewMessage:
    return NewMessage(message_id, b"payload", 5, eta=eta, task_name="tasks.t", task_id=task_id)


def test_a_queued_message_is_found_by_its_task_id(store: Store) -> None:
    store.enqueue("default", message("m1", "task-1"))
    store.enqueue("default", message("m2", "task-2", eta=time.time() + 60))
    ready, delayed = store.find_task("default", "task-1"), store.find_task("default", "task-2")
    assert ready is not None and (ready.message_id, ready.state) == ("m1", State.READY)
    assert delayed is not None and (delayed.message_id, delayed.state) == ("m2", State.DELAYED)
    assert ready.task_id == "task-1"


def test_a_task_is_found_in_flight_and_dead_and_no_longer_once_acknowledged(
    store: Store,
) -> None:
    store.enqueue("default", message("m1", "task-1"))
    store.enqueue("default", message("m2", "task-2"))
    first, second = store.fetch(["default"], 2, "c", LONG_LEASE, 5).deliveries
    found = store.find_task("default", "task-1")
    assert found is not None and found.state == State.INFLIGHT
    assert store.bury(second.lease, DeadLetter(DeadReason.FAILED, "boom"))
    dead = store.find_task("default", "task-2")
    assert dead is not None and dead.state == State.DEAD
    assert store.ack(first.lease)
    assert store.find_task("default", "task-1") is None


def test_an_unknown_task_id_or_another_queue_finds_nothing(store: Store) -> None:
    store.enqueue("default", message("m1", "task-1"))
    assert store.find_task("default", "task-404") is None
    assert store.find_task("other", "task-1") is None
    assert store.find_task("default", "") is None


def test_a_task_sent_again_is_found_at_its_newest_message(store: Store) -> None:
    # Given a task whose first message is in flight when it is sent again (a retry)
    store.enqueue("default", message("m1", "task-1"))
    [delivery] = store.fetch(["default"], 1, "c", LONG_LEASE, 5).deliveries
    store.enqueue("default", message("m2", "task-1"))
    # When the first message is acknowledged
    assert store.ack(delivery.lease)
    # Then the task is found at the message sent again
    found = store.find_task("default", "task-1")
    assert found is not None and found.message_id == "m2"


def test_a_task_is_no_longer_found_once_cancelled_purged_or_trimmed(store: Store) -> None:
    store.enqueue("default", message("m1", "task-1"))
    store.enqueue("default", message("m2", "task-2", eta=time.time() + 60))
    store.enqueue("default", message("m3", "task-3"))
    assert store.cancel("default", "m1")
    assert store.purge("default", State.DELAYED) == 1
    [delivery] = store.fetch(["default"], 1, "c", LONG_LEASE, 5).deliveries
    assert store.bury(delivery.lease, DeadLetter(DeadReason.FAILED, "boom"))
    assert store.trim_dead("default", RetentionPolicy(max_per_queue=0)) == 1
    for task_id in ("task-1", "task-2", "task-3"):
        assert store.find_task("default", task_id) is None


def test_a_replayed_task_is_found_in_the_queue_it_was_replayed_to(store: Store) -> None:
    store.enqueue("default", message("m1", "task-1"))
    [delivery] = store.fetch(["default"], 1, "c", LONG_LEASE, 5).deliveries
    assert store.bury(delivery.lease, DeadLetter(DeadReason.FAILED, "boom"))
    assert store.replay("default", "m1", to_queue="retry")
    assert store.find_task("default", "task-1") is None
    found = store.find_task("retry", "task-1")
    assert found is not None and (found.message_id, found.state) == ("m1", State.READY)
