"""MemoryStore: the reference store, in one process's memory.

It keeps every message in one dict per queue and does each operation under one lock,
so it is the plainest statement of the Store contract: the model the property tests
compare Redis and SQLite with, and a fast broker for unit tests of code that uses tq
(``broker_url = "tq+memory://"``; stores of the same name share their messages within
a process, like kombu's own ``memory://``). Nothing survives the process.

Ordering is as on SQLite: one counter stamps a message whenever it becomes ready, and
ready messages are handed out by priority (higher first), then by that stamp, across
every queue a fetch names. The clock is injectable (``clock=``) for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import count
from typing import Any

from ..errors import ConfigurationError
from ..priority import normalize_priority
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

__all__ = ["MemoryStore"]

_QUEUED = (State.READY, State.DELAYED, State.WAITING)


@dataclass
class _Record:
    """One stored message: the contract's MessageInfo plus what only the store needs."""

    info: MessageInfo
    payload: bytes
    seq: int
    lease_until: float | None = None
    lease_token: str | None = None
    failure: bytes = b""
    #: Unix time after which a queued message is never handed out (TTL), or None.
    expires_at: float | None = None


def _list_key(state: State) -> Callable[[_Record], tuple[float, int]]:
    """``list_messages`` order per state: hand-out, due, expiry, death, arrival."""
    if state == State.READY:
        return lambda r: (-r.info.priority, r.seq)
    if state == State.DELAYED:
        return lambda r: (r.info.eta or 0.0, r.seq)
    if state == State.INFLIGHT:
        return lambda r: (r.lease_until or 0.0, r.seq)
    if state == State.DEAD:
        return lambda r: (r.info.dead_at or 0.0, r.seq)
    return lambda r: (0.0, r.seq)


class MemoryStore(Store):
    """A :class:`~tq_kombu.store.base.Store` held in this process (see the module doc)."""

    driver_type = "memory"

    _shared: dict[str, MemoryStore] = {}
    _shared_lock = threading.Lock()

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._queues: dict[str, dict[str, _Record]] = {}
        self._bindings: dict[tuple[str, str, str, str], float | None] = {}
        self._workers: dict[str, tuple[float, float, dict[str, Any]]] = {}
        #: queue -> (lifetime, deadline of a self-expiring queue or None)
        self._lifetimes: dict[str, tuple[QueueLifetime, float | None]] = {}
        self._seq = count(1)
        self._changed = threading.Condition(threading.Lock())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        """The process-wide store named by ``memory://[name]`` (one per name)."""
        scheme, sep, name = url.partition("://")
        if not sep or scheme.lower() != "memory":
            raise ConfigurationError(f"{url!r} is not a memory URL: use memory:// or memory://name")
        with cls._shared_lock:
            store = cls._shared.get(name)
            if store is None:
                store = cls._shared[name] = cls()
        store.retention = retention_from_options(options)
        return store

    # -- connection -------------------------------------------------------
    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release: the messages stay for the next user of the store."""

    # -- helpers ----------------------------------------------------------
    def _queue(self, queue: str) -> dict[str, _Record]:
        return self._queues.setdefault(queue, {})

    def _set(self, record: _Record, **changes: Any) -> None:
        record.info = replace(record.info, **changes)

    def _to_ready(self, record: _Record) -> None:
        self._set(record, state=State.READY)
        record.seq = next(self._seq)
        record.lease_until = record.lease_token = None

    def _held(self, lease: Lease) -> _Record | None:
        record = self._queues.get(lease.queue, {}).get(lease.message_id)
        if record is None or record.info.state != State.INFLIGHT:
            return None
        return record if record.lease_token == lease.token else None

    def _kill(self, queue: str, record: _Record, dead: DeadLetter, now: float) -> None:
        self._set(
            record,
            state=State.DEAD,
            dead_reason=str(dead.reason),
            dead_detail=dead.detail,
            dead_at=now,
            hostname=dead.hostname or None,
            attempts=dead.attempts,
        )
        record.failure = dead.failure
        record.lease_until = record.lease_token = None
        self._trim(queue, self.retention, now)

    def _notify(self) -> None:
        self._changed.notify_all()

    # -- publish ----------------------------------------------------------
    def enqueue(self, queue: str, message: NewMessage) -> None:
        priority = normalize_priority(message.priority)
        with self._changed:
            records = self._queue(queue)
            if message.message_id in records:
                return
            now = self.clock()
            if message.waiting:
                state = State.WAITING
            elif message.eta is not None and message.eta > now:
                state = State.DELAYED
            else:
                state = State.READY
            info = MessageInfo(
                queue=queue,
                message_id=message.message_id,
                state=state,
                priority=priority,
                delivery_count=0,
                task_name=message.task_name,
                task_id=message.task_id,
                eta=message.eta,
                created_at=now,
            )
            record = _Record(info, bytes(message.payload), next(self._seq))
            ttls = [] if message.ttl_seconds is None else [float(message.ttl_seconds)]
            lifetime = self._lifetimes.get(queue)
            if lifetime is not None and lifetime[0].message_ttl_seconds is not None:
                ttls.append(lifetime[0].message_ttl_seconds)
            record.expires_at = now + min(ttls) if ttls else None
            records[message.message_id] = record
            self._notify()

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
        if max_deliveries < 1:
            raise ConfigurationError(f"max_deliveries must be at least 1, got {max_deliveries!r}")
        if not lease_seconds > 0:
            raise ConfigurationError(f"lease_seconds must be greater than 0, got {lease_seconds!r}")
        return self._fetch(
            queues, max_count, consumer_id, lease_seconds, max_deliveries, skip_task_names
        )

    def take(self, queues: Sequence[str], max_count: int) -> FetchResult:
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
        """Promote, expire, then lease (or, without ``lease_seconds``, take) the best."""
        names = list(dict.fromkeys(queues))
        skip = set(skip_task_names)
        with self._changed:
            now = self.clock()
            self._return_due(names, now)
            self._expire_messages(names, now)
            ready = sorted(
                (
                    (-r.info.priority, r.seq, name, r)
                    for name in names
                    for r in self._queues.get(name, {}).values()
                    if r.info.state == State.READY and r.info.task_name not in skip
                ),
                key=lambda entry: entry[:2],
            )
            deliveries: list[Delivery] = []
            taken = 0
            for _, _, name, record in ready:
                if len(deliveries) >= max_count:
                    break
                taken += 1
                delivered = record.info.delivery_count
                self._set(record, delivery_count=delivered + 1)
                if lease_seconds is None:
                    del self._queues[name][record.info.message_id]
                    lease = Lease(name, record.info.message_id, "")
                elif delivered + 1 > max_deliveries:
                    detail = f"handed out {delivered} times without being acknowledged"
                    self._kill(name, record, DeadLetter(DeadReason.MAX_DELIVERIES, detail), now)
                    continue
                else:
                    self._set(record, state=State.INFLIGHT)
                    record.lease_token = f"{consumer_id}:{delivered + 1}"
                    record.lease_until = now + lease_seconds
                    lease = Lease(name, record.info.message_id, record.lease_token)
                deliveries.append(
                    Delivery(
                        lease,
                        record.payload,
                        record.info.priority,
                        delivered + 1,
                        record.info.created_at,
                    )
                )
            more = len(ready) > taken
            return FetchResult(deliveries, more, self._next_due(names))

    def _expire_messages(self, queues: list[str], now: float) -> None:
        """Queued messages past their TTL go: dropped in a self-expiring queue, dead
        (reason ``expired``) in any other."""
        expired = DeadLetter(DeadReason.EXPIRED, "its time to live ran out before it was delivered")
        for name in queues:
            records = self._queues.get(name, {})
            lifetime = self._lifetimes.get(name)
            dropping = lifetime is not None and lifetime[0].self_expiring
            for record in list(records.values()):
                if record.expires_at is None or record.expires_at > now:
                    continue
                record.expires_at = None
                if record.info.state not in _QUEUED:
                    continue
                if dropping:
                    del records[record.info.message_id]
                else:
                    self._kill(name, record, expired, now)

    def _return_due(self, queues: list[str], now: float) -> None:
        """Due delayed messages and expired leases become ready, in the order they came due."""
        due: list[tuple[float, int, _Record]] = []
        for name in queues:
            for r in self._queues.get(name, {}).values():
                if r.info.state == State.DELAYED and (r.info.eta or 0.0) <= now:
                    due.append((r.info.eta or 0.0, r.seq, r))
                elif r.info.state == State.INFLIGHT and (r.lease_until or 0.0) <= now:
                    due.append((r.lease_until or 0.0, r.seq, r))
        for _, _, record in sorted(due, key=lambda entry: entry[:2]):
            self._to_ready(record)

    def _next_due(self, queues: list[str]) -> float | None:
        times = [
            (r.info.eta if r.info.state == State.DELAYED else r.lease_until) or 0.0
            for name in queues
            for r in self._queues.get(name, {}).values()
            if r.info.state in (State.DELAYED, State.INFLIGHT)
        ]
        return min(times) if times else None

    def _work_available(self, queues: list[str], now: float) -> bool:
        for name in queues:
            for r in self._queues.get(name, {}).values():
                state = r.info.state
                if state == State.READY:
                    return True
                if state == State.DELAYED and (r.info.eta or 0.0) <= now:
                    return True
                if state == State.INFLIGHT and (r.lease_until or 0.0) <= now:
                    return True
        return False

    def wait(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Block until work may be available in ``queues`` (woken by every change)."""
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + max(0.0, float(timeout_seconds))
        with self._changed:
            while names and not self._work_available(names, self.clock()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                due = self._next_due(names)
                if due is not None:
                    remaining = min(remaining, max(due - self.clock(), 0.001))
                self._changed.wait(remaining)

    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> list[Lease]:
        lost: list[Lease] = []
        with self._changed:
            until = self.clock() + lease_seconds
            for lease in leases:
                record = self._held(lease)
                if record is None:
                    lost.append(lease)
                else:
                    record.lease_until = until
        return lost

    def ack(self, lease: Lease) -> bool:
        with self._changed:
            if self._held(lease) is None:
                return False
            del self._queues[lease.queue][lease.message_id]
            return True

    def release(self, lease: Lease) -> bool:
        return self._back_to_ready(lease)

    def requeue(self, lease: Lease) -> bool:
        return self._back_to_ready(lease)

    def _back_to_ready(self, lease: Lease) -> bool:
        """The delivery stays counted either way (a release never lowers the count)."""
        with self._changed:
            record = self._held(lease)
            if record is None:
                return False
            self._to_ready(record)
            self._notify()
            return True

    def bury(self, lease: Lease, dead: DeadLetter) -> bool:
        with self._changed:
            record = self._held(lease)
            if record is None:
                return False
            self._kill(lease.queue, record, dead, self.clock())
            return True

    def bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        priority = normalize_priority(message.priority)
        with self._changed:
            now = self.clock()
            records = self._queue(queue)
            record = records.get(message.message_id)
            if record is not None:
                before = record.info.state
                if before != State.DEAD:
                    self._kill(queue, record, dead, now)
                return before
            info = MessageInfo(
                queue=queue,
                message_id=message.message_id,
                state=State.DEAD,
                priority=priority,
                delivery_count=int(dead.delivery_count or 0),
                task_name=message.task_name,
                task_id=message.task_id,
                eta=message.eta,
                created_at=now if dead.first_seen is None else float(dead.first_seen),
            )
            record = _Record(info, bytes(message.payload), next(self._seq))
            records[message.message_id] = record
            self._kill(queue, record, dead, now)
            return None

    def replay(
        self, queue: str, message_id: str, to_queue: str | None = None, priority: int | None = None
    ) -> bool:
        new_priority = None if priority is None else normalize_priority(priority)
        target = to_queue or queue
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            if record is None or record.info.state != State.DEAD:
                return False
            if target != queue and message_id in self._queues.get(target, {}):
                return False
            del self._queues[queue][message_id]
            self._set(
                record,
                queue=target,
                priority=record.info.priority if new_priority is None else new_priority,
                delivery_count=0,
                dead_reason=None,
                dead_detail=None,
                dead_at=None,
                hostname=None,
                attempts=None,
            )
            record.failure = b""
            self._to_ready(record)
            self._queue(target)[message_id] = record
            self._notify()
            return True

    def trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        with self._changed:
            return self._trim(queue, policy, self.clock())

    def _trim(self, queue: str, policy: RetentionPolicy, now: float) -> int:
        """Drop dead messages past the policy's age, then the oldest beyond its count."""
        records = self._queues.get(queue, {})
        dead = sorted(
            (r for r in records.values() if r.info.state == State.DEAD),
            key=_list_key(State.DEAD),
        )
        cutoff = now - policy.ttl_seconds
        aged = [r for r in dead if (r.info.dead_at or 0.0) < cutoff]
        kept = [r for r in dead if (r.info.dead_at or 0.0) >= cutoff]
        excess = kept[: max(len(kept) - policy.max_per_queue, 0)]
        for record in (*aged, *excess):
            del records[record.info.message_id]
        return len(aged) + len(excess)

    def dead_failure(self, queue: str, message_id: str) -> bytes:
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            if record is None or record.info.state != State.DEAD:
                return b""
            return record.failure

    def ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        levels: dict[int, tuple[int, float | None]] = {}
        with self._changed:
            for r in self._queues.get(queue, {}).values():
                if r.info.state != State.READY:
                    continue
                n, oldest = levels.get(r.info.priority, (0, None))
                created = r.info.created_at
                if oldest is not None and created is not None:
                    created = min(oldest, created)
                levels[r.info.priority] = (n + 1, created if created is not None else oldest)
        return levels

    # -- inspect and administer -------------------------------------------
    def queues(self) -> list[str]:
        with self._changed:
            return sorted(name for name, records in self._queues.items() if records)

    def counts(self, queue: str) -> QueueCounts:
        by_state = dict.fromkeys(State, 0)
        with self._changed:
            for r in self._queues.get(queue, {}).values():
                by_state[r.info.state] += 1
        return QueueCounts(**{state.value: n for state, n in by_state.items()})

    def info(self, queue: str, message_id: str) -> MessageInfo | None:
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            return None if record is None else record.info

    def list_messages(
        self, queue: str, state: State, offset: int = 0, limit: int = 100
    ) -> list[MessageInfo]:
        try:
            state = State(state)
        except ValueError:
            raise ConfigurationError(
                f"unknown message state {state!r}: use one of {', '.join(s.value for s in State)}"
            ) from None
        with self._changed:
            chosen = [r for r in self._queues.get(queue, {}).values() if r.info.state == state]
            chosen.sort(key=_list_key(state))
            start = max(0, offset)
            return [r.info for r in chosen[start : start + max(0, limit)]]

    def payload(self, queue: str, message_id: str) -> bytes | None:
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            return None if record is None else record.payload

    def cancel(self, queue: str, message_id: str) -> bool:
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            if record is None or record.info.state not in _QUEUED:
                return False
            del self._queues[queue][message_id]
            return True

    def set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        value = normalize_priority(priority)
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            if record is None or record.info.state not in _QUEUED:
                return False
            self._set(record, priority=value)
            return True

    def release_waiting(self, queue: str, message_id: str) -> bool:
        with self._changed:
            record = self._queues.get(queue, {}).get(message_id)
            if record is None or record.info.state != State.WAITING:
                return False
            eta = record.info.eta
            if eta is not None and eta > self.clock():
                self._set(record, state=State.DELAYED)
                record.seq = next(self._seq)
            else:
                self._to_ready(record)
            self._notify()
            return True

    def purge(self, queue: str, state: State = State.READY) -> int:
        state = State(state)
        with self._changed:
            records = self._queues.get(queue, {})
            gone = [mid for mid, r in records.items() if r.info.state == state]
            for message_id in gone:
                del records[message_id]
            return len(gone)

    def delete_queue(self, queue: str) -> None:
        with self._changed:
            self._queues.pop(queue, None)
            self._lifetimes.pop(queue, None)

    # -- queue lifetime -----------------------------------------------------
    def declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        with self._changed:
            if lifetime.expires_seconds is None and lifetime.message_ttl_seconds is None:
                self._lifetimes.pop(queue, None)
                return
            expires = lifetime.expires_seconds
            deadline = None if expires is None else self.clock() + float(expires)
            self._lifetimes[queue] = (lifetime, deadline)

    def lifetime(self, queue: str) -> QueueLifetime | None:
        with self._changed:
            entry = self._lifetimes.get(queue)
            return None if entry is None else entry[0]

    def expire_queues(self) -> list[str]:
        now = self.clock()
        with self._changed:
            gone = sorted(
                queue
                for queue, (_, deadline) in self._lifetimes.items()
                if deadline is not None and deadline <= now
            )
            for queue in gone:
                self._queues.pop(queue, None)
                self._lifetimes.pop(queue, None)
                for key in [k for k in self._bindings if k[3] == queue]:
                    del self._bindings[key]
            return gone

    # -- bindings -----------------------------------------------------------
    @staticmethod
    def _binding_key(binding: Binding) -> tuple[str, str, str, str]:
        return (binding.exchange, binding.routing_key, binding.pattern, binding.queue)

    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        expires_at = None if expires_seconds is None else self.clock() + float(expires_seconds)
        with self._changed:
            self._bindings[self._binding_key(binding)] = expires_at

    def unbind(self, binding: Binding) -> None:
        with self._changed:
            self._bindings.pop(self._binding_key(binding), None)

    def bindings(self, exchange: str) -> list[Binding]:
        now = self.clock()
        with self._changed:
            live = [
                Binding(*key)
                for key, expires_at in self._bindings.items()
                if key[0] == exchange and (expires_at is None or expires_at > now)
            ]
        return sorted(live, key=lambda b: (b.queue, b.routing_key, b.pattern))

    # -- workers ----------------------------------------------------------
    def heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        now = self.clock()
        with self._changed:
            self._workers[worker] = (now, now + float(ttl_seconds), dict(info))

    def workers(self) -> list[WorkerBeat]:
        now = self.clock()
        with self._changed:
            return [
                WorkerBeat(name, seen, info)
                for name, (seen, expires, info) in sorted(self._workers.items())
                if expires > now
            ]
