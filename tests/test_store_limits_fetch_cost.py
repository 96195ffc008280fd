"""What a limit that never binds costs at fetch (issue #10: drain stays >= 0.9x the
unlimited figure): a fetch hands out a whole batch under it, and on SQLite a fetch
never walks a limited backlog to find a plain message, and an older file upgrades to
the indexes that make it so."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tq_kombu.store import Store, open_store
from tq_kombu.store.model import LimitDefinition, LimitTag, NewMessage, QueueCounts

from .store_contract import LONG_LEASE, ids

Q = "limited"
#: A million starts a second, no burst: one start per microsecond.
NEVER_BINDING = LimitDefinition("api", "rate", interval_us=1, tolerance_us=0)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The memory and SQLite stores (each judges every start at its own instant)."""
    opened = open_store(str(request.getfixturevalue(f"{request.param}_url")))
    yield opened
    opened.close()


def limited(message_id: str, priority: int = 5) -> NewMessage:
    return NewMessage(
        message_id, b"body", priority, task_name="tasks.call", limits=(LimitTag("rate", "api"),)
    )


def test_a_rate_far_above_the_drain_rate_admits_a_whole_batch_in_one_fetch(
    store: Store,
) -> None:
    # Given a never-binding rate and 8 messages under it
    store.define_limits([NEVER_BINDING])
    store.enqueue_many([(Q, limited(f"m{n}")) for n in range(8)])
    # When one fetch asks for 8
    result = store.fetch([Q], 8, "c", LONG_LEASE, 5)
    # Then all 8 are handed out in order, and each start is counted once
    assert ids(result) == [f"m{n}" for n in range(8)]
    status = store.limit_status("api")
    assert status is not None and status.recent_starts == 8


def _sqlite(path: Path) -> Store:
    return open_store(f"sqlite:///{path}")


def _fetch_steps(store: Store, queue: str) -> tuple[list[str], int]:
    """The ids one fetch of 1 hands out, and how many SQLite VM steps (x100) it took."""
    conn = store._conn()  # type: ignore[attr-defined]
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        result = store.fetch([queue], 1, "c", LONG_LEASE, 5)
    finally:
        conn.set_progress_handler(None, 0)
    return ids(result), steps[0]


def _held_back_backlog(store: Store, queue: str, size: int) -> None:
    """``size`` urgent limited messages their rate (one an hour, a key per queue) holds
    back, then one plain message."""
    store.define_limits([LimitDefinition("slow", "rate", interval_us=3_600_000_000)])
    tag = (LimitTag("rate", "slow", queue),)
    store.enqueue_many(
        [(queue, NewMessage(f"l{n:05}", b"x", 9, limits=tag)) for n in range(size + 1)]
    )
    assert ids(store.fetch([queue], 1, "c", LONG_LEASE, 5)) == ["l00000"]  # the rate is spent
    store.enqueue(queue, NewMessage("plain", b"x", 1))


def test_a_sqlite_fetch_finds_a_plain_message_without_walking_the_limited_backlog(
    tmp_path: Path,
) -> None:
    # Given a queue with 20 held-back limited messages ahead of a plain one, and another
    # with 2,000 of them
    store = _sqlite(tmp_path / "q.db")
    try:
        _held_back_backlog(store, "small", 20)
        _held_back_backlog(store, "large", 2000)
        # When each queue is fetched from
        small, small_steps = _fetch_steps(store, "small")
        large, large_steps = _fetch_steps(store, "large")
    finally:
        store.close()
    # Then both hand out the plain message, with about the same work (not 100x more)
    assert small == large == ["plain"]
    assert large_steps <= small_steps * 1.5 + 20, (small_steps, large_steps)


def test_a_schema_7_sqlite_file_upgrades_to_the_indexes_of_limits_at_fetch(
    tmp_path: Path,
) -> None:
    from tq_kombu.store.sqlite import SCHEMA_VERSION

    # Given a file as schema 7 left it: limited and plain messages, no schema-8 indexes
    path = tmp_path / "old.db"
    old = _sqlite(path)
    old.define_limits([NEVER_BINDING])
    old.enqueue(Q, limited("limited-1", priority=9))
    old.enqueue(Q, NewMessage("plain-1", b"x", 5))
    old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX messages_plain_ready")
        conn.execute("DROP INDEX lanes_waiting_for_slot")
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    # When this tq opens it
    store = _sqlite(path)
    try:
        # Then its messages are handed out as before, by priority
        assert ids(store.fetch([Q], 2, "c", LONG_LEASE, 5)) == ["limited-1", "plain-1"]
        assert store.counts(Q) == QueueCounts(inflight=2)
    finally:
        store.close()
    # And the file is at this schema, with both indexes
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"messages_plain_ready", "lanes_waiting_for_slot"} <= indexes


def test_keys_take_turns_inside_one_fetch_as_across_fetches(store: Store) -> None:
    # Given key a's 10 messages published before key b's 3, under a never-binding rate
    store.define_limits([NEVER_BINDING])
    for key, count in (("a", 10), ("b", 3)):
        store.enqueue_many(
            [
                (Q, NewMessage(f"{key}{n}", b"x", 5, limits=(LimitTag("rate", "api", key),)))
                for n in range(count)
            ]
        )
    # When one fetch asks for 7, Then the keys alternate while both have work
    assert ids(store.fetch([Q], 7, "c", LONG_LEASE, 5)) == [
        "a0",
        "b0",
        "a1",
        "b1",
        "a2",
        "b2",
        "a3",
    ]
    # And the next fetch goes on from the turns the first one left: b's new message
    # arrived after a was last served, so it waits for a's turn
    store.enqueue(Q, NewMessage("b3", b"x", 5, limits=(LimitTag("rate", "api", "b"),)))
    assert ids(store.fetch([Q], 3, "c", LONG_LEASE, 5)) == ["a4", "b3", "a5"]


def _slot_waiters(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT lane FROM lanes WHERE waits_for_slot = 1").fetchall()
    conn.close()
    return [str(row[0]) for row in rows]


_SCHEMA_9_TRIGGER = """
    CREATE TRIGGER limited_message_goes AFTER DELETE ON messages WHEN old.lane IS NOT NULL
    BEGIN
        DELETE FROM limit_slots WHERE queue = old.queue AND id = old.id;
        UPDATE lanes SET blocked_until = NULL, waits_for_slot = 0
            WHERE old.state = 'inflight' AND waits_for_slot = 1;
        DELETE FROM lanes WHERE queue = old.queue AND lane = old.lane AND NOT EXISTS
            (SELECT 1 FROM messages WHERE queue = old.queue AND lane = old.lane);
    END
"""


def test_a_schema_9_sqlite_file_upgrades_so_only_a_slot_holders_end_wakes_slot_waiters(
    tmp_path: Path,
) -> None:
    from tq_kombu.store.sqlite import SCHEMA_VERSION

    # Given a file as schema 9 left it: every limited message's end woke slot waiters
    path = tmp_path / "old.db"
    old = _sqlite(path)
    old.define_limits([NEVER_BINDING])
    old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER slot_holder_goes")
        conn.execute("DROP TRIGGER limited_message_goes")
        conn.execute(_SCHEMA_9_TRIGGER)
        conn.execute("PRAGMA user_version = 9")
    conn.close()
    # When this tq opens it, with one slot held and a lane waiting for it
    store = _sqlite(path)
    try:
        one_slot = LimitDefinition("db", "concurrency", slots=1)
        store.define_limits([NEVER_BINDING, one_slot])
        slot = (LimitTag("concurrency", "db"),)
        store.enqueue_many(
            [
                (Q, NewMessage("holder", b"x", 5, limits=slot)),
                (Q, NewMessage("waiter", b"x", 5, limits=slot)),
                (Q, NewMessage("rated", b"x", 5, limits=(LimitTag("rate", "api"),))),
            ]
        )
        holder, rated = store.fetch([Q], 3, "c", LONG_LEASE, 5).deliveries
        assert [holder.lease.message_id, rated.lease.message_id] == ["holder", "rated"]
        assert len(_slot_waiters(path)) == 1
        # Then the end of the rate-only message leaves the waiter waiting
        assert store.ack(rated.lease)
        assert len(_slot_waiters(path)) == 1
        # And the end of the slot holder wakes it, and it starts
        assert store.ack(holder.lease)
        assert _slot_waiters(path) == []
        assert ids(store.fetch([Q], 3, "c", LONG_LEASE, 5)) == ["waiter"]
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
