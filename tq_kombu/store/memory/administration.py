"""The memory store's other slices: dead letters, inspection, administration, routing
and workers."""

from __future__ import annotations

from typing import Any

from ..model import (
    Binding,
    DeadLetter,
    MessageInfo,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    RetentionPolicy,
    State,
    WorkerBeat,
)
from .dependencies import MemoryDependencies
from .records import QUEUED, Record, binding_key, order_of


class MemoryRest(MemoryDependencies):
    """The hooks of every slice but the hot path."""

    # -- dead letters -----------------------------------------------------
    def _bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        with self._changed:
            now = self.clock()
            record = self._record(queue, message.message_id)
            if record is not None:
                before = record.state
                if before != State.DEAD:
                    self._kill(queue, record, dead, now)
                    self._settle_deaths(now)
                return before
            first_seen = now if dead.first_seen is None else float(dead.first_seen)
            info = MessageInfo(
                queue, message.message_id, State.DEAD, message.priority,
                int(dead.delivery_count or 0), message.task_name, message.task_id,
                eta=message.eta, created_at=first_seen,
            )  # fmt: skip
            record = Record(info, message.payload, next(self._seq))
            self._queue(queue)[message.message_id] = record
            self._kill(queue, record, dead, now)
            self._settle_deaths(now)
            return None

    def _replay_many(
        self, queue: str, message_ids: list[str], to_queue: str, priority: int | None
    ) -> int:
        with self._changed:
            return sum(self._replay_one(queue, mid, to_queue, priority) for mid in message_ids)

    def _replay_one(self, queue: str, message_id: str, target: str, priority: int | None) -> bool:
        record = self._record(queue, message_id)
        if record is None or record.state != State.DEAD:
            return False
        if target != queue and message_id in self._messages.get(target, {}):
            return False
        self._detach((queue, message_id), record)  # a replayed dependent runs as it is
        del self._messages[queue][message_id]
        self._set(
            record, queue=target, priority=record.info.priority if priority is None else priority,
            delivery_count=0, dead_reason=None, dead_detail=None, dead_at=None, hostname=None,
            attempts=None,
        )  # fmt: skip
        record.failure = b""
        self._to_ready(record)
        self._queue(target)[message_id] = record
        if record.info.task_id:
            self._revive(record.info.task_id)
        return True

    def _trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        with self._changed:
            return self._trim_at(queue, policy, self.clock())

    def _dead_failure(self, queue: str, message_id: str) -> bytes:
        with self._changed:
            record = self._record(queue, message_id)
            return record.failure if record is not None and record.state == State.DEAD else b""

    # -- inspection -------------------------------------------------------
    def _queues(self) -> list[str]:
        with self._changed:
            return sorted(name for name, records in self._messages.items() if records)

    def _counts(self, queue: str) -> QueueCounts:
        with self._changed:
            states = [r.state for r in self._messages.get(queue, {}).values()]
        return QueueCounts(**{state.value: states.count(state) for state in State})

    def _ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        levels: dict[int, list[float]] = {}
        with self._changed:
            for r in self._in_state(queue, State.READY):
                levels.setdefault(r.info.priority, []).append(r.info.created_at or 0.0)
        return {p: (len(times), min(times)) for p, times in levels.items()}

    def _info(self, queue: str, message_id: str) -> MessageInfo | None:
        with self._changed:
            record = self._record(queue, message_id)
            return None if record is None else record.shown()

    def _find_task(self, queue: str, task_id: str) -> MessageInfo | None:
        with self._changed:
            found = [r for r in self._messages.get(queue, {}).values() if r.info.task_id == task_id]
            return min(found, key=lambda r: r.seq).shown() if found else None

    def _list_messages(
        self, queue: str, state: State, offset: int, limit: int
    ) -> list[MessageInfo]:
        with self._changed:
            chosen = sorted(self._in_state(queue, state), key=order_of(state))
            return [r.shown() for r in chosen[offset : offset + limit]]

    def _payload(self, queue: str, message_id: str) -> bytes | None:
        with self._changed:
            record = self._record(queue, message_id)
            return None if record is None else record.payload

    # -- administration ---------------------------------------------------
    def _cancel(self, queue: str, message_id: str) -> bool:
        with self._changed:
            record = self._record(queue, message_id)
            if record is None or record.state not in QUEUED:
                return False
            self._detach((queue, message_id), record)
            del self._messages[queue][message_id]
            if record.info.task_id:  # cancelled counts as failed for its dependents
                self._deaths.append((record.info.task_id, "cancelled"))
                self._settle_deaths(self.clock())
            return True

    def _set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        with self._changed:
            record = self._record(queue, message_id)
            if record is None or record.state not in QUEUED:
                return False
            self._set(record, priority=priority)
            return True

    def _release_waiting(self, queue: str, message_id: str) -> bool:
        with self._changed:
            record = self._record(queue, message_id)
            if record is None or record.state != State.WAITING:
                return False
            self._release_dependent((queue, message_id), record, self.clock())
            return True

    def _purge(self, queue: str, state: State) -> int:
        with self._changed:
            gone = self._in_state(queue, state)
            for record in gone:
                del self._messages[queue][record.info.message_id]
            return len(gone)

    def _delete_queue(self, queue: str) -> None:
        with self._changed:
            self._messages.pop(queue, None)
            self._lifetimes.pop(queue, None)

    # -- routing ------------------------------------------------------------
    def _declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        with self._changed:
            if lifetime.expires_seconds is None and lifetime.message_ttl_seconds is None:
                self._lifetimes.pop(queue, None)
                return
            expires = lifetime.expires_seconds
            deadline = None if expires is None else self.clock() + expires
            self._lifetimes[queue] = (lifetime, deadline)

    def _lifetime(self, queue: str) -> QueueLifetime | None:
        with self._changed:
            entry = self._lifetimes.get(queue)
            return None if entry is None else entry[0]

    def _expire_queues(self) -> list[str]:
        now = self.clock()
        with self._changed:
            gone = sorted(
                queue
                for queue, (_, deadline) in self._lifetimes.items()
                if deadline is not None and deadline <= now
            )
            for queue in gone:
                self._messages.pop(queue, None)
                self._lifetimes.pop(queue, None)
                for key in [k for k in self._binding_table if k[3] == queue]:
                    del self._binding_table[key]
            return gone

    def _bind(self, binding: Binding, expires_seconds: float | None) -> None:
        expires_at = None if expires_seconds is None else self.clock() + expires_seconds
        with self._changed:
            self._binding_table[binding_key(binding)] = expires_at

    def _unbind(self, binding: Binding) -> None:
        with self._changed:
            self._binding_table.pop(binding_key(binding), None)

    def _bindings(self, exchange: str) -> list[Binding]:
        now = self.clock()
        with self._changed:
            live = [
                Binding(*key)
                for key, expires_at in self._binding_table.items()
                if key[0] == exchange and (expires_at is None or expires_at > now)
            ]
        return sorted(live, key=lambda b: (b.queue, b.routing_key, b.pattern))

    # -- workers ----------------------------------------------------------
    def _heartbeat(
        self, worker: str, ttl_seconds: float, info: dict[str, Any], keep_seconds: float
    ) -> None:
        now = self.clock()
        with self._changed:
            self._beats[worker] = (now, now + ttl_seconds, now + ttl_seconds + keep_seconds, info)

    def _workers(self, include_lost: bool) -> list[WorkerBeat]:
        now = self.clock()
        with self._changed:
            for name in [n for n, beat in self._beats.items() if beat[2] <= now]:
                del self._beats[name]
            return [
                WorkerBeat(name, seen, info, expires, expires <= now)
                for name, (seen, expires, _, info) in sorted(self._beats.items())
                if expires > now or include_lost
            ]

    def _forget_worker(self, worker: str) -> bool:
        with self._changed:
            return self._beats.pop(worker, None) is not None
