"""Inspection on SQLite: read-only, from kept counts and indexes.

Counts per state and priority come from ``message_counts`` (kept by triggers, see
:mod:`.schema`), so ``counts``, ``ready_levels`` and ``queues`` cost O(levels), not a
read of every message; the oldest ready message of a level is one seek in the
``messages_ready_by_age`` index, and a Celery task id one seek in ``messages_by_task``.
"""

from __future__ import annotations

from ..contract import Inspection
from ..model import MessageInfo, QueueCounts, State
from .db import UsesDatabase
from .rows import INFO_COLUMNS, blob, int_or, is_number, message_info

#: ``list_messages`` order per state: hand-out, due, expiry, death, arrival.
_LIST_ORDER = {
    State.READY: "priority DESC, seq",
    State.DELAYED: "eta, seq",
    State.INFLIGHT: "lease_until, seq",
    State.DEAD: "dead_at, seq",
    State.WAITING: "seq",
}


class SQLiteInspection(UsesDatabase, Inspection):
    """Counts, levels, one message, pages of messages, payloads."""

    def _queues(self) -> list[str]:
        with self.db.read("queues") as conn:
            rows = conn.execute("SELECT DISTINCT queue FROM message_counts ORDER BY queue")
            return [str(row[0]) for row in rows.fetchall()]

    def _counts(self, queue: str) -> QueueCounts:
        """Rows of no known state (damaged from outside) count in no state."""
        with self.db.read("counts") as conn:
            rows = conn.execute(
                "SELECT state, SUM(n) FROM message_counts WHERE queue = ? GROUP BY state",
                (queue,),
            ).fetchall()
        by_state = {str(state): int(count) for state, count in rows}
        return QueueCounts(**{state.value: by_state.get(state.value, 0) for state in State})

    def _ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        """A priority that is not a number (a damaged row) counts at 0."""
        levels: dict[int, tuple[int, float | None]] = {}
        with self.db.read("ready_levels") as conn:
            rows = conn.execute(
                "SELECT priority, n FROM message_counts WHERE queue = ? AND state = 'ready'",
                (queue,),
            ).fetchall()
            for priority, n in rows:
                row = conn.execute(
                    "SELECT MIN(created_at) FROM messages "
                    "WHERE queue = ? AND state = 'ready' AND priority = ?",
                    (queue, priority),
                ).fetchone()
                first = float(row[0]) if row and is_number(row[0]) else None
                count, oldest = levels.get(int_or(priority, 0), (0, None))
                if oldest is not None and (first is None or oldest < first):
                    first = oldest
                levels[int_or(priority, 0)] = (count + int(n), first)
        return levels

    def _info(self, queue: str, message_id: str) -> MessageInfo | None:
        with self.db.read("info") as conn:
            row = conn.execute(
                f"SELECT {INFO_COLUMNS} FROM messages WHERE queue = ? AND id = ?",
                (queue, message_id),
            ).fetchone()
        return None if row is None else message_info(row)

    def _find_task(self, queue: str, task_id: str) -> MessageInfo | None:
        """Of several messages of one task (a retry, a replayed copy), the latest to arrive."""
        with self.db.read("find_task") as conn:
            row = conn.execute(
                f"SELECT {INFO_COLUMNS} FROM messages "
                "WHERE queue = ? AND task_id = ? AND task_id != '' "
                "ORDER BY created_at DESC, seq DESC LIMIT 1",
                (queue, task_id),
            ).fetchone()
        return None if row is None else message_info(row)

    def _list_messages(
        self, queue: str, state: State, offset: int, limit: int
    ) -> list[MessageInfo]:
        with self.db.read("list_messages") as conn:
            rows = conn.execute(
                f"SELECT {INFO_COLUMNS} FROM messages WHERE queue = ? AND state = ? "
                f"ORDER BY {_LIST_ORDER[state]} LIMIT ? OFFSET ?",
                (queue, state.value, limit, offset),
            ).fetchall()
        return [message_info(row) for row in rows]

    def _payload(self, queue: str, message_id: str) -> bytes | None:
        with self.db.read("payload") as conn:
            row = conn.execute(
                "SELECT payload FROM messages WHERE queue = ? AND id = ?", (queue, message_id)
            ).fetchone()
        return None if row is None else blob(row[0])
