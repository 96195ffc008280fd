"""Task outcomes for the dependency graph, sent by each worker process's outbox: batched
for early-acknowledged tasks, kept and retried while the store is away, flushed before a
process exits. The Redis server here is the test's own, stopped and started again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tq_celery_ext.completions import CompletionOutbox
from tq_kombu.store import Store, open_store
from tq_kombu.store.model import NewMessage, State

from .conftest import RedisServer
from .store_contract import eventually


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    owned = RedisServer(tmp_path / "redis", appendonly=True)
    owned.start()
    yield owned
    owned.stop()


@pytest.fixture
def store(server: RedisServer) -> Iterator[Store]:
    opened = open_store(server.url)
    yield opened
    opened.close()


def child_of(parent: str, name: str) -> NewMessage:
    return NewMessage(f"m-{name}", b"payload", 5, task_id=name, depends_on=(parent,))


def state(store: Store, name: str) -> State | None:
    info = store.info("default", f"m-{name}")
    return None if info is None else info.state


def test_outcomes_of_early_acked_tasks_are_sent_in_the_background(store: Store) -> None:
    # Given 200 children waiting on 200 parents
    for n in range(200):
        store.enqueue("default", child_of(f"p{n}", f"c{n}"))
    outbox = CompletionOutbox(lambda: store)
    # When each parent's success goes into the outbox without waiting
    for n in range(200):
        outbox.record(f"p{n}", True)
    # Then every child is released once the outbox is flushed
    assert outbox.flush(10)
    assert outbox.pending() == 0
    assert store.counts("default").ready == 200


def test_an_outcome_the_store_cannot_take_now_is_recorded_when_it_is_back(
    server: RedisServer, store: Store
) -> None:
    store.enqueue("default", child_of("early", "c1"))
    store.enqueue("default", child_of("late", "c2"))
    store.enqueue("default", child_of("failed", "c3"))
    outbox = CompletionOutbox(lambda: store)
    # Given the store is down
    server.stop()
    # When an early-acked, a late-acked and a failed task record their outcomes
    outbox.record("early", True)
    outbox.record("late", True, wait=True)  # does not raise: kept for later
    outbox.record("failed", False, "boom", wait=True)
    assert not outbox.flush(0.5)
    assert outbox.pending() == 3
    # Then, once the store is back, all three are recorded
    server.start()
    assert outbox.flush(15)
    assert eventually(lambda: state(store, "c1") == State.READY)
    assert state(store, "c2") == State.READY
    assert state(store, "c3") == State.DEAD


def test_a_late_acked_outcome_is_recorded_before_record_returns(store: Store) -> None:
    store.enqueue("default", child_of("p", "c"))
    outbox = CompletionOutbox(lambda: store)
    outbox.record("p", True, wait=True)
    assert state(store, "c") == State.READY
    assert outbox.pending() == 0


def test_without_a_tq_broker_outcomes_are_dropped_quietly() -> None:
    outbox = CompletionOutbox(lambda: None)
    outbox.record("p", True)
    outbox.record("q", True, wait=True)
    assert outbox.flush(2)


def test_a_store_without_dependents_gets_no_success_records(store: Store) -> None:
    # Given a store that never held a message with parents
    outbox = CompletionOutbox(lambda: store)
    # When tasks succeed
    for n in range(100):
        outbox.record_success(f"t{n}")
    # Then nothing is recorded for them
    assert outbox.flush(5)
    assert store.dependency_info("t0") is None and store.dependency_info("t99") is None


def test_a_child_published_just_after_its_parent_succeeded_is_still_released(
    store: Store,
) -> None:
    # Given a parent that succeeded while the store had no dependents
    outbox = CompletionOutbox(lambda: store)
    outbox.record_success("parent")
    assert outbox.flush(5)
    assert store.dependency_info("parent") is None
    # When its first child is published a moment later
    store.enqueue("default", child_of("parent", "child"))
    assert state(store, "child") == State.WAITING
    # Then the worker learns that the store has dependents and records the success
    assert eventually(lambda: state(store, "child") == State.READY, seconds=10)
    # And from then on every success is recorded
    store.enqueue("default", child_of("second", "child2"))
    outbox.record_success("second", wait=True)
    assert state(store, "child2") == State.READY
