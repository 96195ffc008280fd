"""The SQLite store's schema, its version (``PRAGMA user_version``) and its migrations.

One ``messages`` table holds every message in every state. Counts per queue, state and
priority are kept in ``message_counts`` by triggers, in the same transaction as the
change that moves a message, so inspection answers from it without reading messages
(the triggers fire for any writer of the file, an older tq or an operator's sqlite3
included).
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress

from ...errors import StoreError

__all__ = ["SCHEMA_VERSION", "ensure_schema"]

#: Recorded in ``PRAGMA user_version``; bump it (and migrate) when the schema changes.
SCHEMA_VERSION = 10

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

# -- schema 5: counts kept by triggers, the oldest ready message and tasks by index -----
_COUNTS_TABLE = """
    CREATE TABLE IF NOT EXISTS message_counts (
        queue    TEXT    NOT NULL,
        state    TEXT    NOT NULL,
        priority INTEGER NOT NULL,
        n        INTEGER NOT NULL,
        PRIMARY KEY (queue, state, priority)
    ) WITHOUT ROWID
    """
_COUNT_NEW = """
        INSERT INTO message_counts (queue, state, priority, n)
            VALUES (new.queue, new.state, new.priority, 1)
            ON CONFLICT (queue, state, priority) DO UPDATE SET n = n + 1;
    """
_UNCOUNT_OLD = """
        DELETE FROM message_counts WHERE queue = old.queue AND state = old.state
            AND priority = old.priority AND n <= 1;
        UPDATE message_counts SET n = n - 1
            WHERE queue = old.queue AND state = old.state AND priority = old.priority;
    """
_COUNT_TRIGGERS = (
    f"""
    CREATE TRIGGER IF NOT EXISTS message_counts_on_insert AFTER INSERT ON messages
    BEGIN {_COUNT_NEW} END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS message_counts_on_delete AFTER DELETE ON messages
    BEGIN {_UNCOUNT_OLD} END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS message_counts_on_update
    AFTER UPDATE OF queue, state, priority ON messages
    WHEN old.queue IS NOT new.queue OR old.state IS NOT new.state
        OR old.priority IS NOT new.priority
    BEGIN {_UNCOUNT_OLD} {_COUNT_NEW} END
    """,
)
# Counts of the messages already there when the triggers arrive (an upgrade).
_COUNT_EXISTING = """
    INSERT INTO message_counts (queue, state, priority, n)
        SELECT queue, state, priority, COUNT(*) FROM messages
        GROUP BY queue, state, priority
    """
# The oldest ready message of each priority: one index seek per level.
_READY_AGE_INDEX = """
    CREATE INDEX IF NOT EXISTS messages_ready_by_age
        ON messages (queue, priority, created_at) WHERE state = 'ready'
    """
# A message by Celery task id (messages without one stay out of the index).
_TASK_INDEX = """
    CREATE INDEX IF NOT EXISTS messages_by_task
        ON messages (queue, task_id) WHERE task_id != ''
    """
_SCHEMA_5 = (
    _COUNTS_TABLE,
    "DELETE FROM message_counts",
    _COUNT_EXISTING,
    *_COUNT_TRIGGERS,
    _READY_AGE_INDEX,
    _TASK_INDEX,
)

# -- schema 6: dependencies (see store.contract.dependencies and sqlite.dependencies) ---
# A message published with depends_on: its parents (a JSON list of task ids), what a
# parent's failure does to it, and the deadline of its wait.
_DEPENDENT_COLUMNS = (
    "ALTER TABLE messages ADD COLUMN parents TEXT",
    "ALTER TABLE messages ADD COLUMN on_parent_failure TEXT",
    "ALTER TABLE messages ADD COLUMN dependency_deadline REAL",
)
# Waiting messages by deadline: a fetch finds the first one in one seek.
_DEADLINE_INDEX = """
    CREATE INDEX IF NOT EXISTS messages_waiting_by_deadline
        ON messages (queue, dependency_deadline)
        WHERE state = 'waiting' AND dependency_deadline IS NOT NULL
    """
# parent task id -> dependent message, while that message waits or lies dead; status:
# pending (no outcome yet), satisfied (done), failed (its failure set the message aside).
_EDGES_TABLE = """
    CREATE TABLE IF NOT EXISTS dependency_edges (
        parent TEXT NOT NULL,
        queue  TEXT NOT NULL,
        id     TEXT NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (parent, queue, id)
    ) WITHOUT ROWID
    """
_EDGES_BY_CHILD = """
    CREATE INDEX IF NOT EXISTS dependency_edges_by_child ON dependency_edges (queue, id, status)
    """
# One outcome per finished task, kept until expires_at.
_COMPLETIONS_TABLE = """
    CREATE TABLE IF NOT EXISTS completions (
        task_id    TEXT PRIMARY KEY,
        succeeded  INTEGER NOT NULL,
        detail     TEXT NOT NULL DEFAULT '',
        expires_at REAL NOT NULL
    ) WITHOUT ROWID
    """
_COMPLETIONS_BY_EXPIRY = (
    "CREATE INDEX IF NOT EXISTS completions_by_expiry ON completions (expires_at)"
)
# Task ids of messages that died (any path), until the writer cascades to their dependents
# in the same transaction: the triggers below fill it, sqlite.cascade empties it.
_DEATHS_TABLE = """
    CREATE TABLE IF NOT EXISTS dependency_deaths (
        task_id TEXT PRIMARY KEY,
        detail  TEXT NOT NULL
    ) WITHOUT ROWID
    """
_JOURNAL_DEATH = """
        INSERT OR IGNORE INTO dependency_deaths (task_id, detail)
            VALUES (new.task_id, 'dead: ' || COALESCE(new.dead_reason, 'unknown'));
    """
_DEPENDENCY_TRIGGERS = (
    f"""
    CREATE TRIGGER IF NOT EXISTS messages_died AFTER UPDATE OF state ON messages
    WHEN new.state = 'dead' AND old.state IS NOT 'dead' AND new.task_id != ''
    BEGIN {_JOURNAL_DEATH} END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS messages_stored_dead AFTER INSERT ON messages
    WHEN new.state = 'dead' AND new.task_id != ''
    BEGIN {_JOURNAL_DEATH} END
    """,
    # a dependent that goes (cancelled, purged, trimmed) leaves the graph; one released
    # (by its parents, an operator or a replay) leaves it by sqlite.cascade.leave_graph
    """
    CREATE TRIGGER IF NOT EXISTS dependents_leave_when_deleted AFTER DELETE ON messages
    WHEN old.parents IS NOT NULL
    BEGIN DELETE FROM dependency_edges WHERE queue = old.queue AND id = old.id; END
    """,
)
_SCHEMA_6 = (
    _DEADLINE_INDEX,
    _EDGES_TABLE,
    _EDGES_BY_CHILD,
    _COMPLETIONS_TABLE,
    _COMPLETIONS_BY_EXPIRY,
    _DEATHS_TABLE,
    *_DEPENDENCY_TRIGGERS,
)

# A lease under a concurrency limit that ends in any way (settled, expired, purged)
# frees its slots and wakes the lanes waiting for a slot; a lane with no message left
# goes. Only a lane with a concurrency tag holds slots (schema 10: a rate-only message
# skips that work). In a lane as tq writes it (JSON of sorted [kind, name, key]), '["'
# opens a tag and never occurs inside a name or key (a quote there is escaped).
_HOLDS_SLOTS = "instr(old.lane, '[\"concurrency\",') > 0"
_LIMIT_TRIGGERS = (
    f"""
    CREATE TRIGGER IF NOT EXISTS limited_lease_ends AFTER UPDATE OF state ON messages
    WHEN old.lane IS NOT NULL AND old.state = 'inflight' AND new.state IS NOT 'inflight'
        AND {_HOLDS_SLOTS}
    BEGIN
        DELETE FROM limit_slots WHERE queue = old.queue AND id = old.id;
        UPDATE lanes SET blocked_until = NULL, waits_for_slot = 0 WHERE waits_for_slot = 1;
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS slot_holder_goes AFTER DELETE ON messages
    WHEN old.lane IS NOT NULL AND {_HOLDS_SLOTS}
    BEGIN
        DELETE FROM limit_slots WHERE queue = old.queue AND id = old.id;
        UPDATE lanes SET blocked_until = NULL, waits_for_slot = 0
            WHERE old.state = 'inflight' AND waits_for_slot = 1;
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS limited_message_goes AFTER DELETE ON messages
    WHEN old.lane IS NOT NULL
    BEGIN
        DELETE FROM lanes WHERE queue = old.queue AND lane = old.lane AND NOT EXISTS
            (SELECT 1 FROM messages WHERE queue = old.queue AND lane = old.lane);
    END
    """,
)
# -- schema 7: limits (see sqlite.lanes): a limited message's lane, definitions, GCRA
# state, concurrency slots (held by lease tokens), start counts, lanes and their turns
_LIMIT_TABLES = (
    """
    CREATE INDEX IF NOT EXISTS messages_by_lane
        ON messages (queue, lane, state, priority DESC, seq) WHERE lane IS NOT NULL
    """,
    """
    CREATE TABLE IF NOT EXISTS limits (
        name TEXT PRIMARY KEY, kind TEXT NOT NULL, interval_us INTEGER NOT NULL,
        tolerance_us INTEGER NOT NULL, slots INTEGER NOT NULL, origin TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS limit_state (
        name TEXT NOT NULL, key TEXT NOT NULL, tat_us INTEGER NOT NULL,
        PRIMARY KEY (name, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS limit_slots (
        name TEXT NOT NULL, key TEXT NOT NULL, queue TEXT NOT NULL, id TEXT NOT NULL,
        token TEXT NOT NULL, PRIMARY KEY (name, key, queue, id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS limit_slots_by_message ON limit_slots (queue, id)",
    """
    CREATE TABLE IF NOT EXISTS limit_starts (
        name TEXT NOT NULL, second INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (name, second)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS lanes (
        queue TEXT NOT NULL, lane TEXT NOT NULL, turn INTEGER NOT NULL DEFAULT 0,
        blocked_until REAL, waits_for_slot INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, lane)
    ) WITHOUT ROWID
    """,
    *_LIMIT_TRIGGERS,
)

# -- schema 8: indexes for limits at fetch. Plain (unlimited) ready messages in fetch
# order, apart from limited ones: a fetch finds the best plain message in one seek
# however many limited ones wait ahead of it (those it reaches through messages_by_lane)
_PLAIN_READY_INDEX = """
    CREATE INDEX IF NOT EXISTS messages_plain_ready
        ON messages (queue, priority DESC, seq) WHERE state = 'ready' AND lane IS NULL
    """
# lanes waiting for a slot, which every end of a limited lease wakes: found without
# reading every lane (one per key of a per-key limit)
_SLOT_WAITERS_INDEX = """
    CREATE INDEX IF NOT EXISTS lanes_waiting_for_slot ON lanes (queue) WHERE waits_for_slot = 1
    """
_SCHEMA_8 = (_PLAIN_READY_INDEX, _SLOT_WAITERS_INDEX)

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
        parents        TEXT,
        on_parent_failure TEXT,
        dependency_deadline REAL,
        lane           TEXT,
        PRIMARY KEY (queue, id)
    )
    """,
    # Fetch order within a queue.
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
        info       TEXT NOT NULL DEFAULT '{}',
        kept_until REAL
    )
    """,
    *_SCHEMA_5,
    *_SCHEMA_6,
    *_LIMIT_TABLES,
    *_SCHEMA_8,
)

#: Schema upgrades: from each version, the statements that lead to the next one.
_MIGRATIONS = {
    1: (
        "ALTER TABLE messages ADD COLUMN hostname TEXT",
        "ALTER TABLE messages ADD COLUMN failure BLOB",
    ),
    2: ("ALTER TABLE messages ADD COLUMN attempts INTEGER",),
    3: ("ALTER TABLE messages ADD COLUMN expires_at REAL", _EXPIRY_INDEX, _LIFETIMES_TABLE),
    4: _SCHEMA_5,
    5: (*_DEPENDENT_COLUMNS, *_SCHEMA_6),
    6: ("ALTER TABLE messages ADD COLUMN lane TEXT", *_LIMIT_TABLES),
    7: _SCHEMA_8,
    # a lost worker's last beat is kept until kept_until (NULL: dropped once expired)
    8: ("ALTER TABLE workers ADD COLUMN kept_until REAL",),
    # the end of a rate-only message's lease no longer does the slot work
    9: (
        "DROP TRIGGER IF EXISTS limited_lease_ends",
        "DROP TRIGGER IF EXISTS limited_message_goes",
        *_LIMIT_TRIGGERS,
    ),
}


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new database or upgrade an older one, in one transaction;
    refuse a database written by a newer tq."""
    if _user_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _user_version(conn)
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
            f"SQLite store {path} was written by a newer tq (schema version {version}, this "
            f"tq knows up to {SCHEMA_VERSION}): upgrade tq on this machine or use another "
            "database file"
        )


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def _migrate(conn: sqlite3.Connection, statement: str) -> None:
    """Run one upgrade statement; adding a column the table already has is a no-op."""
    words = statement.split()
    if words[:2] == ["ALTER", "TABLE"] and words[3:5] == ["ADD", "COLUMN"]:
        columns = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({words[2]})")}
        if words[5] in columns:
            return
    conn.execute(statement)
