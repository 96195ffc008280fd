"""Administration on SQLite: cancel, reprioritise, release waiting messages, purge and
delete queues, each one transaction."""

from __future__ import annotations

import time

from ..contract import Administration
from ..model import State
from .db import UsesDatabase
from .rows import NEXT_SEQ, QUEUED


class SQLiteAdministration(UsesDatabase, Administration):
    """What an operator does to queued messages."""

    def _cancel(self, queue: str, message_id: str) -> bool:
        with self.db.write("cancel") as conn:
            cursor = conn.execute(
                f"DELETE FROM messages WHERE queue = ? AND id = ? AND state IN {QUEUED}",
                (queue, message_id),
            )
            return cursor.rowcount > 0

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
