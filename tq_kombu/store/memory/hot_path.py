"""The memory store's hot path: publish, hand out, wait, renew and settle."""

from __future__ import annotations

import time

from ..contract import PROMOTE_LIMIT, SKIP_SCAN_LIMIT
from ..model import (
    DeadLetter,
    DeadReason,
    Delivery,
    FetchResult,
    Lease,
    NewMessage,
    State,
)
from .dependencies import MemoryDependencies
from .limits import MemoryLimits, Picker
from .records import EXPIRED_DETAIL, QUEUED, Record, order_of


class MemoryHotPath(MemoryLimits, MemoryDependencies):
    """The HotPath hooks."""

    def _enqueue(self, queue: str, message: NewMessage) -> None:
        with self._changed:
            now = self.clock()
            self._store_message(queue, message, now)
            if message.depends_on:
                self._settle_deaths(now)  # dead at once if a parent failed

    def _fetch(
        self,
        queues: list[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: list[str],
    ) -> FetchResult:
        return self._hand_out(
            queues, max_count, consumer_id, lease_seconds, max_deliveries, set(skip_task_names)
        )

    def _take(self, queues: list[str], max_count: int) -> FetchResult:
        return self._hand_out(queues, max_count, "", None, 1, set())

    def _hand_out(
        self,
        queues: list[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float | None,
        max_deliveries: int,
        skip: set[str],
    ) -> FetchResult:
        """Promote, expire, then lease (or, without ``lease_seconds``, take) the best."""
        with self._changed:
            now = self.clock()
            self._promote(queues, now)
            self._expire_messages(queues, now)
            self._sweep_deadlines(queues, now)
            self._settle_deaths(now)
            picker = Picker(self, queues, skip, now, lease_seconds is not None)
            deliveries: list[Delivery] = []
            while len(deliveries) < max_count:
                record = picker.next()
                if record is None:
                    break
                queue, message_id = record.info.queue, record.info.message_id
                count_ = record.info.delivery_count + 1
                if lease_seconds is not None and count_ > max_deliveries:
                    self._set(record, delivery_count=count_)
                    detail = f"handed out {count_ - 1} times without being acknowledged"
                    self._kill(queue, record, DeadLetter(DeadReason.MAX_DELIVERIES, detail), now)
                    continue
                if record.limits and not picker.admit(record):
                    continue
                self._set(record, delivery_count=count_)
                if lease_seconds is None:
                    del self._messages[queue][message_id]
                    lease = Lease(queue, message_id, "")
                else:
                    self._set(record, state=State.INFLIGHT)
                    record.lease_token = f"{consumer_id}:{count_}"
                    record.lease_until = now + lease_seconds
                    lease = Lease(queue, message_id, record.lease_token)
                deliveries.append(
                    Delivery(
                        lease, record.payload, record.info.priority, count_, record.info.created_at
                    )
                )
            self._settle_deaths(now)  # parents set aside here (max_deliveries)
            more = self._startable_any([r for q in queues for r in self._eligible(q, skip)], now)
            return FetchResult(deliveries, more, self._next_due(queues))

    def _eligible(self, queue: str, skip: set[str]) -> list[Record]:
        """Ready messages a fetch may hand out: not skipped, and with fewer than
        SKIP_SCAN_LIMIT skipped messages before them in the queue."""
        eligible, skipped = [], 0
        for record in sorted(self._in_state(queue, State.READY), key=order_of(State.READY)):
            if record.info.task_name in skip:
                skipped += 1
                if skipped >= SKIP_SCAN_LIMIT:
                    break
            else:
                eligible.append(record)
        return eligible

    def _promote(self, queues: list[str], now: float) -> None:
        """Up to PROMOTE_LIMIT due delayed messages and as many expired leases per queue
        become ready, in the order they came due."""
        due: list[Record] = []
        for queue in queues:
            for state in (State.DELAYED, State.INFLIGHT):
                came_due = [r for r in self._in_state(queue, state) if r.due_at() <= now]
                due += sorted(came_due, key=order_of(state))[:PROMOTE_LIMIT]
        for record in sorted(due, key=lambda r: (r.due_at(), r.seq)):
            self._to_ready(record)

    def _expire_messages(self, queues: list[str], now: float) -> None:
        """Queued messages past their TTL go: dropped in a self-expiring queue, dead
        (reason ``expired``) in any other."""
        for queue in queues:
            lifetime = self._lifetimes.get(queue)
            dropping = lifetime is not None and lifetime[0].self_expiring
            for record in list(self._messages.get(queue, {}).values()):
                if record.expires_at is None or record.expires_at > now:
                    continue
                record.expires_at = None
                if record.state not in QUEUED:
                    continue
                if dropping:
                    del self._messages[queue][record.info.message_id]
                else:
                    self._kill(queue, record, DeadLetter(DeadReason.EXPIRED, EXPIRED_DETAIL), now)

    def _next_due(self, queues: list[str]) -> float | None:
        times = [
            r.due_at() for q in queues for r in self._in_state(q, State.DELAYED, State.INFLIGHT)
        ]
        deadline = self._next_deadline(queues)
        times += [] if deadline is None else [deadline]
        wake = self._limit_wake(queues, self.clock())
        times += [] if wake is None else [wake]
        return min(times) if times else None

    def _work_available(self, queues: list[str], now: float) -> bool:
        deadline = self._next_deadline(queues)
        if deadline is not None and deadline <= now:
            return True  # a fetch must set a message aside as timed out
        records = [r for q in queues for r in self._messages.get(q, {}).values()]
        if any(r.state in (State.DELAYED, State.INFLIGHT) and r.due_at() <= now for r in records):
            return True
        return self._startable_any([r for r in records if r.state == State.READY], now)

    def _wait(self, queues: list[str], timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while not self._work_available(queues, self.clock()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                due = self._next_due(queues)
                if due is not None:
                    remaining = min(remaining, max(due - self.clock(), 0.001))
                self._changed.wait(remaining)

    def _renew(self, leases: list[Lease], lease_seconds: float) -> list[Lease]:
        with self._changed:
            until = self.clock() + lease_seconds
            lost = []
            for lease in leases:
                record = self._held(lease)
                if record is None:
                    lost.append(lease)
                else:
                    record.lease_until = until
            return lost

    def _ack(self, lease: Lease) -> bool:
        with self._changed:
            record = self._held(lease)
            if record is None:
                return False
            del self._messages[lease.queue][lease.message_id]
            if record.limits:  # a concurrency slot freed: wake waiting consumers
                self._changed.notify_all()
            return True

    def _release(self, lease: Lease) -> bool:
        return self._requeue(lease)  # the delivery stays counted either way

    def _give_back(self, lease: Lease) -> bool:
        with self._changed:
            record = self._held(lease)
            if record is not None:  # the fetch holding this lease raised the count by one
                self._set(record, delivery_count=max(record.info.delivery_count - 1, 0))
                self._to_ready(record)
            return record is not None

    def _requeue(self, lease: Lease) -> bool:
        with self._changed:
            record = self._held(lease)
            if record is not None:
                self._to_ready(record)
            return record is not None

    def _bury(self, lease: Lease, dead: DeadLetter) -> bool:
        with self._changed:
            record = self._held(lease)
            if record is not None:
                now = self.clock()
                self._kill(lease.queue, record, dead, now)
                self._settle_deaths(now)
                if record.limits:  # a concurrency slot freed: wake waiting consumers
                    self._changed.notify_all()
            return record is not None
