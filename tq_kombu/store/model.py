"""What a store speaks in: message states, dead reasons and the records passed in and out.

A message lives in exactly one state at a time::

    waiting (dependencies) -> delayed (ETA) -> ready -> in flight (leased) -> done | dead

Times are Unix timestamps in seconds (floats); durations carry their unit in their name.
The operations over these records are the contract slices in :mod:`tq_kombu.store.contract`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.StrEnum):
    """Where a message is in its life."""

    WAITING = "waiting"
    DELAYED = "delayed"
    READY = "ready"
    INFLIGHT = "inflight"
    DEAD = "dead"


class DeadReason(enum.StrEnum):
    """Why a message was set aside as dead (more reasons come with later features)."""

    MAX_DELIVERIES = "max_deliveries"
    REJECTED = "rejected"
    UNDECRYPTABLE = "undecryptable"
    FAILED = "failed"
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded"
    EXPIRED = "expired"
    #: A parent it depends on failed for good, was cancelled or went dead.
    DEPENDENCY_FAILED = "dependency_failed"
    #: Still waiting on a parent when its ``dependency_deadline`` passed.
    DEPENDENCY_TIMEOUT = "dependency_timeout"
    MEMORY_LIMIT = "memory_limit"
    #: Opened, but not a message kombu and Celery can consume (structure, types).
    MALFORMED = "malformed"
    #: The store's own record of the message cannot be read (metadata, a column).
    CORRUPT = "corrupt"
    #: Over ``max_message_bytes``, stored or decompressed.
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class LimitTag:
    """One limit a message starts under, and its key there ("" = one key for all)."""

    #: "rate" or "concurrency".
    kind: str
    name: str
    key: str = ""


@dataclass(frozen=True)
class NewMessage:
    """A message to enqueue. Only ``payload`` may hold anything secret."""

    message_id: str
    payload: bytes
    priority: int
    #: Unix time (seconds) before which it must not be handed out; None = now.
    eta: float | None = None
    task_name: str = ""
    task_id: str = ""
    #: Stored as WAITING (held by an operator) until ``release_waiting``.
    waiting: bool = False
    #: Celery task ids that must all succeed before this message is handed out
    #: (see :mod:`tq_kombu.store.contract.dependencies`).
    depends_on: tuple[str, ...] = ()
    #: What a parent's failure does to this message: ``"dead"`` (dead as
    #: ``dependency_failed``) or ``"run"`` (counts as done; released anyway).
    on_parent_failure: str = "dead"
    #: Unix time after which a message still waiting on parents goes dead
    #: (``dependency_timeout``); None = it waits for ever.
    dependency_deadline: float | None = None
    #: The cluster-wide limits it starts under (see :mod:`tq_kombu.store.contract.limits`).
    limits: tuple[LimitTag, ...] = ()
    #: Seconds after which it must never be handed out (AMQP ``expiration``); None = never.
    ttl_seconds: float | None = None


@dataclass(frozen=True)
class Lease:
    """Proof that one consumer holds one delivery of a message."""

    queue: str
    message_id: str
    token: str


@dataclass(frozen=True)
class Delivery:
    """A message handed out by ``fetch`` (or by ``take``: its lease token is then empty,
    since the store no longer holds the message)."""

    lease: Lease
    payload: bytes
    priority: int
    #: How many times this message has been handed out, this time included.
    delivery_count: int
    #: When the store first took the message (Unix time), if the store says.
    created_at: float | None = None


@dataclass(frozen=True)
class FetchResult:
    deliveries: list[Delivery]
    #: True when ready messages were left behind in the fetched queues.
    more_ready: bool
    #: Earliest Unix time at which a delayed message comes due or a lease expires
    #: in the fetched queues (a consumer should fetch again then), or None.
    next_due: float | None


@dataclass(frozen=True)
class QueueCounts:
    ready: int = 0
    delayed: int = 0
    inflight: int = 0
    dead: int = 0
    waiting: int = 0


@dataclass(frozen=True)
class MessageInfo:
    """What the store knows about one message, without decrypting it."""

    queue: str
    message_id: str
    state: State
    priority: int
    delivery_count: int
    task_name: str
    task_id: str
    eta: float | None = None
    dead_reason: str | None = None
    dead_detail: str | None = None
    #: When the store first took the message (Unix time).
    created_at: float | None = None
    dead_at: float | None = None
    #: The worker that set the message aside, when known.
    hostname: str | None = None
    #: Dead messages of failed tasks: how many times the task ran (Celery retries + 1).
    attempts: int | None = None
    #: The cluster-wide limits it starts under (by kind, name and key), if any.
    limits: tuple[LimitTag, ...] = ()
    #: In flight: the consumer id (a channel's ``consumer_id``) holding its lease.
    held_by: str | None = None


def lease_holder(token: object) -> str | None:
    """The consumer id in a lease token (``consumer:delivery count``), or None."""
    if not isinstance(token, str) or ":" not in token:
        return None
    return token.rpartition(":")[0] or None


@dataclass(frozen=True)
class DeadLetter:
    """Why a message died, as ``bury`` and ``bury_payload`` record it."""

    reason: str
    detail: str = ""
    #: Sealed (encrypted) failure record: exception type, message, traceback.
    failure: bytes = b""
    hostname: str = ""
    #: How many times the task ran (Celery retries + 1), when a task failed.
    attempts: int | None = None
    #: For ``bury_payload`` of a message the store no longer holds (acknowledged
    #: already): its delivery count and when the store first took it (Unix time).
    delivery_count: int | None = None
    first_seen: float | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """How long dead messages are kept: the oldest go first past either limit."""

    ttl_seconds: float = 7 * 24 * 3600
    max_per_queue: int = 10_000


@dataclass(frozen=True)
class Binding:
    """A queue bound to an exchange (kept in the store so fanout reaches every process)."""

    exchange: str
    routing_key: str
    pattern: str
    queue: str


@dataclass(frozen=True)
class QueueLifetime:
    """How long a queue and its messages live (AMQP ``x-expires``, ``auto_delete``,
    ``x-message-ttl``), as the store keeps it for every process."""

    #: The queue vanishes with its messages once unused this long; None = it stays.
    expires_seconds: float | None = None
    #: A message older than this in the queue is never handed out; None = no limit.
    message_ttl_seconds: float | None = None

    @property
    def self_expiring(self) -> bool:
        """A queue that vanishes by itself: its expired messages are dropped, not kept dead."""
        return self.expires_seconds is not None


@dataclass(frozen=True)
class WorkerBeat:
    """One worker process's last heartbeat, as the store keeps it."""

    worker: str
    seen_at: float
    info: dict[str, Any] = field(default_factory=dict)
    #: When the beat stops vouching for the worker (Unix time; None = unknown).
    expires_at: float | None = None
    #: True once the beat expired (the worker missed its beats): kept a while as lost.
    lost: bool = False


class ParentState(enum.StrEnum):
    """What the store knows of a parent task's outcome."""

    #: No completion recorded (not run yet, running, retrying, or never seen).
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    #: Failed for good, cancelled or dead.
    FAILED = "failed"


@dataclass(frozen=True)
class Completion:
    """What recording one task's outcome did to the messages waiting on it."""

    #: Dependents that became ready or delayed (every parent now done).
    released: int = 0
    #: Dependents (transitively) set aside as dead (``dependency_failed``).
    failed: int = 0


@dataclass(frozen=True)
class DependencyLink:
    """One edge of a dependency graph as the store sees it, from one task's side."""

    task_id: str
    state: ParentState
    #: Where the message of that task is held, when the store holds it.
    queue: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class DependencyInfo:
    """The graph around one task: its parents (with their outcomes) and its children."""

    task_id: str
    #: The task's own outcome as recorded by ``complete``.
    state: ParentState
    parents: list[DependencyLink] = field(default_factory=list)
    children: list[DependencyLink] = field(default_factory=list)
    on_parent_failure: str = "dead"
    dependency_deadline: float | None = None


@dataclass(frozen=True)
class LimitDefinition:
    """A named limit as the store keeps it; times in whole microseconds."""

    name: str
    #: "rate" (GCRA: ``interval_us`` = the period over the count, ``tolerance_us`` =
    #: burst x interval) or "concurrency" (``slots`` running at once).
    kind: str
    interval_us: int = 0
    tolerance_us: int = 0
    slots: int = 0
    #: "settings" (written by workers from the app's settings) or "runtime" (set by an
    #: operator; settings never overwrite it until it is removed).
    origin: str = "settings"


@dataclass(frozen=True)
class LimitKeyStatus:
    """One key of a limit: what waits on it and what it holds."""

    key: str
    #: Ready messages under this limit and key (handed out when it admits them).
    waiting: int = 0
    #: Concurrency: leases holding a slot now.
    running: int = 0
    #: Rate: the earliest Unix time (seconds) the next start may happen; None = now.
    next_start: float | None = None


@dataclass(frozen=True)
class LimitStatus:
    definition: LimitDefinition
    keys: list[LimitKeyStatus] = field(default_factory=list)
    #: Starts under this limit (all keys) in the last ``window_seconds`` (rate: its period;
    #: concurrency: 60 s).
    recent_starts: int = 0
    window_seconds: float = 60.0
