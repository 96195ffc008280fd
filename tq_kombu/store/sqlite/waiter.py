"""Waiting for work on SQLite: SQLite cannot block on a change, so a wait polls, cheaply.

``PRAGMA data_version`` says whether another connection committed since the last look,
and only then are the queues queried again; a known due time (a delayed message, a
lease) is watched by the clock. An event loop gets the same wait in a thread
(:class:`~tq_kombu.store.waiting.ThreadWaiter`), whose pipe wakes the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ..waiting import ThreadWaiter, Waiter
from .db import FORK_GUARD, UsesDatabase
from .lanes import lane_work, limited_queues
from .rows import is_number


class SQLiteWaiting(UsesDatabase):
    """The hot path's wait and the event-loop waiter."""

    #: Seconds between two checks for work while a wait blocks.
    poll_interval_seconds: float = 0.05

    def _wait(self, queues: list[str], timeout_seconds: float) -> None:
        self._poll(queues, timeout_seconds, None)

    def new_waiter(self) -> Waiter:
        """A thread that runs the wait and wakes the event loop through a pipe."""
        return ThreadWaiter(self._poll, name="tq-sqlite-waiter")

    def _poll(
        self, queues: Sequence[str], timeout_seconds: float, stop: threading.Event | None
    ) -> None:
        """Return once a message is ready in ``queues`` or one comes due (a delayed one,
        an expired lease), at the timeout, or early once ``stop`` is set."""
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + max(0.0, float(timeout_seconds))
        seen_version: int | None = None
        due: float | None = None
        ready = False
        while stop is None or not stop.is_set():
            if names:
                with FORK_GUARD:
                    version = self._data_version()
                    changed = version != seen_version
                    if changed:
                        seen_version = version
                        ready, due = self._work_state(names)
                if changed and ready:
                    return
                if due is not None and due <= time.time():
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
        with self.db.read("wait") as conn:
            row = conn.execute("PRAGMA data_version").fetchone()
        return int(row[0]) if row else 0

    def _work_state(self, queues: list[str]) -> tuple[bool, float | None]:
        """Whether a message is ready in ``queues`` now, and the earliest time a delayed
        message comes due, a lease expires or a dependency deadline passes there."""
        due: list[float] = []
        now = time.time()
        with self.db.read("wait") as conn:
            for queue in queues:
                row = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_plain_ready"
                    "  WHERE queue = ?1 AND state = 'ready' AND lane IS NULL),"
                    " (SELECT MIN(eta) FROM messages WHERE queue = ?1 AND state = 'delayed'),"
                    " (SELECT MIN(lease_until) FROM messages"
                    "  WHERE queue = ?1 AND state = 'inflight'),"
                    " (SELECT MIN(dependency_deadline) FROM messages WHERE queue = ?1"
                    "  AND state = 'waiting' AND dependency_deadline IS NOT NULL)",
                    (queue,),
                ).fetchone()
                if row is None:
                    continue
                if row[0]:
                    return True, None
                due.extend(float(value) for value in row[1:] if is_number(value))
            for queue in limited_queues(conn, queues):
                open_lane, wake = lane_work(conn, queue, now)
                if open_lane:
                    return True, None
                due += [] if wake is None else [wake]
        return False, min(due) if due else None
