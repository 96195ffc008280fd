"""The Store contract for what Celery's control plane needs, over every store: taking
messages without a lease (no-ack consumers), message time to live, and queues that
vanish once unused (x-expires, auto_delete). Times are short; every wait is bounded."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tq_kombu.store import Store
from tq_kombu.store.base import (
    Binding,
    DeadReason,
    FetchResult,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    State,
)
from tq_kombu.store.sqlite import SCHEMA_VERSION, SQLiteStore


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


LONG_LEASE = 60.0


def message(message_id: str, priority: int = 5, **kwargs: object) -> NewMessage:
    return NewMessage(
        message_id,
        f"payload of {message_id}".encode(),
        priority,
        **kwargs,  # type: ignore[arg-type]
    )


def fetch(store: Store, queues: list[str], max_count: int = 10) -> FetchResult:
    return store.fetch(queues, max_count, "consumer-1", LONG_LEASE, 5)


def ids(result: FetchResult) -> list[str]:
    return [d.lease.message_id for d in result.deliveries]


def eventually(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# -- take (no-ack consumers) -----------------------------------------------------


def test_take_hands_out_the_most_urgent_messages_and_removes_them(store: Store) -> None:
    store.enqueue("q", message("low", 1))
    store.enqueue("q", message("high", 10))
    store.enqueue("q", message("normal", 5))
    taken = store.take(["q"], 2)
    assert ids(taken) == ["high", "normal"]
    assert taken.more_ready
    assert [d.payload for d in taken.deliveries] == [b"payload of high", b"payload of normal"]
    # Then they are gone: not in flight, nothing to renew, ack or redeliver
    assert store.counts("q") == QueueCounts(ready=1)
    assert store.info("q", "high") is None
    assert ids(store.take(["q"], 5)) == ["low"]
    assert store.counts("q") == QueueCounts()


def test_a_taken_delivery_carries_no_lease_token_and_counts_its_delivery(store: Store) -> None:
    store.enqueue("q", message("m"))
    delivery = store.take(["q"], 1).deliveries[0]
    assert delivery.lease.token == ""
    assert delivery.lease.queue == "q"
    assert delivery.delivery_count == 1
    assert delivery.created_at is not None


def test_take_is_strict_by_priority_across_queues_and_promotes_due_messages(store: Store) -> None:
    store.enqueue("a", message("a-low", 1))
    store.enqueue("b", message("b-high", 10))
    store.enqueue("b", message("b-due", 15, eta=time.time() - 1))
    assert ids(store.take(["a", "b"], 3)) == ["b-due", "b-high", "a-low"]


def test_a_message_taken_by_one_consumer_is_never_taken_or_fetched_by_another(
    store: Store,
) -> None:
    for i in range(20):
        store.enqueue("q", message(f"m{i}"))
    seen = ids(store.take(["q"], 7)) + ids(fetch(store, ["q"], 6)) + ids(store.take(["q"], 20))
    assert sorted(seen) == sorted(f"m{i}" for i in range(20))


def test_take_of_empty_or_no_queues_returns_nothing(store: Store) -> None:
    assert store.take([], 5) == FetchResult([], False, None)
    assert store.take(["nothing-here"], 5).deliveries == []


# -- message time to live --------------------------------------------------------


def test_a_message_past_its_ttl_in_a_task_queue_is_set_aside_as_dead_expired(
    store: Store,
) -> None:
    # Given a message with a 0.2 s time to live in an ordinary queue
    store.enqueue("tasks", message("old", ttl_seconds=0.2))
    store.enqueue("tasks", message("fresh"))
    time.sleep(0.3)  # the time to live must run out
    # Then it is never handed out, and is kept as a dead letter with reason expired
    assert ids(fetch(store, ["tasks"])) == ["fresh"]
    info = store.info("tasks", "old")
    assert info is not None and info.state == State.DEAD
    assert info.dead_reason == DeadReason.EXPIRED


def test_a_message_within_its_ttl_is_delivered(store: Store) -> None:
    store.enqueue("tasks", message("m", ttl_seconds=30))
    assert ids(store.take(["tasks"], 1)) == ["m"]


def test_a_message_past_its_ttl_in_a_self_expiring_queue_is_dropped(store: Store) -> None:
    store.declare_queue("events", QueueLifetime(expires_seconds=60))
    store.enqueue("events", message("old", ttl_seconds=0.2))
    time.sleep(0.3)  # the time to live must run out
    assert store.take(["events"], 5).deliveries == []
    assert store.counts("events") == QueueCounts()


def test_the_queue_message_ttl_applies_to_messages_enqueued_after_the_declaration(
    store: Store,
) -> None:
    store.declare_queue("events", QueueLifetime(expires_seconds=60, message_ttl_seconds=0.2))
    store.enqueue("events", message("short"))
    store.enqueue("events", message("own-ttl-is-longer", ttl_seconds=30))
    time.sleep(0.3)  # the queue's time to live must run out
    assert ids(store.take(["events"], 5)) == []
    assert store.counts("events") == QueueCounts()


def test_a_delayed_message_past_its_ttl_never_comes_due(store: Store) -> None:
    store.enqueue("tasks", message("later", eta=time.time() + 0.3, ttl_seconds=0.1))
    time.sleep(0.4)  # both the ttl and the eta must pass
    assert fetch(store, ["tasks"]).deliveries == []
    assert store.counts("tasks") == QueueCounts(dead=1)


def test_a_message_in_flight_when_its_ttl_passes_can_still_be_acked(store: Store) -> None:
    store.enqueue("tasks", message("m", ttl_seconds=0.2))
    lease = fetch(store, ["tasks"]).deliveries[0].lease
    time.sleep(0.3)  # the ttl passes while it is in flight
    assert fetch(store, ["tasks"]).deliveries == []
    assert store.ack(lease)
    assert store.counts("tasks") == QueueCounts()


# -- queues that vanish ------------------------------------------------------------


def test_a_declared_lifetime_is_recorded_and_forgotten_without_limits(store: Store) -> None:
    assert store.lifetime("q") is None
    store.declare_queue("q", QueueLifetime(expires_seconds=10, message_ttl_seconds=2.5))
    assert store.lifetime("q") == QueueLifetime(expires_seconds=10, message_ttl_seconds=2.5)
    store.declare_queue("q", QueueLifetime())
    assert store.lifetime("q") is None


def test_an_expiring_queue_vanishes_with_messages_and_bindings_once_not_declared_in_time(
    store: Store,
) -> None:
    # Given an expiring queue holding messages in every state, bound to a fanout exchange
    store.declare_queue("orphan", QueueLifetime(expires_seconds=1))
    store.bind(Binding("ex", "", "", "orphan"), 1)
    store.bind(Binding("ex", "", "", "kept"))
    store.enqueue("orphan", message("ready"))
    store.enqueue("orphan", message("delayed", eta=time.time() + 60))
    store.enqueue("orphan", message("inflight"))
    fetch(store, ["orphan"], 1)
    store.enqueue("kept", message("k"))
    assert store.expire_queues() == []
    # When nobody declares it again within its expiry
    assert eventually(lambda: store.expire_queues() == ["orphan"])
    # Then it is gone entirely; other queues and bindings stay
    assert store.counts("orphan") == QueueCounts()
    assert store.lifetime("orphan") is None
    assert [b.queue for b in store.bindings("ex")] == ["kept"]
    assert store.counts("kept") == QueueCounts(ready=1)
    assert "orphan" not in store.queues()
    assert store.expire_queues() == []


def test_declaring_an_expiring_queue_again_keeps_it(store: Store) -> None:
    store.declare_queue("alive", QueueLifetime(expires_seconds=1))
    store.enqueue("alive", message("m"))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # twice its expiry, declared again all along
        store.declare_queue("alive", QueueLifetime(expires_seconds=1))
        assert store.expire_queues() == []
        time.sleep(0.2)
    assert store.counts("alive") == QueueCounts(ready=1)


def test_a_queue_declared_without_expiry_never_vanishes(store: Store) -> None:
    store.declare_queue("tasks", QueueLifetime(message_ttl_seconds=60))
    store.enqueue("tasks", message("m"))
    assert store.expire_queues() == []
    assert store.counts("tasks") == QueueCounts(ready=1)


def test_a_deleted_expiring_queue_is_not_reported_as_expired(store: Store) -> None:
    store.declare_queue("gone", QueueLifetime(expires_seconds=0.1))
    store.delete_queue("gone")
    time.sleep(0.2)  # past the expiry it had
    assert store.expire_queues() == []


@pytest.mark.parametrize("seconds", [0.001, 0.05])
def test_a_tiny_ttl_never_delivers_the_message(store: Store, seconds: float) -> None:
    store.enqueue("tasks", message("m", ttl_seconds=seconds))
    time.sleep(seconds + 0.05)  # the ttl must pass
    assert store.take(["tasks"], 1).deliveries == []


def test_a_schema_3_sqlite_database_is_upgraded_keeping_its_messages(tmp_path: Path) -> None:
    # Given a database as tq wrote it before message TTLs and queue lifetimes (schema 3)
    path = tmp_path / "old.db"
    old = SQLiteStore(path)
    old.enqueue("tasks", message("kept"))
    old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX messages_by_expiry")
        conn.execute("ALTER TABLE messages DROP COLUMN expires_at")
        conn.execute("DROP TABLE queue_lifetimes")
        conn.execute("PRAGMA user_version = 3")
    # When this tq opens it
    store = SQLiteStore(path)
    try:
        # Then the message is still there and the new features work
        store.declare_queue("events", QueueLifetime(expires_seconds=60, message_ttl_seconds=30))
        store.enqueue("tasks", message("new", ttl_seconds=30))
        assert ids(store.take(["tasks"], 5)) == ["kept", "new"]
        assert store.lifetime("events") == QueueLifetime(60, 30)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
