"""The Store contract: every storage operation the transport and the extension need.

A message lives in exactly one state at a time::

    waiting (dependencies) -> delayed (ETA) -> ready -> in flight (leased) -> done | dead

Ready messages are handed out by priority (higher first), FIFO within a priority.
Taking a message and recording its lease is one atomic step (``fetch``); a lease
that is not renewed expires and the next ``fetch`` on that queue puts the message
back in ready. Every delivery raises the message's delivery count; a fetch that
would deliver a message more than ``max_deliveries`` times sets it aside as dead
with reason ``max_deliveries`` instead.

Times are Unix timestamps in seconds (floats); durations carry their unit in
their name. Implementations: :mod:`tq_kombu.store.redis`, :mod:`tq_kombu.store.sqlite`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .waiting import ThreadWaiter, Waiter


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
    DEPENDENCY_FAILED = "dependency_failed"
    MEMORY_LIMIT = "memory_limit"
    #: Opened, but not a message kombu and Celery can consume (structure, types).
    MALFORMED = "malformed"
    #: The store's own record of the message cannot be read (metadata, a column).
    CORRUPT = "corrupt"
    #: Over ``max_message_bytes``, stored or decompressed.
    TOO_LARGE = "too_large"


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
    #: Stored as WAITING (for the dependency resolver) until ``release_waiting``.
    waiting: bool = False
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
    worker: str
    seen_at: float
    info: dict[str, Any] = field(default_factory=dict)


class Store(ABC):
    """Storage behind the tq transport. Implementations must be safe to share
    between the threads of one process and between processes on the same data."""

    #: kombu ``driver_type`` reported by transports on this store.
    driver_type: str = "tq"
    #: How long dead messages are kept (applied whenever one is set aside).
    retention: RetentionPolicy = RetentionPolicy()

    # -- connection -------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~tq_kombu.errors.StoreError` if the store cannot be reached."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store may be used again afterwards (it reconnects)."""

    # -- publish ----------------------------------------------------------
    @abstractmethod
    def enqueue(self, queue: str, message: NewMessage) -> None:
        """Store ``message`` as ready, delayed (``eta`` in the future) or waiting."""

    # -- consume ----------------------------------------------------------
    @abstractmethod
    def fetch(
        self,
        queues: Sequence[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: Collection[str] = (),
    ) -> FetchResult:
        """Atomically promote due delayed messages, return expired leases to ready,
        then lease up to ``max_count`` of the most urgent ready messages across
        ``queues``, leaving messages of ``skip_task_names`` in place."""

    @abstractmethod
    def take(self, queues: Sequence[str], max_count: int) -> FetchResult:
        """Like :meth:`fetch`, but for consumers that never acknowledge (AMQP no-ack):
        atomically remove up to ``max_count`` of the most urgent ready messages and hand
        them out without a lease (empty token); nothing can redeliver them."""

    @abstractmethod
    def wait(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Block until a message may have become ready in ``queues`` or the timeout passes."""

    def new_waiter(self) -> Waiter:
        """A waiter for one consumer that must not block (an event loop): its file
        descriptor turns readable when :meth:`wait` would return (see
        :mod:`tq_kombu.store.waiting`). By default :meth:`wait` runs in a thread;
        a store with a socket to block on offers that instead."""
        return ThreadWaiter(lambda queues, timeout, stop: self.wait(queues, timeout))

    @abstractmethod
    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> list[Lease]:
        """Extend the given leases; return those no longer held (expired and re-delivered)."""

    @abstractmethod
    def ack(self, lease: Lease) -> bool:
        """Remove a delivered message for good; False if the lease was no longer held."""

    @abstractmethod
    def release(self, lease: Lease) -> bool:
        """Return an unprocessed message to ready (e.g. prefetched at shutdown); the
        delivery stays counted, so a message that keeps coming back still reaches
        ``max_deliveries``."""

    @abstractmethod
    def requeue(self, lease: Lease) -> bool:
        """Return a message to ready at its priority (the delivery stays counted)."""

    @abstractmethod
    def bury(self, lease: Lease, dead: DeadLetter) -> bool:
        """Set a delivered message aside as dead; then apply the retention policy."""

    @abstractmethod
    def bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        """Set the message ``message.message_id`` of ``queue`` aside as dead, whatever
        state it is in, without a lease (e.g. a task that failed in a pool process):

        - held ready, delayed, waiting or in flight: it moves to dead in place, keeping
          its stored payload, first-seen time and delivery count (``message`` is not
          used); a lease on it is no longer held, so a later ack or reject does nothing;
        - already dead: nothing changes;
        - not held (acknowledged already): ``message`` is stored as dead, with
          ``dead.delivery_count`` and ``dead.first_seen`` when given.

        Then applies the retention policy, in the same atomic step. Returns the state
        the message was in before, or None when it was not held."""

    @abstractmethod
    def replay(
        self, queue: str, message_id: str, to_queue: str | None = None, priority: int | None = None
    ) -> bool:
        """Atomically move a dead message back to ready (in ``to_queue`` if given, at
        ``priority`` if given), its delivery count reset and its dead-letter record
        dropped; False (and nothing changes) if it is not dead or ``to_queue`` already
        holds a message with its id."""

    def replay_many(
        self,
        queue: str,
        message_ids: Iterable[str],
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """:meth:`replay` each of ``message_ids`` (each atomically, in batches where the
        store can); return how many were replayed."""
        return sum(self.replay(queue, mid, to_queue, priority) for mid in message_ids)

    @abstractmethod
    def trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        """Drop the queue's dead messages beyond the policy, oldest first; return how many."""

    @abstractmethod
    def dead_failure(self, queue: str, message_id: str) -> bytes:
        """The sealed failure record of a dead message (empty if none)."""

    @abstractmethod
    def ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        """Ready messages per priority: ``{priority: (count, created_at of the oldest)}``."""

    # -- inspect and administer -------------------------------------------
    @abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues holding at least one message (in any state), sorted."""

    @abstractmethod
    def counts(self, queue: str) -> QueueCounts:
        """Count the queue's messages in each state."""

    @abstractmethod
    def info(self, queue: str, message_id: str) -> MessageInfo | None:
        """Describe one message, or None if the queue holds no such message."""

    @abstractmethod
    def list_messages(
        self, queue: str, state: State, offset: int = 0, limit: int = 100
    ) -> list[MessageInfo]:
        """Messages of ``queue`` in ``state``, in the order they would be handed out
        (ready), come due (delayed), expire (in flight) or died (dead)."""

    @abstractmethod
    def payload(self, queue: str, message_id: str) -> bytes | None:
        """The stored payload of a message in any state, or None."""

    @abstractmethod
    def cancel(self, queue: str, message_id: str) -> bool:
        """Delete a ready, delayed or waiting message so it never runs; False if not found there."""

    @abstractmethod
    def set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        """Change the priority of a queued (not in flight) message."""

    @abstractmethod
    def release_waiting(self, queue: str, message_id: str) -> bool:
        """Move a waiting message to delayed (ETA in the future) or ready."""

    @abstractmethod
    def purge(self, queue: str, state: State = State.READY) -> int:
        """Delete every message of ``queue`` in ``state``; return how many."""

    @abstractmethod
    def delete_queue(self, queue: str) -> None:
        """Delete a queue with everything it holds, in every state."""

    # -- queue lifetime (x-expires, auto_delete, message TTL) --------------------
    @abstractmethod
    def declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        """Record (or refresh) how long ``queue`` and its messages live. A self-expiring
        queue vanishes ``lifetime.expires_seconds`` after its last declaration unless
        declared again; a lifetime with neither limit forgets the record.

        Messages enqueued afterwards expire ``message_ttl_seconds`` after they arrive
        (or sooner, by their own ``ttl_seconds``). An expired message is never handed
        out: ``fetch`` and ``take`` drop it in a self-expiring queue and set it aside as
        dead (reason ``expired``) in any other queue."""

    @abstractmethod
    def lifetime(self, queue: str) -> QueueLifetime | None:
        """The recorded lifetime of ``queue``, or None."""

    @abstractmethod
    def expire_queues(self) -> list[str]:
        """Delete every self-expiring queue not declared again within its expiry: its
        messages in every state, its lifetime record and its bindings. Returns their names."""

    # -- bindings (shared so that fanout and topic exchanges span processes) ----
    @abstractmethod
    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        """Record (or refresh) a binding; one with an expiry vanishes unless re-bound in time."""

    @abstractmethod
    def unbind(self, binding: Binding) -> None: ...

    @abstractmethod
    def bindings(self, exchange: str) -> list[Binding]:
        """Live bindings of ``exchange``."""

    # -- workers ----------------------------------------------------------
    @abstractmethod
    def heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        """Record that ``worker`` is alive for the next ``ttl_seconds``."""

    @abstractmethod
    def workers(self) -> list[WorkerBeat]:
        """Workers whose last heartbeat has not expired."""
