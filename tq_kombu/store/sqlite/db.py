"""The Database: one SQLite file in WAL mode, a connection per thread of each process.

Every write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front,
so two writers queue on the busy timeout instead of deadlocking on a lock upgrade).
Each thread of each process gets its own connection, opened lazily and re-opened
after ``os.fork()``; a connection inherited from a parent is never used nor closed.
SQLite errors leave as :class:`~tq_kombu.errors.StoreError` with a hint of what to do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ...errors import StoreError, StoreUnavailable
from .schema import ensure_schema

__all__ = ["FORK_GUARD", "Database"]


#: Connections inherited from a parent process: never used and never closed here,
#: because closing them in the child could disturb the parent's locks and WAL.
_INHERITED: list[sqlite3.Connection] = []

_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    for database in list(_DATABASES):
        database._lock = threading.Lock()


#: Held by waiter threads while they are inside SQLite, and by a fork while it happens:
#: SQLite's own mutexes (its allocator's, for one) held by a thread at fork time would
#: stay locked in the child (a prefork pool process) for good. The waiters poll many
#: times a second, so without it a fork would sooner or later catch one mid-query.
FORK_GUARD = threading.Lock()


def _release_fork_guard() -> None:
    FORK_GUARD.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
    os.register_at_fork(
        before=FORK_GUARD.acquire,
        after_in_parent=_release_fork_guard,
        after_in_child=_release_fork_guard,
    )


class Database:
    """Connections to one SQLite file, transactions, and errors translated with hints."""

    def __init__(self, path: str, *, busy_timeout_seconds: float, synchronous: str) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self.synchronous = synchronous
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0
        self._schema_checked_in: int | None = None
        _DATABASES.add(self)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and again after a fork."""
        local = self._local
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == pid and local.generation == self._generation:
                return conn
            if local.pid != pid:
                _INHERITED.append(conn)
            else:  # closed store (a new generation): this thread closes its own
                with suppress(sqlite3.Error):
                    conn.close()
            local.conn = None
        conn = self._open()
        local.conn, local.pid, local.generation = conn, pid, self._generation
        return conn

    def _open(self) -> sqlite3.Connection:
        parent = Path(self.path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory {parent} for the tq SQLite database "
                f"({exc.strerror or exc}): create it yourself or point the broker URL "
                "at a writable place"
            ) from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_seconds,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # only close() touches another thread's connection
            )
        except sqlite3.Error as exc:
            raise self.error("opening the database", exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
            row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            mode = str(row[0]).lower() if row else "unknown"
            if mode != "wal":
                raise StoreError(
                    f"SQLite store {self.path}: cannot switch the database to WAL mode (it "
                    f"stays in {mode!r} mode); tq needs WAL — keep the file on a local disk, "
                    "not a network filesystem"
                )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self._schema_checked_in != os.getpid():
                ensure_schema(conn, self.path)
                self._schema_checked_in = os.getpid()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self.error("opening the database", exc) from exc
            raise
        return conn

    def error(self, action: str, exc: sqlite3.Error) -> StoreError:
        """A StoreError saying what failed, why, and what to do about it."""
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            hint = (
                "another connection held the write lock longer than busy_timeout_seconds="
                f"{self.busy_timeout_seconds:g}; raise busy_timeout_seconds or look for a "
                "process stuck inside a transaction"
            )
        elif "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            hint = "check that the file and its directory exist and this user may write to them"
        elif "not a database" in lowered or "malformed" in lowered:
            hint = "the file is not a healthy SQLite database; point the broker URL elsewhere"
        elif "disk" in lowered or "full" in lowered:
            hint = "check free space and the health of the disk holding the database"
        else:
            hint = "see the SQLite error for the cause"
        message = f"SQLite store {self.path}: {action} failed: {text}; {hint}"
        if "locked" in lowered or "busy" in lowered or "unable to open" in lowered:
            # passing trouble: the worker reconnects and tries again instead of dying
            return StoreUnavailable(message)
        return StoreError(message)

    @contextmanager
    def read(self, action: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection in autocommit mode, with errors translated."""
        try:
            yield self.connection()
        except sqlite3.Error as exc:
            raise self.error(action, exc) from exc

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success and rolled back otherwise."""
        try:
            conn = self.connection()
            if conn.in_transaction:  # left over by an interrupted operation
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self.error(action, exc) from exc

    def close(self) -> None:
        """Close this thread's connection; every other thread closes its own on its next
        use (closing a connection another thread is using is undefined behaviour in
        SQLite), and connections of threads that ended are closed with them."""
        with self._lock:
            self._generation += 1
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            local.conn = None
            if local.pid == os.getpid():
                with suppress(sqlite3.Error):
                    conn.close()
            else:
                _INHERITED.append(conn)


class UsesDatabase:
    """What every slice of the SQLite store works over."""

    #: The database the store's slices share.
    db: Database
