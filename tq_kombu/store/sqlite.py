"""SQLiteStore: the embedded default store — zero servers, one machine.

All messages live in one SQLite database file in WAL mode, so readers never block
the writer. Every write is one ``BEGIN IMMEDIATE`` transaction (the write lock is
taken up front, so two writers queue on the busy timeout instead of deadlocking
on a lock upgrade). Several worker processes on one machine and several threads of
one process may share the file: each thread of each process gets its own
connection, opened lazily and re-opened after ``os.fork()``.

Ordering: a global counter (``seq``) stamps every message when it becomes ready;
ready messages are handed out by priority (higher first), then by ``seq``, across
every queue a fetch names. A message that returns to ready (requeue, release,
expired lease, due ETA) is stamped again and so goes to the end of its level.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StoreError, StoreUnavailable
from ..options import check_option, names
from ..priority import normalize_priority
from ..urls import sqlite_path
from .base import (
    Binding,
    DeadLetter,
    DeadReason,
    Delivery,
    FetchResult,
    Lease,
    MessageInfo,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    RetentionPolicy,
    State,
    Store,
    WorkerBeat,
)
from .retention import retention_from_options
from .waiting import ThreadWaiter, Waiter

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "path_from_url"]

#: Recorded in ``PRAGMA user_version``; bump it (and migrate) when the schema changes.
SCHEMA_VERSION = 4

# Messages with a time to live (AMQP expiration, x-message-ttl), by expiry.
_EXPIRY_INDEX = """
    CREATE INDEX IF NOT EXISTS messages_by_expiry
        ON messages (queue, expires_at) WHERE expires_at IS NOT NULL
    """
# Queue lifetimes (x-expires, auto_delete, x-message-ttl); deadline: when it vanishes.
_LIFETIMES_TABLE = """
    CREATE TABLE IF NOT EXISTS queue_lifetimes (
        queue               TEXT PRIMARY KEY,
        expires_seconds     REAL,
        message_ttl_seconds REAL,
        deadline            REAL
    )
    """

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS messages (
        queue          TEXT    NOT NULL,
        id             TEXT    NOT NULL,
        state          TEXT    NOT NULL,
        priority       INTEGER NOT NULL,
        seq            INTEGER NOT NULL,
        eta            REAL,
        lease_until    REAL,
        lease_token    TEXT,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        task_name      TEXT    NOT NULL DEFAULT '',
        task_id        TEXT    NOT NULL DEFAULT '',
        payload        BLOB    NOT NULL,
        dead_reason    TEXT,
        dead_detail    TEXT,
        created_at     REAL    NOT NULL,
        dead_at        REAL,
        hostname       TEXT,
        failure        BLOB,
        attempts       INTEGER,
        expires_at     REAL,
        PRIMARY KEY (queue, id)
    )
    """,
    # Fetch order within a queue (and counts per state, from the index alone).
    """
    CREATE INDEX IF NOT EXISTS messages_by_state
        ON messages (queue, state, priority DESC, seq)
    """,
    # Due delayed messages, expired leases and the dead list, each a small partial index.
    """
    CREATE INDEX IF NOT EXISTS messages_delayed_by_eta
        ON messages (queue, eta, seq) WHERE state = 'delayed'
    """,
    """
    CREATE INDEX IF NOT EXISTS messages_inflight_by_lease
        ON messages (queue, lease_until, seq) WHERE state = 'inflight'
    """,
    """
    CREATE INDEX IF NOT EXISTS messages_dead_by_time
        ON messages (queue, dead_at, seq) WHERE state = 'dead'
    """,
    _EXPIRY_INDEX,
    _LIFETIMES_TABLE,
    """
    CREATE TABLE IF NOT EXISTS counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0)",
    """
    CREATE TABLE IF NOT EXISTS bindings (
        exchange    TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        pattern     TEXT NOT NULL,
        queue       TEXT NOT NULL,
        expires_at  REAL,
        PRIMARY KEY (exchange, routing_key, pattern, queue)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS workers (
        worker     TEXT PRIMARY KEY,
        seen_at    REAL NOT NULL,
        expires_at REAL NOT NULL,
        info       TEXT NOT NULL DEFAULT '{}'
    )
    """,
)

_INFO_COLUMNS = (
    "queue, id, state, priority, delivery_count, task_name, task_id, eta, dead_reason, "
    "dead_detail, created_at, dead_at, hostname, attempts"
)
#: Schema upgrades: from each version, the statements that lead to the next one.
_MIGRATIONS = {
    1: (
        "ALTER TABLE messages ADD COLUMN hostname TEXT",
        "ALTER TABLE messages ADD COLUMN failure BLOB",
    ),
    2: ("ALTER TABLE messages ADD COLUMN attempts INTEGER",),
    3: ("ALTER TABLE messages ADD COLUMN expires_at REAL", _EXPIRY_INDEX, _LIFETIMES_TABLE),
}

#: ``list_messages`` order per state: hand-out, due, expiry, death, arrival.
_LIST_ORDER = {
    State.READY: "priority DESC, seq",
    State.DELAYED: "eta, seq",
    State.INFLIGHT: "lease_until, seq",
    State.DEAD: "dead_at, seq",
    State.WAITING: "seq",
}

_QUEUED = "('ready', 'delayed', 'waiting')"


def _unknown_states_sql() -> str:
    """Rows of queue ?1 whose state is none of State's: one index range between each two
    known states (text sorts after numbers, blobs after text), never a scan of the queue."""
    known = sorted(state.value for state in State)
    ranges = [f"state < '{known[0]}'", f"state > '{known[-1]}'"]
    ranges += [f"state > '{a}' AND state < '{b}'" for a, b in zip(known, known[1:], strict=False)]
    return " UNION ALL ".join(
        f"SELECT rowid, state FROM messages WHERE queue = ?1 AND {r}" for r in ranges
    )


_UNKNOWN_STATES_SQL = _unknown_states_sql()
_NEXT_SEQ = "(SELECT value + 1 FROM counters WHERE name = 'seq')"


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (so ``close()`` finds every thread's)."""


#: Connections inherited from a parent process: never used and never closed here,
#: because closing them in the child could disturb the parent's locks and WAL.
_INHERITED: list[sqlite3.Connection] = []

_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    for store in list(_STORES):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: Held by waiter threads while they are inside SQLite, and by a fork while it happens:
#: SQLite's own mutexes (its allocator's, for one) held by a thread at fork time would
#: stay locked in the child (a prefork pool process) for good. The waiters poll many
#: times a second, so without it a fork would sooner or later catch one mid-query.
_FORK_GUARD = threading.Lock()


def _release_fork_guard() -> None:
    _FORK_GUARD.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FORK_GUARD.acquire,
        after_in_parent=_release_fork_guard,
        after_in_child=_release_fork_guard,
    )


def path_from_url(url: str) -> str:
    """The database path in a ``sqlite:///...`` URL (see :func:`tq_kombu.urls.sqlite_path`):
    ``sqlite:///queue.db`` is relative, ``sqlite:////var/lib/tq/queue.db`` absolute."""
    return sqlite_path(url)


class SQLiteStore(Store):
    """A :class:`~tq_kombu.store.base.Store` in one SQLite file (WAL mode)."""

    driver_type = "sqlite"

    #: Seconds between two checks for work while :meth:`wait` blocks.
    poll_interval_seconds: float = 0.05
    #: Seconds a statement waits for another connection's write lock before failing.
    busy_timeout_seconds: float = 30.0
    #: ``PRAGMA synchronous``: FULL survives power loss; NORMAL is faster and in WAL
    #: mode still loses nothing when a process crashes.
    synchronous: str = "FULL"

    #: Options :meth:`from_url` takes (see :data:`tq_kombu.options.OPTIONS`); any other
    #: option is ignored.
    options = names("sqlite")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval_seconds: float | None = None,
        busy_timeout_seconds: float | None = None,
        synchronous: str | None = None,
    ) -> None:
        """Open (lazily) the database at ``path``; a relative path is taken relative to
        the current working directory now, not when the file is first opened."""
        if poll_interval_seconds is not None:
            self.poll_interval_seconds = check_option(
                "poll_interval_seconds", poll_interval_seconds
            )
        if busy_timeout_seconds is not None:
            self.busy_timeout_seconds = check_option("busy_timeout_seconds", busy_timeout_seconds)
        if synchronous is not None:
            self.synchronous = check_option("synchronous", synchronous)
        self.path = os.path.abspath(os.fspath(path))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0
        self._connections: weakref.WeakKeyDictionary[_Connection, int] = weakref.WeakKeyDictionary()
        self._schema_checked_in: int | None = None
        _STORES.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Open the store a ``sqlite:///path`` URL names.

        Everything after ``sqlite:///`` is the path: ``sqlite:///queue.db`` is relative
        to the working directory, ``sqlite:////var/lib/tq/queue.db`` is absolute (see
        :func:`path_from_url`). Takes the options listed in :attr:`options`; ignores every other option, since
        the transport passes all of its transport options through.
        """
        known = {name: options[name] for name in cls.options if options.get(name) is not None}
        store = cls(path_from_url(url), **known)
        store.retention = retention_from_options(options)
        return store

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    # -- connections --------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and again after a fork."""
        local = self._local
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == pid and local.generation == self._generation:
                return conn
            if local.pid != pid:
                _INHERITED.append(conn)
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
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            raise self._error("opening the database", exc) from exc
        assert isinstance(conn, _Connection)
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
            self._ensure_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("opening the database", exc) from exc
            raise
        with self._lock:
            self._connections[conn] = os.getpid()
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        pid = os.getpid()
        if self._schema_checked_in == pid:
            return
        if self._user_version(conn) != SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._user_version(conn)
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version < SCHEMA_VERSION:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[step]:
                            _migrate(conn, statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {self.path} was written by a newer tq (schema version "
                    f"{version}, this tq knows up to {SCHEMA_VERSION}): upgrade tq on this "
                    "machine or use another database file"
                )
        self._schema_checked_in = pid

    @staticmethod
    def _user_version(conn: sqlite3.Connection) -> int:
        row = conn.execute("PRAGMA user_version").fetchone()
        return int(row[0]) if row else 0

    def _error(self, action: str, exc: sqlite3.Error) -> StoreError:
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
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection in autocommit mode, with errors translated."""
        try:
            yield self._conn()
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success and rolled back otherwise."""
        try:
            conn = self._conn()
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
            raise self._error(action, exc) from exc

    @staticmethod
    def _take_seqs(conn: sqlite3.Connection, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers; return the first."""
        conn.execute("UPDATE counters SET value = value + ? WHERE name = 'seq'", (count,))
        row = conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        return int(row[0]) - count + 1

    # -- connection -------------------------------------------------------
    def ping(self) -> None:
        """Open the database (creating it if needed) and run a trivial query."""
        with self._read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection this process opened; the next call reconnects."""
        pid = os.getpid()
        with self._lock:
            self._generation += 1
            owned = list(self._connections.items())
            self._connections.clear()
        for conn, owner in owned:
            if owner == pid:
                with suppress(sqlite3.Error):
                    conn.close()
            else:
                _INHERITED.append(conn)
        self._local = threading.local()

    # -- publish ----------------------------------------------------------
    def enqueue(self, queue: str, message: NewMessage) -> None:
        """Store ``message`` as waiting, delayed or ready.

        Enqueueing an id the queue already holds changes nothing (the first copy stands).
        """
        priority = normalize_priority(message.priority)
        now = time.time()
        if message.waiting:
            state = State.WAITING
        elif message.eta is not None and message.eta > now:
            state = State.DELAYED
        else:
            state = State.READY
        with self._write("enqueue") as conn:
            ttls = [] if message.ttl_seconds is None else [float(message.ttl_seconds)]
            row = conn.execute(
                "SELECT message_ttl_seconds FROM queue_lifetimes WHERE queue = ?", (queue,)
            ).fetchone()
            if row is not None and row[0] is not None:
                ttls.append(float(row[0]))
            conn.execute(
                "INSERT OR IGNORE INTO messages (queue, id, state, priority, seq, eta, "
                "task_name, task_id, payload, created_at, expires_at) "
                f"VALUES (?, ?, ?, ?, {_NEXT_SEQ}, ?, ?, ?, ?, ?, ?)",
                (
                    queue,
                    message.message_id,
                    state.value,
                    priority,
                    message.eta,
                    message.task_name,
                    message.task_id,
                    bytes(message.payload),
                    now,
                    now + min(ttls) if ttls else None,
                ),
            )
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")

    # -- consume ----------------------------------------------------------
    def fetch(
        self,
        queues: Sequence[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: Collection[str] = (),
    ) -> FetchResult:
        """Promote, reclaim and lease in one transaction (see the Store contract)."""
        if max_deliveries < 1:
            raise ConfigurationError(f"max_deliveries must be at least 1, got {max_deliveries!r}")
        lease_seconds = check_option("lease_seconds", lease_seconds)
        return self._fetch(
            queues, max_count, consumer_id, lease_seconds, max_deliveries, skip_task_names
        )

    def take(self, queues: Sequence[str], max_count: int) -> FetchResult:
        """Promote, reclaim and remove in one transaction: a fetch without leases."""
        return self._fetch(queues, max_count, "", None, 1, ())

    def _fetch(
        self,
        queues: Sequence[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float | None,
        max_deliveries: int,
        skip_task_names: Collection[str],
    ) -> FetchResult:
        names = list(dict.fromkeys(queues))
        if not names:
            return FetchResult([], False, None)
        skip = sorted(set(skip_task_names))
        skip_sql = f" AND task_name NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        now = time.time()
        with self._write("fetch") as conn:
            self._return_due_to_ready(conn, names, now)
            self._expire_messages(conn, names, now)
            deliveries = self._lease_best(
                conn,
                names,
                max_count=max_count,
                consumer_id=consumer_id,
                lease_until=None if lease_seconds is None else now + lease_seconds,
                max_deliveries=max_deliveries,
                skip_sql=skip_sql,
                skip=skip,
                now=now,
            )
            more_ready = any(
                conn.execute(
                    f"SELECT 1 FROM messages WHERE queue = ? AND state = 'ready'{skip_sql} LIMIT 1",
                    (name, *skip),
                ).fetchone()
                is not None
                for name in names
            )
            next_due = self._next_due(conn, names)
        return FetchResult(deliveries, more_ready, next_due)

    def _return_due_to_ready(self, conn: sqlite3.Connection, queues: list[str], now: float) -> None:
        """Make due delayed messages and expired leases ready, in the order they came due
        (a time that is not a number can never come due: that message goes dead, corrupt)."""
        due: list[tuple[float, int, int]] = []
        for queue in queues:
            for state, column in (("delayed", "eta"), ("inflight", "lease_until")):
                # numbers sort before text and blobs, NULL before both (indexed ranges)
                due.extend(
                    (float(row[0]), _int_or(row[1], 0), int(row[2]))
                    for row in conn.execute(
                        f"SELECT {column}, seq, rowid FROM messages "
                        f"WHERE queue = ? AND state = '{state}' AND {column} <= ?",
                        (queue, now),
                    )
                )
                for row in conn.execute(
                    f"SELECT rowid, {column} FROM messages WHERE queue = ? AND state = '{state}' "
                    f"AND ({column} IS NULL OR {column} >= '')",
                    (queue,),
                ).fetchall():
                    _bury_corrupt(conn, int(row[0]), f"column {column} holds {row[1]!r}", now)
            for row in conn.execute(_UNKNOWN_STATES_SQL, (queue,)).fetchall():
                _bury_corrupt(conn, int(row[0]), f"column state holds {row[1]!r}", now)
        if not due:
            return
        due.sort()
        first = self._take_seqs(conn, len(due))
        conn.executemany(
            "UPDATE messages SET state = 'ready', seq = ?, lease_until = NULL, "
            "lease_token = NULL WHERE rowid = ?",
            [(first + n, rowid) for n, (_, _, rowid) in enumerate(due)],
        )

    def _expire_messages(self, conn: sqlite3.Connection, queues: list[str], now: float) -> None:
        """Messages past their time to live, not yet handed out, go: deleted in a
        self-expiring queue, dead (reason ``expired``) in any other."""
        for queue in queues:
            row = conn.execute(
                "SELECT 1 FROM messages WHERE queue = ? AND expires_at <= ? LIMIT 1", (queue, now)
            ).fetchone()
            if row is None:
                continue
            lifetime = conn.execute(
                "SELECT expires_seconds FROM queue_lifetimes WHERE queue = ?", (queue,)
            ).fetchone()
            condition = f"queue = ? AND expires_at <= ? AND state IN {_QUEUED}"
            if lifetime is not None and lifetime[0] is not None:
                conn.execute(f"DELETE FROM messages WHERE {condition}", (queue, now))
                died = 0
            else:
                died = conn.execute(
                    "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, "
                    f"dead_at = ? WHERE {condition}",
                    (
                        DeadReason.EXPIRED.value,
                        "its time to live ran out before it was delivered",
                        now,
                        queue,
                        now,
                    ),
                ).rowcount
            # handed out already (in flight), or just set aside: no longer expiring
            conn.execute(
                "UPDATE messages SET expires_at = NULL WHERE queue = ? AND expires_at <= ?",
                (queue, now),
            )
            if died:
                self._trim_dead(conn, queue, self.retention)

    def _lease_best(
        self,
        conn: sqlite3.Connection,
        queues: list[str],
        *,
        max_count: int,
        consumer_id: str,
        lease_until: float | None,
        max_deliveries: int,
        skip_sql: str,
        skip: list[str],
        now: float,
    ) -> list[Delivery]:
        """Lease up to ``max_count`` ready messages, strictly by priority then seq across
        ``queues``; a message over ``max_deliveries`` goes to dead instead. Without
        ``lease_until`` the messages are removed instead of leased (``take``)."""
        deliveries: list[Delivery] = []
        while len(deliveries) < max_count:
            wanted = max_count - len(deliveries)
            candidates: list[tuple[int, int, str, str, int]] = []
            buried = False
            for queue in queues:
                for row in conn.execute(
                    "SELECT priority, seq, id, delivery_count, rowid FROM messages "
                    f"WHERE queue = ? AND state = 'ready'{skip_sql} "
                    "ORDER BY priority DESC, seq LIMIT ?",
                    (queue, *skip, wanted),
                ).fetchall():
                    try:
                        candidates.append(_candidate(queue, row))
                    except _CorruptRow as exc:
                        _bury_corrupt(conn, int(row[4]), str(exc), now)
                        self._trim_dead(conn, queue, self.retention)
                        buried = True
            if not candidates:
                if buried:
                    continue
                break
            candidates.sort()
            for negative_priority, _, queue, message_id, delivered in candidates[:wanted]:
                count = delivered + 1
                if lease_until is None:
                    row = conn.execute(
                        "DELETE FROM messages WHERE queue = ? AND id = ? "
                        "RETURNING payload, created_at",
                        (queue, message_id),
                    ).fetchone()
                    deliveries.append(
                        Delivery(
                            lease=Lease(queue, message_id, ""),
                            payload=bytes(row[0]),
                            priority=-negative_priority,
                            delivery_count=count,
                            created_at=float(row[1]),
                        )
                    )
                    continue
                if count > max_deliveries:
                    conn.execute(
                        "UPDATE messages SET state = 'dead', delivery_count = ?, "
                        "dead_reason = ?, dead_detail = ?, dead_at = ? "
                        "WHERE queue = ? AND id = ?",
                        (
                            count,
                            DeadReason.MAX_DELIVERIES.value,
                            f"handed out {delivered} times without being acknowledged",
                            now,
                            queue,
                            message_id,
                        ),
                    )
                    self._trim_dead(conn, queue, self.retention)
                    continue
                row = conn.execute(
                    "SELECT payload, created_at, rowid FROM messages WHERE queue = ? AND id = ?",
                    (queue, message_id),
                ).fetchone()
                if not isinstance(row[0], bytes) or not _is_number(row[1]):
                    column, value = (
                        ("payload", row[0])
                        if not isinstance(row[0], bytes)
                        else (
                            "created_at",
                            row[1],
                        )
                    )
                    _bury_corrupt(conn, int(row[2]), f"column {column} holds {value!r}"[:300], now)
                    self._trim_dead(conn, queue, self.retention)
                    continue
                token = f"{consumer_id}:{count}"
                conn.execute(
                    "UPDATE messages SET state = 'inflight', delivery_count = ?, "
                    "lease_until = ?, lease_token = ? WHERE queue = ? AND id = ?",
                    (count, lease_until, token, queue, message_id),
                )
                deliveries.append(
                    Delivery(
                        lease=Lease(queue, message_id, token),
                        payload=row[0],
                        priority=-negative_priority,
                        delivery_count=count,
                        created_at=float(row[1]),
                    )
                )
        return deliveries

    @staticmethod
    def _next_due(conn: sqlite3.Connection, queues: list[str]) -> float | None:
        times: list[float] = []
        for queue in queues:
            for sql in (  # "< ''": numbers only (see _return_due_to_ready)
                "SELECT MIN(eta) FROM messages WHERE queue = ? AND state = 'delayed' AND eta < ''",
                "SELECT MIN(lease_until) FROM messages WHERE queue = ? AND state = 'inflight' "
                "AND lease_until < ''",
            ):
                row = conn.execute(sql, (queue,)).fetchone()
                if row is not None and row[0] is not None:
                    times.append(float(row[0]))
        return min(times) if times else None

    def wait(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Block until a message is ready, a delayed one is due or a lease has expired in
        ``queues``; never longer than the timeout (see :meth:`_wait`)."""
        self._wait(queues, timeout_seconds, None)

    def new_waiter(self) -> Waiter:
        """A thread that runs :meth:`_wait` and wakes the event loop through a pipe."""
        return ThreadWaiter(self._wait, name="tq-sqlite-waiter")

    def _wait(
        self, queues: Sequence[str], timeout_seconds: float, stop: threading.Event | None
    ) -> None:
        """Poll every :attr:`poll_interval_seconds`, cheaply: ``PRAGMA data_version``
        says whether another connection committed since the last look, and only then
        are ``queues`` queried again; a known due time (delayed message, lease) is
        watched by the clock. Returns early once ``stop`` is set."""
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + max(0.0, float(timeout_seconds))
        seen_version: int | None = None
        next_due: float | None = None
        ready = False
        while stop is None or not stop.is_set():
            if names:
                with _FORK_GUARD:
                    version = self._data_version()
                    changed = version != seen_version
                    if changed:
                        seen_version = version
                        ready, next_due = self._work_state(names)
                if changed and ready:
                    return
                if next_due is not None and next_due <= time.time():
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            pause = min(self.poll_interval_seconds, remaining)
            if stop is None:
                time.sleep(pause)
            else:
                stop.wait(pause)

    def _data_version(self) -> int:
        """Changes whenever another connection commits (see SQLite's PRAGMA data_version)."""
        with self._read("wait") as conn:
            row = conn.execute("PRAGMA data_version").fetchone()
        return int(row[0]) if row else 0

    def _work_state(self, queues: list[str]) -> tuple[bool, float | None]:
        """Whether a message is ready in ``queues`` now, and the earliest time a delayed
        message comes due or a lease expires there."""
        due: list[float] = []
        with self._read("wait") as conn:
            for queue in queues:
                row = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND state = 'ready'),"
                    " (SELECT MIN(eta) FROM messages WHERE queue = ?1 AND state = 'delayed'),"
                    " (SELECT MIN(lease_until) FROM messages"
                    "  WHERE queue = ?1 AND state = 'inflight')",
                    (queue,),
                ).fetchone()
                if row is None:
                    continue
                if row[0]:
                    return True, None
                due.extend(float(value) for value in row[1:] if value is not None)
        return False, min(due) if due else None

    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> list[Lease]:
        """Extend the leases still held; return the ones that are not."""
        held = list(leases)
        if not held:
            return []
        lease_seconds = check_option("lease_seconds", lease_seconds)
        lost: list[Lease] = []
        with self._write("renew") as conn:
            until = time.time() + lease_seconds
            for lease in held:
                cursor = conn.execute(
                    "UPDATE messages SET lease_until = ? "
                    "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                    (until, lease.queue, lease.message_id, lease.token),
                )
                if cursor.rowcount == 0:
                    lost.append(lease)
        return lost

    def ack(self, lease: Lease) -> bool:
        """Delete the delivered message if the lease is still held."""
        with self._write("ack") as conn:
            cursor = conn.execute(
                "DELETE FROM messages "
                "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                (lease.queue, lease.message_id, lease.token),
            )
            return cursor.rowcount > 0

    def release(self, lease: Lease) -> bool:
        """Return the message to the end of its priority level; the delivery stays counted
        (a message that keeps coming back still reaches ``max_deliveries``)."""
        return self._back_to_ready(lease, "")

    def requeue(self, lease: Lease) -> bool:
        """Return the message to the end of its priority level; the delivery stays counted."""
        return self._back_to_ready(lease, "")

    def _back_to_ready(self, lease: Lease, extra_set: str) -> bool:
        with self._write("returning a message to ready") as conn:
            cursor = conn.execute(
                f"UPDATE messages SET state = 'ready', {extra_set}seq = {_NEXT_SEQ}, "
                "lease_until = NULL, lease_token = NULL "
                "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                (lease.queue, lease.message_id, lease.token),
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            return True

    def bury(self, lease: Lease, dead: DeadLetter) -> bool:
        """Set the delivered message aside as dead, if the lease is still held."""
        with self._write("bury") as conn:
            cursor = conn.execute(
                "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, "
                "dead_at = ?, hostname = ?, failure = ?, attempts = ?, lease_until = NULL, "
                "lease_token = NULL "
                "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                (
                    str(dead.reason),
                    dead.detail,
                    time.time(),
                    dead.hostname or None,
                    dead.failure or None,
                    dead.attempts,
                    lease.queue,
                    lease.message_id,
                    lease.token,
                ),
            )
            if cursor.rowcount:
                self._trim_dead(conn, lease.queue, self.retention)
            return cursor.rowcount > 0

    def bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        """Set a message aside as dead by id, in place when the queue holds it (see the
        Store contract); retention is applied in the same transaction."""
        priority = normalize_priority(message.priority)
        now = time.time()
        record = (
            str(dead.reason),
            dead.detail,
            now,
            dead.hostname or None,
            dead.failure or None,
            dead.attempts,
        )
        with self._write("bury_payload") as conn:
            row = conn.execute(
                "SELECT state FROM messages WHERE queue = ? AND id = ?",
                (queue, message.message_id),
            ).fetchone()
            before = None if row is None else State(row[0])
            if before == State.DEAD:
                return before
            if before is None:
                conn.execute(
                    "INSERT INTO messages (queue, id, state, priority, seq, eta, task_name, "
                    "task_id, payload, created_at, delivery_count, dead_reason, dead_detail, "
                    "dead_at, hostname, failure, attempts) "
                    f"VALUES (?, ?, 'dead', ?, {_NEXT_SEQ}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        queue,
                        message.message_id,
                        priority,
                        message.eta,
                        message.task_name,
                        message.task_id,
                        bytes(message.payload),
                        now if dead.first_seen is None else float(dead.first_seen),
                        int(dead.delivery_count or 0),
                        *record,
                    ),
                )
                conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            else:
                conn.execute(
                    "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, "
                    "dead_at = ?, hostname = ?, failure = ?, attempts = ?, "
                    "lease_until = NULL, lease_token = NULL WHERE queue = ? AND id = ?",
                    (*record, queue, message.message_id),
                )
            self._trim_dead(conn, queue, self.retention)
        return before

    def replay(
        self, queue: str, message_id: str, to_queue: str | None = None, priority: int | None = None
    ) -> bool:
        """Move a dead message back to ready, delivery count reset, in one transaction."""
        return self.replay_many(queue, [message_id], to_queue, priority) == 1

    def replay_many(
        self,
        queue: str,
        message_ids: Iterable[str],
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """Replay dead messages in transactions of up to 500 (each message moves whole)."""
        new_priority = None if priority is None else normalize_priority(priority)
        target = to_queue or queue
        ids = list(dict.fromkeys(message_ids))
        replayed = 0
        for start in range(0, len(ids), 500):
            with self._write("replay") as conn:
                for message_id in ids[start : start + 500]:
                    replayed += self._replay_one(conn, queue, message_id, target, new_priority)
        return replayed

    def _replay_one(
        self,
        conn: sqlite3.Connection,
        queue: str,
        message_id: str,
        target: str,
        priority: int | None,
    ) -> int:
        if (
            target != queue
            and conn.execute(
                "SELECT 1 FROM messages WHERE queue = ? AND id = ?", (target, message_id)
            ).fetchone()
        ):
            return 0
        seq = self._take_seqs(conn, 1)
        cursor = conn.execute(
            "UPDATE OR FAIL messages SET state = 'ready', queue = ?, "
            "priority = COALESCE(?, priority), seq = ?, delivery_count = 0, "
            "dead_reason = NULL, dead_detail = NULL, dead_at = NULL, hostname = NULL, "
            "failure = NULL, attempts = NULL, lease_until = NULL, lease_token = NULL "
            "WHERE queue = ? AND id = ? AND state = 'dead'",
            (target, priority, seq, queue, message_id),
        )
        return int(cursor.rowcount > 0)

    def trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        with self._write("trim_dead") as conn:
            return self._trim_dead(conn, queue, policy)

    @staticmethod
    def _trim_dead(conn: sqlite3.Connection, queue: str, policy: RetentionPolicy) -> int:
        """Drop dead messages past the policy's age, then the oldest beyond its count."""
        aged = conn.execute(
            "DELETE FROM messages WHERE queue = ? AND state = 'dead' AND dead_at < ?",
            (queue, time.time() - policy.ttl_seconds),
        ).rowcount
        excess = conn.execute(
            "DELETE FROM messages WHERE queue = ? AND state = 'dead' AND id IN ("
            "SELECT id FROM messages WHERE queue = ? AND state = 'dead' "
            "ORDER BY dead_at DESC, seq DESC LIMIT -1 OFFSET ?)",
            (queue, queue, policy.max_per_queue),
        ).rowcount
        return int(aged) + int(excess)

    def dead_failure(self, queue: str, message_id: str) -> bytes:
        with self._read("dead_failure") as conn:
            row = conn.execute(
                "SELECT failure FROM messages WHERE queue = ? AND id = ? AND state = 'dead'",
                (queue, message_id),
            ).fetchone()
        return _blob(row[0]) if row and row[0] is not None else b""

    def ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        with self._read("ready_levels") as conn:
            rows = conn.execute(
                "SELECT priority, COUNT(*), MIN(created_at) FROM messages "
                "WHERE queue = ? AND state = 'ready' GROUP BY priority",
                (queue,),
            ).fetchall()
        levels: dict[int, tuple[int, float | None]] = {}
        for p, n, c in rows:  # a priority that is not a number counts at 0 (corrupt rows)
            count, oldest = levels.get(_int_or(p, 0), (0, None))
            first = float(c) if _is_number(c) else None
            if oldest is not None and (first is None or oldest < first):
                first = oldest
            levels[_int_or(p, 0)] = (count + int(n), first)
        return levels

    # -- inspect and administer -------------------------------------------
    def queues(self) -> list[str]:
        """Queues holding at least one message, sorted (read from the state index)."""
        with self._read("queues") as conn:
            rows = conn.execute("SELECT DISTINCT queue FROM messages ORDER BY queue").fetchall()
        return [str(row[0]) for row in rows]

    def counts(self, queue: str) -> QueueCounts:
        """How many of the queue's messages are in each state."""
        with self._read("counts") as conn:
            rows = conn.execute(
                "SELECT state, COUNT(*) FROM messages WHERE queue = ? GROUP BY state", (queue,)
            ).fetchall()
        by_state = {str(state): int(count) for state, count in rows}
        return QueueCounts(**{state.value: by_state.get(state.value, 0) for state in State})

    def info(self, queue: str, message_id: str) -> MessageInfo | None:
        """Describe one message, or None."""
        with self._read("info") as conn:
            row = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM messages WHERE queue = ? AND id = ?",
                (queue, message_id),
            ).fetchone()
        return None if row is None else _message_info(row)

    def list_messages(
        self, queue: str, state: State, offset: int = 0, limit: int = 100
    ) -> list[MessageInfo]:
        """A page of the queue's messages in ``state``, in hand-out/due/expiry/death order
        (waiting ones in arrival order). Negative offsets and limits count as 0."""
        state = _state(state)
        with self._read("list_messages") as conn:
            rows = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM messages WHERE queue = ? AND state = ? "
                f"ORDER BY {_LIST_ORDER[state]} LIMIT ? OFFSET ?",
                (queue, state.value, max(0, limit), max(0, offset)),
            ).fetchall()
        return [_message_info(row) for row in rows]

    def payload(self, queue: str, message_id: str) -> bytes | None:
        """The stored payload, in any state, or None."""
        with self._read("payload") as conn:
            row = conn.execute(
                "SELECT payload FROM messages WHERE queue = ? AND id = ?", (queue, message_id)
            ).fetchone()
        return None if row is None else _blob(row[0])

    def cancel(self, queue: str, message_id: str) -> bool:
        """Delete a ready, delayed or waiting message; False if none was there."""
        with self._write("cancel") as conn:
            cursor = conn.execute(
                f"DELETE FROM messages WHERE queue = ? AND id = ? AND state IN {_QUEUED}",
                (queue, message_id),
            )
            return cursor.rowcount > 0

    def set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        """Change the priority of a ready, delayed or waiting message (keeping its place in
        arrival order); False if none was there. An invalid priority raises PriorityError."""
        value = normalize_priority(priority)
        with self._write("set_priority") as conn:
            cursor = conn.execute(
                "UPDATE messages SET priority = ? "
                f"WHERE queue = ? AND id = ? AND state IN {_QUEUED}",
                (value, queue, message_id),
            )
            return cursor.rowcount > 0

    def release_waiting(self, queue: str, message_id: str) -> bool:
        """Move a waiting message to delayed (ETA in the future) or to the end of ready."""
        with self._write("release_waiting") as conn:
            cursor = conn.execute(
                "UPDATE messages SET "
                "state = CASE WHEN eta IS NOT NULL AND eta > ? THEN 'delayed' ELSE 'ready' END, "
                f"seq = {_NEXT_SEQ} WHERE queue = ? AND id = ? AND state = 'waiting'",
                (time.time(), queue, message_id),
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            return True

    def purge(self, queue: str, state: State = State.READY) -> int:
        """Delete the queue's messages in ``state``; return how many went."""
        state = _state(state)
        with self._write("purge") as conn:
            cursor = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND state = ?", (queue, state.value)
            )
            return cursor.rowcount

    def delete_queue(self, queue: str) -> None:
        """Delete every message of the queue, in every state (bindings stay: unbind them)."""
        with self._write("delete_queue") as conn:
            conn.execute("DELETE FROM messages WHERE queue = ?", (queue,))
            conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))

    # -- queue lifetime -----------------------------------------------------
    def declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        """Record or refresh the queue's lifetime (neither limit: forget it)."""
        expires, ttl = lifetime.expires_seconds, lifetime.message_ttl_seconds
        with self._write("declare_queue") as conn:
            if expires is None and ttl is None:
                conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))
                return
            deadline = None if expires is None else time.time() + float(expires)
            conn.execute(
                "INSERT INTO queue_lifetimes (queue, expires_seconds, message_ttl_seconds, "
                "deadline) VALUES (?, ?, ?, ?) ON CONFLICT (queue) DO UPDATE SET "
                "expires_seconds = excluded.expires_seconds, "
                "message_ttl_seconds = excluded.message_ttl_seconds, deadline = excluded.deadline",
                (queue, expires, ttl, deadline),
            )

    def lifetime(self, queue: str) -> QueueLifetime | None:
        with self._read("lifetime") as conn:
            row = conn.execute(
                "SELECT expires_seconds, message_ttl_seconds FROM queue_lifetimes WHERE queue = ?",
                (queue,),
            ).fetchone()
        if row is None:
            return None
        return QueueLifetime(
            None if row[0] is None else float(row[0]), None if row[1] is None else float(row[1])
        )

    def expire_queues(self) -> list[str]:
        """Delete the queues past their deadline with their messages and bindings."""
        now = time.time()
        with self._read("expire_queues") as conn:
            if not conn.execute(
                "SELECT 1 FROM queue_lifetimes WHERE deadline <= ? LIMIT 1", (now,)
            ).fetchone():
                return []
        with self._write("expire_queues") as conn:
            gone = [
                str(row[0])
                for row in conn.execute(
                    "SELECT queue FROM queue_lifetimes WHERE deadline <= ? ORDER BY queue", (now,)
                ).fetchall()
            ]
            for queue in gone:
                conn.execute("DELETE FROM messages WHERE queue = ?", (queue,))
                conn.execute("DELETE FROM bindings WHERE queue = ?", (queue,))
                conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))
        return gone

    # -- bindings -----------------------------------------------------------
    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        """Record or refresh a binding (None: it never expires); drops expired ones."""
        now = time.time()
        expires_at = None if expires_seconds is None else now + float(expires_seconds)
        with self._write("bind") as conn:
            conn.execute(
                "DELETE FROM bindings WHERE exchange = ? AND expires_at <= ?",
                (binding.exchange, now),
            )
            conn.execute(
                "INSERT INTO bindings (exchange, routing_key, pattern, queue, expires_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (exchange, routing_key, pattern, queue) "
                "DO UPDATE SET expires_at = excluded.expires_at",
                (binding.exchange, binding.routing_key, binding.pattern, binding.queue, expires_at),
            )

    def unbind(self, binding: Binding) -> None:
        """Forget a binding (nothing happens if it is not recorded)."""
        with self._write("unbind") as conn:
            conn.execute(
                "DELETE FROM bindings "
                "WHERE exchange = ? AND routing_key = ? AND pattern = ? AND queue = ?",
                (binding.exchange, binding.routing_key, binding.pattern, binding.queue),
            )

    def bindings(self, exchange: str) -> list[Binding]:
        """Unexpired bindings of ``exchange``, ordered by queue, routing key and pattern."""
        with self._read("bindings") as conn:
            rows = conn.execute(
                "SELECT exchange, routing_key, pattern, queue FROM bindings "
                "WHERE exchange = ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY queue, routing_key, pattern",
                (exchange, time.time()),
            ).fetchall()
        return [Binding(str(e), str(k), str(p), str(q)) for e, k, p, q in rows]

    # -- workers ----------------------------------------------------------
    def heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        """Record ``worker`` as alive for ``ttl_seconds``; drops workers long expired."""
        now = time.time()
        encoded = json.dumps(info, default=str, sort_keys=True)
        with self._write("heartbeat") as conn:
            conn.execute("DELETE FROM workers WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO workers (worker, seen_at, expires_at, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (worker) DO UPDATE SET seen_at = excluded.seen_at, "
                "expires_at = excluded.expires_at, info = excluded.info",
                (worker, now, now + float(ttl_seconds), encoded),
            )

    def workers(self) -> list[WorkerBeat]:
        """Workers whose last heartbeat has not expired, by name."""
        with self._read("workers") as conn:
            rows = conn.execute(
                "SELECT worker, seen_at, info FROM workers WHERE expires_at > ? ORDER BY worker",
                (time.time(),),
            ).fetchall()
        beats = []
        for worker, seen_at, raw in rows:
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            beats.append(
                WorkerBeat(str(worker), float(seen_at), info if isinstance(info, dict) else {})
            )
        return beats


def _migrate(conn: sqlite3.Connection, statement: str) -> None:
    """Run one upgrade statement; adding a column the table already has is a no-op."""
    words = statement.split()
    if words[:2] == ["ALTER", "TABLE"] and words[3:5] == ["ADD", "COLUMN"]:
        columns = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({words[2]})")}
        if words[5] in columns:
            return
    conn.execute(statement)


def _state(value: State | str) -> State:
    try:
        return State(value)
    except ValueError:
        raise ConfigurationError(
            f"unknown message state {value!r}: use one of {', '.join(s.value for s in State)}"
        ) from None


def _message_info(row: Sequence[Any]) -> MessageInfo:
    """A row as MessageInfo; a column holding a value of the wrong type reads as unknown
    (the next fetch of a queued one sets it aside as corrupt), never as an error."""
    queue, message_id, state, priority, count, task_name, task_id, eta, reason, detail = row[:10]
    created_at, dead_at, hostname, attempts = row[10:]
    try:
        known_state = State(state)
    except ValueError:
        known_state, reason, detail = State.DEAD, DeadReason.CORRUPT.value, f"state {state!r}"
    return MessageInfo(
        queue=str(queue),
        message_id=str(message_id),
        state=known_state,
        priority=_int_or(priority, 0),
        delivery_count=_int_or(count, 0),
        task_name=str(task_name),
        task_id=str(task_id),
        eta=float(eta) if _is_number(eta) else None,
        dead_reason=None if reason is None else str(reason),
        dead_detail=None if detail is None else str(detail),
        created_at=float(created_at) if _is_number(created_at) else None,
        dead_at=float(dead_at) if _is_number(dead_at) else None,
        hostname=None if hostname is None else str(hostname) or None,
        attempts=None if attempts is None else _int_or(attempts, 0),
    )


def _blob(value: Any) -> bytes:
    """A BLOB column's bytes; text (a corrupt row) as its UTF-8 bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")


class _CorruptRow(ValueError):
    """A row whose columns cannot be read as a message."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_or(value: Any, default: int) -> int:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return default


def _candidate(queue: str, row: Sequence[Any]) -> tuple[int, int, str, str, int]:
    """The sort key and fields of a ready row (priority, seq, id, delivery_count, rowid)."""
    for column, value in (("priority", row[0]), ("seq", row[1]), ("delivery_count", row[3])):
        if _int_or(value, -1) != value or not (column != "priority" or 0 <= value <= 255):
            raise _CorruptRow(f"column {column} holds {value!r}"[:300])
    if not isinstance(row[2], str):
        raise _CorruptRow(f"column id holds {row[2]!r}"[:300])
    return (-int(row[0]), int(row[1]), queue, row[2], int(row[3]))


def _bury_corrupt(conn: sqlite3.Connection, rowid: int, detail: str, now: float) -> None:
    """Set a message whose row cannot be read aside as dead (reason corrupt), in place."""
    conn.execute(
        "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, dead_at = ?, "
        "lease_until = NULL, lease_token = NULL WHERE rowid = ?",
        (DeadReason.CORRUPT.value, detail[:300], now, rowid),
    )
