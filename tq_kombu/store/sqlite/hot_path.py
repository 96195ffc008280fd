"""The hot path on SQLite: publish, fetch (or take), renew and settle, each one
``BEGIN IMMEDIATE`` transaction.

Ordering: a global counter (``seq``) stamps every message when it becomes ready; ready
messages are handed out by priority (higher first), then by ``seq``, across every queue
a fetch names. A message that returns to ready (requeue, release, expired lease, due
ETA) is stamped again and so goes to the end of its level. A lease token is
``consumer:delivery count``, so a lease from an earlier delivery never settles a later one.
"""

from __future__ import annotations

import time

from ..contract import HotPath
from ..model import DeadLetter, FetchResult, Lease, NewMessage
from .cascade import drain_deaths, sweep_deadlines
from .db import UsesDatabase
from .fetching import (
    Lessee,
    expire_messages,
    lanes_due,
    lease_best,
    more_ready,
    next_due,
    promote_due,
)
from .lanes import limited_queues
from .publishing import store_message
from .rows import NEXT_SEQ, trim_dead


class SQLiteHotPath(UsesDatabase, HotPath):
    """Publish, consume and settle (the wait is in :mod:`.waiter`)."""

    dependency_record_ttl_seconds: float

    def _enqueue(self, queue: str, message: NewMessage) -> None:
        """Store ``message`` as waiting, delayed or ready; an id the queue holds already
        changes nothing (INSERT OR IGNORE: the first copy stands)."""
        now = time.time()
        with self.db.write("enqueue") as conn:
            if store_message(conn, queue, message, now):  # dead at once: a parent failed
                drain_deaths(conn, now, self.dependency_record_ttl_seconds, self.retention)

    def _fetch(
        self,
        queues: list[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: list[str],
    ) -> FetchResult:
        now = time.time()
        lessee = Lessee(consumer_id, now + lease_seconds, max_deliveries, self.retention)
        return self._hand_out(queues, max_count, lessee, skip_task_names, now)

    def _take(self, queues: list[str], max_count: int) -> FetchResult:
        lessee = Lessee("", None, 1, self.retention)
        return self._hand_out(queues, max_count, lessee, [], time.time())

    def _hand_out(
        self, queues: list[str], max_count: int, lessee: Lessee, skip: list[str], now: float
    ) -> FetchResult:
        """Promote, expire, lease or take, then time out dependents past their deadline
        and cascade every death, in one transaction."""
        with self.db.write("fetch") as conn:
            promote_due(conn, queues, now)
            expire_messages(conn, queues, now, self.retention)
            limited = limited_queues(conn, queues)
            deliveries = lease_best(conn, queues, max_count, lessee, skip, now, limited)
            due = next_due(conn, queues)  # dependency deadlines included
            if (
                due is not None
                and due <= now
                and sweep_deadlines(conn, queues, now, self.retention)
            ):
                due = next_due(conn, queues)
            # parents set aside here (expired, corrupt, max_deliveries, timed out)
            drain_deaths(conn, now, self.dependency_record_ttl_seconds, self.retention)
            more = more_ready(conn, queues, skip)
            if limited:  # the lanes' work and wake, judged once (a wake is after now)
                open_lane, wake = lanes_due(conn, limited, now)
                more = more or open_lane
                due = wake if due is None else min(due, wake or due)
            return FetchResult(deliveries, more, due)

    def _renew(self, leases: list[Lease], lease_seconds: float) -> list[Lease]:
        lost: list[Lease] = []
        with self.db.write("renew") as conn:
            until = time.time() + lease_seconds
            for lease in leases:
                cursor = conn.execute(
                    "UPDATE messages SET lease_until = ? "
                    "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                    (until, lease.queue, lease.message_id, lease.token),
                )
                if cursor.rowcount == 0:
                    lost.append(lease)
        return lost

    def _ack(self, lease: Lease) -> bool:
        with self.db.write("ack") as conn:
            cursor = conn.execute(
                "DELETE FROM messages "
                "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                (lease.queue, lease.message_id, lease.token),
            )
            return cursor.rowcount > 0

    def _release(self, lease: Lease) -> bool:
        return self._back_to_ready(lease)

    def _requeue(self, lease: Lease) -> bool:
        return self._back_to_ready(lease)

    def _give_back(self, lease: Lease) -> bool:
        return self._back_to_ready(lease, uncount=True)

    def _back_to_ready(self, lease: Lease, uncount: bool = False) -> bool:
        """The held message to the end of its priority level; the delivery stays counted
        unless ``uncount`` (never started: the count goes back to before this fetch)."""
        count = "MAX(delivery_count - 1, 0)" if uncount else "delivery_count"
        with self.db.write("returning a message to ready") as conn:
            cursor = conn.execute(
                f"UPDATE messages SET state = 'ready', seq = {NEXT_SEQ}, "
                f"delivery_count = {count}, lease_until = NULL, lease_token = NULL "
                "WHERE queue = ? AND id = ? AND state = 'inflight' AND lease_token = ?",
                (lease.queue, lease.message_id, lease.token),
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            return True

    def _bury(self, lease: Lease, dead: DeadLetter) -> bool:
        with self.db.write("bury") as conn:
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
                trim_dead(conn, lease.queue, self.retention)
                drain_deaths(conn, time.time(), self.dependency_record_ttl_seconds, self.retention)
            return cursor.rowcount > 0
