"""Administration on SQLite: cancel, reprioritise, release waiting messages, purge and
delete queues, each one transaction."""

from __future__ import annotations

import time

from ..contract import Administration
from ..model import RetentionPolicy, State
from .cascade import drain_deaths, journal_death, leave_graph
from .db import UsesDatabase
from .rows import NEXT_SEQ, QUEUED


class SQLiteAdministration(UsesDatabase, Administration):
    """What an operator does to queued messages."""

    retention: RetentionPolicy
    dependency_record_ttl_seconds: float

    def _cancel(self, queue: str, message_id: str) -> bool:
        """A cancelled task counts as failed for its dependents; a cancelled dependent
        leaves its parents' children (trigger)."""
        with self.db.write("cancel") as conn:
            row = conn.execute(
                f"DELETE FROM messages WHERE queue = ? AND id = ? AND state IN {QUEUED} "
                "RETURNING task_id",
                (queue, message_id),
            ).fetchone()
            if row is None:
                return False
            if isinstance(row[0], str) and row[0]:
                journal_death(conn, row[0], "cancelled")
                drain_deaths(conn, time.time(), self.dependency_record_ttl_seconds, self.retention)
            return True

    def _set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        """The message keeps its ``seq``, so its place in arrival order."""
        with self.db.write("set_priority") as conn:
            cursor = conn.execute(
                f"UPDATE messages SET priority = ? WHERE queue = ? AND id = ? AND state IN {QUEUED}",
                (priority, queue, message_id),
            )
            return cursor.rowcount > 0

    def _release_waiting(self, queue: str, message_id: str) -> bool:
        with self.db.write("release_waiting") as conn:
            cursor = conn.execute(
                "UPDATE messages SET "
                "state = CASE WHEN eta IS NOT NULL AND eta > ? THEN 'delayed' ELSE 'ready' END, "
                f"seq = {NEXT_SEQ} WHERE queue = ? AND id = ? AND state = 'waiting'",
                (time.time(), queue, message_id),
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            leave_graph(conn, queue, message_id)  # released by hand: no parent holds it
            return True

    def _purge(self, queue: str, state: State) -> int:
        with self.db.write("purge") as conn:
            cursor = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND state = ?", (queue, state.value)
            )
            return cursor.rowcount

    def _delete_queue(self, queue: str) -> None:
        with self.db.write("delete_queue") as conn:
            conn.execute("DELETE FROM messages WHERE queue = ?", (queue,))
            conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))
