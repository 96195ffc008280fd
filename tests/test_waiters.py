"""The waiter a store offers an event loop (tq_kombu.store.waiting): its file descriptor
turns readable when work may be ready in the armed queues, or when the wait times out,
and never before; a closed waiter stops.

Every wait below is bounded; the lower bounds make sure a waiter that returns at once
(or never blocks) fails.
"""

from __future__ import annotations

import ast
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tq_kombu.eventloop
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import NewMessage
from tq_kombu.store.sqlite import SQLiteStore
from tq_kombu.store.waiting import ThreadWaiter, Waiter

from .workers import wait_for


@pytest.fixture
def producer(store_url: str) -> Iterator[Store]:
    """A second store object on the same data (another connection, as another process)."""
    other = open_store(store_url)
    yield other
    other.close()


@pytest.fixture
def waiter(store: Store) -> Iterator[Waiter]:
    opened = store.new_waiter()
    yield opened
    opened.close()


def message(message_id: str, eta: float | None = None) -> NewMessage:
    return NewMessage(message_id=message_id, payload=b"x", priority=5, eta=eta)


def readable(waiter: Waiter, within_seconds: float) -> bool:
    fd = waiter.fileno()
    assert fd is not None, "an armed waiter has a descriptor"
    ready, _, _ = select.select([fd], [], [], within_seconds)
    return bool(ready)


def seconds_until_readable(waiter: Waiter, bound_seconds: float) -> float:
    started = time.monotonic()
    assert readable(waiter, bound_seconds), f"the waiter did not wake within {bound_seconds} s"
    return time.monotonic() - started


def test_a_waiter_wakes_when_a_message_is_published(
    store: Store, producer: Store, waiter: Waiter
) -> None:
    # Given a waiter armed on an empty queue with a long timeout
    waiter.arm(["q"], 10)
    # Then it stays quiet while nothing happens
    assert not readable(waiter, 0.3)
    # When another connection publishes into the queue
    producer.enqueue("q", message("m1"))
    # Then the waiter wakes promptly, and finishing it ends the wait
    assert seconds_until_readable(waiter, 2) < 1
    assert waiter.finish()
    assert not waiter.armed


def test_a_waiter_wakes_at_once_when_work_is_already_there(
    store: Store, producer: Store, waiter: Waiter
) -> None:
    producer.enqueue("q", message("m1"))
    waiter.arm(["q"], 10)
    assert seconds_until_readable(waiter, 2) < 1


def test_a_waiter_ignores_publishes_into_other_queues(
    store: Store, producer: Store, waiter: Waiter
) -> None:
    waiter.arm(["q"], 10)
    producer.enqueue("elsewhere", message("m1"))
    assert not readable(waiter, 0.5)


def test_a_waiter_wakes_when_its_timeout_passes(store: Store, waiter: Waiter) -> None:
    waiter.arm(["q"], 0.4)
    elapsed = seconds_until_readable(waiter, 3)
    assert elapsed >= 0.3
    assert waiter.finish()


def test_a_finished_waiter_can_be_armed_again(
    store: Store, producer: Store, waiter: Waiter
) -> None:
    waiter.arm(["q"], 0.2)
    seconds_until_readable(waiter, 3)
    assert waiter.finish()
    # When armed again on a queue that then receives a message
    waiter.arm(["q"], 10)
    assert not readable(waiter, 0.2)
    producer.enqueue("q", message("m1"))
    assert seconds_until_readable(waiter, 2) < 1


def test_a_closed_waiter_gives_up_its_descriptor(store: Store, waiter: Waiter) -> None:
    waiter.arm(["q"], 10)
    waiter.close()
    assert waiter.fileno() is None
    assert not waiter.armed


# -- the SQLite waiter: a thread that also watches the clock --------------------------


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SQLiteStore]:
    opened = open_store(sqlite_url)
    assert isinstance(opened, SQLiteStore)
    yield opened
    opened.close()


def test_the_sqlite_waiter_wakes_when_a_delayed_message_comes_due(
    sqlite_store: SQLiteStore,
) -> None:
    # Given a message delayed by 0.8 s, and a waiter armed with a long timeout
    due = time.time() + 0.8
    sqlite_store.enqueue("q", message("m1", eta=due))
    waiter = sqlite_store.new_waiter()
    try:
        waiter.arm(["q"], 10)
        # Then it wakes when the message comes due, not before
        seconds_until_readable(waiter, 3)
        assert -0.05 <= time.time() - due < 1
    finally:
        waiter.close()


def test_the_sqlite_waiter_wakes_when_a_lease_expires(sqlite_store: SQLiteStore) -> None:
    # Given a message fetched with a 0.8 s lease that nobody renews
    sqlite_store.enqueue("q", message("m1"))
    fetched_at = time.time()
    assert sqlite_store.fetch(["q"], 1, "c", 0.8, 5).deliveries
    waiter = sqlite_store.new_waiter()
    try:
        waiter.arm(["q"], 10)
        # Then the waiter wakes when the lease expires (the next fetch reclaims it)
        seconds_until_readable(waiter, 3)
        assert -0.05 <= time.time() - (fetched_at + 0.8) < 1
    finally:
        waiter.close()


def test_the_sqlite_waiter_thread_stops_when_closed_mid_wait(sqlite_store: SQLiteStore) -> None:
    waiter = sqlite_store.new_waiter()
    assert isinstance(waiter, ThreadWaiter)
    waiter.arm(["q"], 30)
    wait_for(lambda: waiter.alive, 2, "the waiting thread to start")
    waiter.close()
    wait_for(lambda: not waiter.alive, 2, "the waiting thread to stop")


def test_the_sqlite_wait_blocks_until_its_timeout_on_an_empty_queue(
    sqlite_store: SQLiteStore,
) -> None:
    started = time.monotonic()
    sqlite_store.wait(["q"], 0.4)
    assert 0.35 <= time.monotonic() - started < 2


def test_the_sqlite_wait_looks_at_the_queues_only_when_the_database_changed(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an idle database, a wait of 0.5 s polls every 50 ms
    looks: list[list[str]] = []
    real = sqlite_store._work_state

    def counted(queues: list[str]) -> tuple[bool, float | None]:
        looks.append(queues)
        return real(queues)

    monkeypatch.setattr(sqlite_store, "_work_state", counted)
    sqlite_store.wait(["q"], 0.5)
    # Then it queried the queues once, and only checked PRAGMA data_version after
    assert len(looks) == 1


def test_the_event_loop_consumer_depends_on_the_waiter_protocol_only() -> None:
    # eventloop.py knows stores only through their waiter (no RedisStore, no transport),
    # so that a new store plugs in by offering new_waiter() and nothing else
    tree = ast.parse(Path(tq_kombu.eventloop.__file__).read_text())
    local_imports = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module
    }
    assert local_imports == {"store.waiting"}
