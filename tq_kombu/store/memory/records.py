"""The memory store's records and the state its slices share."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Any

from ..model import (
    Binding,
    DeadLetter,
    Lease,
    LimitDefinition,
    LimitTag,
    MessageInfo,
    QueueLifetime,
    RetentionPolicy,
    State,
    lease_holder,
)

#: States of a message that is queued (not handed out, not dead).
QUEUED = (State.READY, State.DELAYED, State.WAITING)
EXPIRED_DETAIL = "its time to live ran out before it was delivered"


@dataclass
class Waits:
    """What a message published with ``depends_on`` waits on; ``pending`` and ``failed``
    are the parents it still waits on and those whose failure set it aside."""

    parents: tuple[str, ...]
    on_parent_failure: str
    deadline: float | None
    pending: set[str]
    failed: set[str] = field(default_factory=set)
    #: False once released (by its parents or an operator): no longer in the graph.
    attached: bool = True


@dataclass
class Record:
    """One stored message: the contract's MessageInfo plus what only the store needs."""

    info: MessageInfo
    payload: bytes
    seq: int
    lease_until: float | None = None
    lease_token: str | None = None
    failure: bytes = b""
    #: Unix time after which a queued message is never handed out (TTL), or None.
    expires_at: float | None = None
    #: Set for a message published with ``depends_on``.
    deps: Waits | None = None
    #: The limits it starts under (sorted: its lane within the queue), or ().
    limits: tuple[LimitTag, ...] = ()

    @property
    def state(self) -> State:
        return self.info.state

    def shown(self) -> MessageInfo:
        """Its MessageInfo as inspection shows it: in flight, with the lease's holder."""
        if self.state != State.INFLIGHT:
            return self.info
        return replace(self.info, held_by=lease_holder(self.lease_token))

    def due_at(self) -> float:
        """When a delayed message comes due or a lease runs out."""
        return (self.info.eta if self.state == State.DELAYED else self.lease_until) or 0.0


def order_of(state: State) -> Callable[[Record], tuple[float, int]]:
    """``list_messages`` order per state: hand-out, due, expiry, death, arrival."""
    if state == State.READY:
        return lambda r: (-r.info.priority, r.seq)
    if state in (State.DELAYED, State.INFLIGHT):
        return lambda r: (r.due_at(), r.seq)
    if state == State.DEAD:
        return lambda r: (r.info.dead_at or 0.0, r.seq)
    return lambda r: (0.0, r.seq)


class MemoryState:
    """What every slice of the memory store reads and changes, under one lock."""

    retention: RetentionPolicy
    dependency_record_ttl_seconds: float

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._messages: dict[str, dict[str, Record]] = {}
        self._binding_table: dict[tuple[str, str, str, str], float | None] = {}
        #: worker -> (seen at, expires at, kept until, info)
        self._beats: dict[str, tuple[float, float, float, dict[str, Any]]] = {}
        #: queue -> (lifetime, deadline of a self-expiring queue or None)
        self._lifetimes: dict[str, tuple[QueueLifetime, float | None]] = {}
        self._seq = count(1)
        self._changed = threading.Condition(threading.Lock())
        #: task id -> (succeeded, expires at, detail): the completion records
        self._completions: dict[str, tuple[bool, float, str]] = {}
        #: Set once a message with parents was stored (see dependencies_in_use).
        self._dependencies_used = False
        #: parent task id -> (queue, message id) of messages that wait on it or that
        #: its failure set aside (checked against the child's Waits when read)
        self._edges: dict[str, set[tuple[str, str]]] = {}
        #: (queue, message id) -> dependency deadline of a message waiting on parents
        self._deadlines: dict[tuple[str, str], float] = {}
        #: (task id, detail) of messages that died since the last settling of deaths
        self._deaths: list[tuple[str, str]] = []
        self._next_purge = 0.0
        #: limit name -> definition; (name, key) -> GCRA TAT (microseconds)
        self._limit_defs: dict[str, LimitDefinition] = {}
        self._tats: dict[tuple[str, str], int] = {}
        #: (queue, limits) -> turn: the counter value when the lane was last served
        self._lane_turns: dict[tuple[str, tuple[LimitTag, ...]], int] = {}
        #: limit name -> {whole Unix second: starts in it}
        self._starts: dict[str, dict[int, int]] = {}

    # -- records ----------------------------------------------------------
    def _queue(self, queue: str) -> dict[str, Record]:
        return self._messages.setdefault(queue, {})

    def _record(self, queue: str, message_id: str) -> Record | None:
        return self._messages.get(queue, {}).get(message_id)

    def _in_state(self, queue: str, *states: State) -> list[Record]:
        return [r for r in self._messages.get(queue, {}).values() if r.state in states]

    @staticmethod
    def _set(record: Record, **changes: Any) -> None:
        record.info = replace(record.info, **changes)

    def _to_ready(self, record: Record) -> None:
        self._set(record, state=State.READY)
        record.seq = next(self._seq)
        record.lease_until = record.lease_token = None
        self._changed.notify_all()

    def _held(self, lease: Lease) -> Record | None:
        record = self._record(lease.queue, lease.message_id)
        if record is None or record.state != State.INFLIGHT:
            return None
        return record if record.lease_token == lease.token else None

    def _kill(self, queue: str, record: Record, dead: DeadLetter, now: float) -> None:
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
        if record.info.task_id:  # its dependents fail in turn (see _settle_deaths)
            self._deaths.append((record.info.task_id, f"dead: {dead.reason}"))
        self._trim_at(queue, self.retention, now)

    def _trim_at(self, queue: str, policy: RetentionPolicy, now: float) -> int:
        """Drop dead messages past the policy's age, then the oldest beyond its count."""
        dead = sorted(self._in_state(queue, State.DEAD), key=order_of(State.DEAD))
        cutoff = now - policy.ttl_seconds
        aged = [r for r in dead if (r.info.dead_at or 0.0) < cutoff]
        kept = [r for r in dead if (r.info.dead_at or 0.0) >= cutoff]
        gone = aged + kept[: max(len(kept) - policy.max_per_queue, 0)]
        for record in gone:
            del self._messages[queue][record.info.message_id]
        return len(gone)


def binding_key(binding: Binding) -> tuple[str, str, str, str]:
    return (binding.exchange, binding.routing_key, binding.pattern, binding.queue)
