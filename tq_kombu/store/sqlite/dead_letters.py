"""Dead letters on SQLite: a dead message stays in its row (state ``dead``), with its
reason, failure record and time of death; retention trims in the same transaction."""

from __future__ import annotations

import sqlite3
import time

from ..contract import DeadLetters
from ..model import DeadLetter, NewMessage, RetentionPolicy, State
from .cascade import drain_deaths, leave_graph, revive
from .db import UsesDatabase
from .lanes import note_lane
from .rows import NEXT_SEQ, blob, take_seqs, trim_dead

#: Dead messages replayed per transaction by ``replay_many`` (each message moves whole).
REPLAY_BATCH = 500


class SQLiteDeadLetters(UsesDatabase, DeadLetters):
    """Burial by id, replay, retention and failure records."""

    retention: RetentionPolicy
    dependency_record_ttl_seconds: float

    def _bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        now = time.time()
        record = (
            str(dead.reason),
            dead.detail,
            now,
            dead.hostname or None,
            dead.failure or None,
            dead.attempts,
        )
        with self.db.write("bury_payload") as conn:
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
                    f"VALUES (?, ?, 'dead', ?, {NEXT_SEQ}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        queue,
                        message.message_id,
                        message.priority,
                        message.eta,
                        message.task_name,
                        message.task_id,
                        message.payload,
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
            trim_dead(conn, queue, self.retention)
            drain_deaths(conn, now, self.dependency_record_ttl_seconds, self.retention)
        return before

    def _replay_many(
        self, queue: str, message_ids: list[str], to_queue: str, priority: int | None
    ) -> int:
        replayed = 0
        for start in range(0, len(message_ids), REPLAY_BATCH):
            with self.db.write("replay") as conn:
                for message_id in message_ids[start : start + REPLAY_BATCH]:
                    replayed += _replay_one(conn, queue, message_id, to_queue, priority)
        return replayed

    def _trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        with self.db.write("trim_dead") as conn:
            return trim_dead(conn, queue, policy)

    def _dead_failure(self, queue: str, message_id: str) -> bytes:
        with self.db.read("dead_failure") as conn:
            row = conn.execute(
                "SELECT failure FROM messages WHERE queue = ? AND id = ? AND state = 'dead'",
                (queue, message_id),
            ).fetchone()
        return blob(row[0]) if row and row[0] is not None else b""


def _replay_one(
    conn: sqlite3.Connection, queue: str, message_id: str, target: str, priority: int | None
) -> int:
    """Move one dead message to the end of ready in ``target``; 0 if it is not dead or
    ``target`` holds its id already."""
    if (
        target != queue
        and conn.execute(
            "SELECT 1 FROM messages WHERE queue = ? AND id = ?", (target, message_id)
        ).fetchone()
    ):
        return 0
    seq = take_seqs(conn, 1)
    cursor = conn.execute(
        "UPDATE OR FAIL messages SET state = 'ready', queue = ?, "
        "priority = COALESCE(?, priority), seq = ?, delivery_count = 0, "
        "dead_reason = NULL, dead_detail = NULL, dead_at = NULL, hostname = NULL, "
        "failure = NULL, attempts = NULL, lease_until = NULL, lease_token = NULL "
        "WHERE queue = ? AND id = ? AND state = 'dead' RETURNING task_id, lane",
        (target, priority, seq, queue, message_id),
    )
    row = cursor.fetchone()
    if row is None:
        return 0
    if isinstance(row[1], str):
        note_lane(conn, target, row[1])  # a limited message: its lane in the target queue
    leave_graph(conn, queue, message_id)  # a replayed dependent runs as it is
    if isinstance(row[0], str) and row[0]:
        revive(conn, row[0])  # the dependents its failure set aside wait again
    return 1
