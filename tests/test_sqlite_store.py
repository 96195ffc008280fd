"""What only the SQLite store promises: URLs, options, the file it keeps, its errors, forks."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tq_kombu.errors import ConfigurationError, PriorityError, StoreError
from tq_kombu.store import open_store
from tq_kombu.store.base import DeadLetter, Lease, NewMessage, QueueCounts, State
from tq_kombu.store.sqlite import SCHEMA_VERSION, SQLiteStore, path_from_url


def message(message_id: str, priority: int = 5, payload: bytes = b"body") -> NewMessage:
    return NewMessage(message_id=message_id, payload=payload, priority=priority)


# -- URLs and options ----------------------------------------------------------------
def test_four_slashes_name_an_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"  # what the conftest fixture builds
    assert url.startswith("sqlite:////")
    assert path_from_url(url) == str(tmp_path / "queue.db")


def test_three_slashes_name_a_path_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore.from_url("sqlite:///data/queue.db")
    monkeypatch.chdir("/")  # a later chdir does not move the store
    store.enqueue("default", message("a"))
    store.close()
    assert (tmp_path / "data" / "queue.db").is_file()


def test_percent_escapes_in_the_path_are_decoded() -> None:
    assert path_from_url("sqlite:////srv/my%20queue.db") == "/srv/my queue.db"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://host/queue.db",
        "sqlite:////tmp/queue.db?timeout=5",
        "redis://localhost/0",
        "queue.db",
    ],
)
def test_a_url_that_names_no_local_file_is_refused_with_advice(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///"):
        path_from_url(url)


def test_known_options_are_taken_and_unknown_ones_ignored(tmp_path: Path) -> None:
    store = open_store(
        f"sqlite:///{tmp_path / 'q.db'}",
        poll_interval_seconds=0.01,
        busy_timeout_seconds=2,
        synchronous="normal",
        visibility_timeout=3600,  # a transport option meant for someone else
        lease_seconds=30,
    )
    assert isinstance(store, SQLiteStore)
    assert store.driver_type == "sqlite"
    assert (store.poll_interval_seconds, store.busy_timeout_seconds, store.synchronous) == (
        0.01,
        2.0,
        "NORMAL",
    )


@pytest.mark.parametrize(
    "options",
    [
        {"poll_interval_seconds": 0},
        {"busy_timeout_seconds": -1},
        {"poll_interval_seconds": "often"},
        {"synchronous": "sometimes"},
    ],
)
def test_a_bad_option_value_is_refused_with_its_name(
    tmp_path: Path, options: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        SQLiteStore.from_url(f"sqlite:///{tmp_path / 'q.db'}", **options)


# -- the database file ---------------------------------------------------------------
def test_first_use_creates_the_directory_and_a_wal_database_with_its_schema_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep" / "er" / "queue.db"
    store = SQLiteStore(path)
    store.ping()
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"messages", "bindings", "workers"} <= tables


def test_a_directory_that_cannot_be_created_gives_a_store_error_saying_so(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    store = SQLiteStore(blocker / "queue.db")
    with pytest.raises(StoreError, match="cannot create the directory"):
        store.ping()


def test_a_file_that_is_not_a_database_gives_a_store_error_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is not a SQLite database, just some text " * 100)
    with pytest.raises(StoreError, match="not a") as caught:
        SQLiteStore(path).ping()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_a_database_from_a_newer_tq_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer tq"):
        SQLiteStore(path).ping()


def test_a_write_lock_held_too_long_gives_a_store_error_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SQLiteStore(path, busy_timeout_seconds=0.2)
    store.ping()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="busy_timeout_seconds"):
            store.enqueue("default", message("a"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.enqueue("default", message("a"))  # and it recovers once the lock is gone
    assert store.counts("default").ready == 1


# -- behaviour the contract leaves open ------------------------------------------------
def test_enqueueing_an_id_the_queue_already_holds_keeps_the_first_copy(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    store.enqueue("default", message("a", payload=b"first"))
    store.enqueue("default", message("a", payload=b"second"))
    assert store.counts("default") == QueueCounts(ready=1)
    assert store.payload("default", "a") == b"first"


def test_an_invalid_priority_is_refused_at_enqueue(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    with pytest.raises(PriorityError):
        store.enqueue("default", message("a", priority=300))
    assert store.counts("default") == QueueCounts()


def test_wait_on_an_empty_queue_lasts_its_whole_timeout(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db", poll_interval_seconds=0.02)
    started = time.monotonic()
    store.wait(["default"], 0.3)
    assert 0.29 <= time.monotonic() - started < 1.5


# -- threads and processes -------------------------------------------------------------
def test_each_thread_uses_its_own_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    seen: list[sqlite3.Connection] = []

    def remember() -> None:
        seen.append(store._conn())

    threads = [threading.Thread(target=remember) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    remember()
    assert len({id(conn) for conn in seen}) == 4


def _enqueue_in_child(store: SQLiteStore) -> None:
    store.enqueue("default", message("from-child"))
    store.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs os.fork")
def test_a_forked_child_reopens_the_database_and_leaves_the_parents_connection_alone(
    tmp_path: Path,
) -> None:
    # Given a store the parent has already used
    store = SQLiteStore(tmp_path / "q.db")
    store.enqueue("default", message("from-parent"))
    # When a forked child uses the same store object
    child = multiprocessing.get_context("fork").Process(target=_enqueue_in_child, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    # Then both messages are there and the parent's connection still works
    assert store.counts("default").ready == 2
    assert os.path.exists(tmp_path / "q.db-wal")
    store.close()


# -- counts kept, lookups by index -----------------------------------------------------
def plans_of(store: SQLiteStore, ask: Callable[[], object]) -> list[str]:
    """The query plan lines of every statement ``ask`` runs on this thread's connection."""
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        ask()
    finally:
        conn.set_trace_callback(None)
    assert statements, "nothing was asked of the database"
    return [str(row[3]) for sql in statements for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_counts_levels_queues_and_task_lookups_never_read_every_message(tmp_path: Path) -> None:
    # Given a queue with messages in several states and priorities
    store = SQLiteStore(tmp_path / "q.db")
    for n in range(30):
        store.enqueue("default", NewMessage(f"m{n}", b"body", n % 3, task_id=f"task-{n}"))
    store.enqueue("default", NewMessage("later", b"body", 5, eta=time.time() + 60))
    store.fetch(["default"], 4, "c", 60, 5)
    # When an operator asks for counts, levels, queues and a task, Then the kept counts
    # answer, and messages are read only by a seek in the index made for the question
    # (the oldest ready message of a level, a task id), never a range of the queue
    asks: dict[str, tuple[Callable[[], object], str | None]] = {
        "counts": (lambda: store.counts("default"), None),
        "queues": (lambda: store.queues(), None),
        "ready_levels": (lambda: store.ready_levels("default"), "messages_ready_by_age"),
        "find_task": (lambda: store.find_task("default", "task-7"), "messages_by_task"),
    }
    for name, (ask, index) in asks.items():
        plans = plans_of(store, ask)
        reads = [line for line in plans if line.split()[1:2] == ["messages"]]
        allowed = [] if index is None else [line for line in reads if f"INDEX {index} (" in line]
        assert reads == allowed, (name, plans)
        assert index is None or reads, (name, plans)
    # And the answers are right
    assert store.counts("default") == QueueCounts(ready=26, delayed=1, inflight=4)
    levels = store.ready_levels("default")
    assert {level: count for level, (count, _) in levels.items()} == {0: 10, 1: 10, 2: 6}
    found = store.find_task("default", "task-7")
    assert found is not None and found.message_id == "m7"


def test_counts_follow_changes_made_by_another_program(tmp_path: Path) -> None:
    # Given a store with three ready messages
    path = tmp_path / "q.db"
    store = SQLiteStore(path)
    for n in range(3):
        store.enqueue("default", message(f"m{n}"))
    # When another program deletes one and moves one to another queue and priority
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM messages WHERE id = 'm0'")
        conn.execute("UPDATE messages SET queue = 'other', priority = 9 WHERE id = 'm1'")
    conn.close()
    # Then the kept counts agree (the triggers live in the file, not in tq)
    assert store.counts("default") == QueueCounts(ready=1)
    assert store.counts("other") == QueueCounts(ready=1)
    assert set(store.ready_levels("other")) == {9}
    assert store.queues() == ["default", "other"]


def test_find_task_answers_the_latest_message_of_a_task_and_none_for_unknown_ids(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    store.enqueue("default", NewMessage("first", b"body", 5, task_id="task-1"))
    store.enqueue("default", NewMessage("retry", b"body", 5, task_id="task-1"))
    store.enqueue("default", NewMessage("no-task", b"body", 5))
    found = store.find_task("default", "task-1")
    assert found is not None and found.message_id == "retry"
    assert store.find_task("default", "task-2") is None
    assert store.find_task("elsewhere", "task-1") is None
    assert store.find_task("default", "") is None


def test_a_schema_4_database_is_upgraded_keeping_and_counting_its_messages(
    tmp_path: Path,
) -> None:
    # Given a database as tq wrote it before kept counts (schema 4), with messages in
    # every state it knows
    path = tmp_path / "old.db"
    old = SQLiteStore(path)
    old.enqueue("tasks", NewMessage("ready-9", b"body", 9, task_id="task-9"))
    old.enqueue("tasks", NewMessage("ready-5", b"body", 5, task_id="task-5"))
    old.enqueue("tasks", NewMessage("held", b"body", 10))
    old.enqueue("tasks", NewMessage("dying", b"body", 10))
    old.enqueue("tasks", NewMessage("later", b"body", 5, eta=time.time() + 60))
    old.enqueue("tasks", NewMessage("blocked", b"body", 5, waiting=True))
    [held, dying] = [d.lease for d in old.fetch(["tasks"], 2, "c", 60, 5).deliveries]
    assert old.bury(dying, DeadLetter("rejected"))
    old.close()
    with sqlite3.connect(path) as conn:
        for trigger in ("insert", "delete", "update"):
            conn.execute(f"DROP TRIGGER message_counts_on_{trigger}")
        conn.execute("DROP TABLE message_counts")
        conn.execute("DROP INDEX messages_ready_by_age")
        conn.execute("DROP INDEX messages_by_task")
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    # When this tq opens it
    store = SQLiteStore(path)
    try:
        # Then every message is there and counted, and tasks are found
        assert store.counts("tasks") == QueueCounts(
            ready=2, delayed=1, inflight=1, dead=1, waiting=1
        )
        assert set(store.ready_levels("tasks")) == {9, 5}
        found = store.find_task("tasks", "task-5")
        assert found is not None and found.message_id == "ready-5"
        # And the counts stay kept as messages move
        assert store.ack(held)
        assert [d.lease.message_id for d in store.take(["tasks"], 5).deliveries] == [
            "ready-9",
            "ready-5",
        ]
        assert store.counts("tasks") == QueueCounts(delayed=1, dead=1, waiting=1)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["enqueue", "delayed", "waiting", "fetch", "ack", "release", "bury", "replay"]
            + ["set_priority", "cancel", "release_waiting", "purge", "take", "move"]
        ),
        st.sampled_from(["alpha", "beta"]),
        st.sampled_from([0, 1, 5, 255]),
        st.integers(0, 6),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(operations=OPERATIONS)
def test_kept_counts_and_levels_always_equal_a_recount_of_the_rows(
    operations: list[tuple[str, str, int, int]],
) -> None:
    # Given any sequence of operations, by tq and (move) by another program
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "q.db"
        store = SQLiteStore(path)
        store.ping()
        leases: list[Lease] = []
        for n, (operation, queue, priority, pick) in enumerate(operations):
            target = f"m{pick}"
            if operation in ("enqueue", "delayed", "waiting"):
                eta = time.time() + 60 if operation == "delayed" else None
                waiting = operation == "waiting"
                store.enqueue(queue, NewMessage(f"m{n}", b"body", priority, eta, waiting=waiting))
            elif operation in ("fetch", "take"):
                fetch = store.take if operation == "take" else None
                result = fetch([queue], pick) if fetch else store.fetch([queue], pick, "c", 60, 3)
                leases += [d.lease for d in result.deliveries if d.lease.token]
            elif operation in ("ack", "release", "bury") and leases:
                lease = leases.pop(pick % len(leases))
                if operation == "bury":
                    store.bury(lease, DeadLetter("rejected"))
                else:
                    getattr(store, operation)(lease)
            elif operation == "replay":
                store.replay(queue, target, priority=priority)
            elif operation == "set_priority":
                store.set_priority(queue, target, priority)
            elif operation in ("cancel", "release_waiting"):
                getattr(store, operation)(queue, target)
            elif operation == "purge":
                store.purge(queue, list(State)[pick % len(State)])
            elif operation == "move":
                with sqlite3.connect(path) as outsider:
                    outsider.execute(
                        "UPDATE messages SET queue = ?, priority = ? WHERE id = ?",
                        ("alpha" if queue == "beta" else "beta", priority, target),
                    )
                outsider.close()
        # Then the kept counts and the oldest ready message of each level are what a
        # full read of the rows says
        with sqlite3.connect(path) as reader:
            for queue in ("alpha", "beta"):
                rows = reader.execute(
                    "SELECT state, COUNT(*) FROM messages WHERE queue = ? GROUP BY state",
                    (queue,),
                ).fetchall()
                assert store.counts(queue) == QueueCounts(**dict(rows))
                levels = reader.execute(
                    "SELECT priority, COUNT(*), MIN(created_at) FROM messages "
                    "WHERE queue = ? AND state = 'ready' GROUP BY priority",
                    (queue,),
                ).fetchall()
                assert store.ready_levels(queue) == {p: (n, c) for p, n, c in levels}
            queues = reader.execute("SELECT DISTINCT queue FROM messages ORDER BY queue")
            assert store.queues() == [row[0] for row in queues.fetchall()]
        reader.close()
        store.close()
