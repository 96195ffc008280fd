"""Dependencies on SQLite beyond the contract suite: completions from two processes,
the purge of expired records, a schema 5 database upgraded, a corrupt parent."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from tq_kombu.store import open_store
from tq_kombu.store.model import DeadReason, QueueCounts, State
from tq_kombu.store.sqlite import SCHEMA_VERSION, SQLiteStore

from .store_contract import eventually, fetch, message
from .test_store_dependencies import PARENTS, child, children_of_four_parents, parent, state_of


def _complete_in_process(url: str, names: list[str], start: object, results: object) -> None:
    """In another process: wait for the start, record ``names`` as succeeded."""
    opened = open_store(url)
    start.wait(30)  # type: ignore[attr-defined]
    total = sum(opened.complete(name, True).released for name in names)
    results.put(total)  # type: ignore[attr-defined]
    opened.close()


def test_two_hundred_children_are_released_exactly_once_by_two_processes(
    sqlite_url: str,
) -> None:
    opened = open_store(sqlite_url)
    children_of_four_parents(opened, 200)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_complete_in_process, args=(sqlite_url, names, start, results))
        for names in (PARENTS[0::2], PARENTS[1::2])
    ]
    for worker in workers:
        worker.start()
    start.set()
    totals = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(totals) == 200
    assert opened.counts("default") == QueueCounts(ready=200)
    opened.close()


def test_expired_completion_records_are_purged_as_new_ones_are_written(sqlite_url: str) -> None:
    opened = open_store(sqlite_url)
    assert isinstance(opened, SQLiteStore)
    opened.set_dependency_record_ttl(0.2)
    for n in range(20):
        opened.complete(f"old-{n}", True)

    def only_the_newest_is_kept() -> bool:
        opened.complete("new", True)  # each write purges what has expired
        rows = opened._conn().execute("SELECT task_id FROM completions").fetchall()
        return bool(rows == [("new",)])

    assert eventually(only_the_newest_is_kept)
    opened.close()


def test_a_schema_5_database_is_upgraded_to_hold_dependencies(tmp_path: Path) -> None:
    # Given a database as tq wrote it before dependencies (schema 5), with messages
    path = tmp_path / "old.db"
    old = SQLiteStore(path)
    old.enqueue("default", parent("p"))
    old.enqueue("default", message("held", waiting=True))
    old.close()
    with sqlite3.connect(path) as conn:
        for trigger in ("messages_died", "messages_stored_dead", "dependents_leave_when_deleted"):
            conn.execute(f"DROP TRIGGER {trigger}")
        for table in ("dependency_edges", "completions", "dependency_deaths"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX messages_waiting_by_deadline")
        for column in ("parents", "on_parent_failure", "dependency_deadline"):
            conn.execute(f"ALTER TABLE messages DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 5")
    conn.close()
    # When this tq opens it, then its messages are there and dependencies work
    store = SQLiteStore(path)
    try:
        assert store.counts("default") == QueueCounts(ready=1, waiting=1)
        store.enqueue("default", child("c", ["p"]))
        assert store.cancel("default", "m-p") is True
        assert state_of(store, "default", "c") == State.DEAD
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_parent_whose_record_is_corrupt_fails_its_children(sqlite_url: str) -> None:
    opened = open_store(sqlite_url)
    opened.enqueue("default", parent("p"))
    opened.enqueue("kids", child("c", ["p"]))
    # Given the parent's record damaged from outside tq
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE messages SET priority = 'high' WHERE id = 'm-p'")
    db.close()
    # When a fetch meets it, then it is set aside as corrupt, and its child with it
    assert fetch(opened, ["default"]).deliveries == []
    parent_info = opened.info("default", "m-p")
    assert parent_info is not None and parent_info.dead_reason == DeadReason.CORRUPT
    assert state_of(opened, "kids", "c") == State.DEAD
    opened.close()
