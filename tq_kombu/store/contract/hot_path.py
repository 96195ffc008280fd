"""The hot path: what every publish and every consumed message goes through.

Ready messages are handed out by priority (higher first), FIFO within a priority inside
each queue. Across the queues of one fetch, messages of one priority come in an order
each store states (SQLite and memory: arrival; Redis: each queue's own sequence, so
queues interleave). Taking a message and recording its lease is one atomic step
(``fetch``); a lease that is not renewed expires and the next ``fetch`` on that queue
puts the message back in ready. Every delivery raises the message's delivery count,
and nothing lowers it; a fetch that would deliver a message more than
``max_deliveries`` times sets it aside as dead (``max_deliveries``) instead.

Each fetch first promotes up to :data:`PROMOTE_LIMIT` due delayed messages and as
many expired leases per queue, and, when it skips task names, looks at most
:data:`SKIP_SCAN_LIMIT` ready messages deep per queue for one it may hand out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence

from ..model import DeadLetter, FetchResult, Lease, NewMessage, RetentionPolicy
from ..waiting import ThreadWaiter, Waiter
from .checks import (
    checked_count,
    checked_lease,
    checked_leases,
    checked_message,
    checked_queue,
    checked_queues,
    checked_seconds,
    names,
)

#: Most due delayed messages (and, apart, expired leases) one fetch promotes per queue.
PROMOTE_LIMIT = 1000
#: How deep one fetch looks into a queue's ready messages past skipped task names.
SKIP_SCAN_LIMIT = 1000


class HotPath(ABC):
    """Publish, consume and settle."""

    #: How long dead messages are kept (applied whenever one is set aside).
    retention: RetentionPolicy = RetentionPolicy()

    def enqueue(self, queue: str, message: NewMessage) -> None:
        """Store ``message`` as ready, delayed (``eta`` in the future) or waiting; an id
        the queue already holds changes nothing (the first copy stands)."""
        self._enqueue(checked_queue(queue), checked_message(message))

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
        set aside messages past their time to live, then lease up to ``max_count`` of
        the most urgent ready messages across ``queues``, leaving messages of
        ``skip_task_names`` in place."""
        names_ = checked_queues(queues)
        count = checked_count(max_count, "max_count")
        if not names_:
            return FetchResult([], False, None)
        return self._fetch(
            names_,
            count,
            str(consumer_id),
            checked_seconds(lease_seconds, "lease_seconds"),
            checked_count(max_deliveries, "max_deliveries", minimum=1),
            names(list(skip_task_names)),
        )

    def take(self, queues: Sequence[str], max_count: int) -> FetchResult:
        """Like :meth:`fetch`, but for consumers that never acknowledge (AMQP no-ack):
        atomically remove up to ``max_count`` of the most urgent ready messages and hand
        them out without a lease (empty token); nothing can redeliver them."""
        names_ = checked_queues(queues)
        count = checked_count(max_count, "max_count")
        if not names_:
            return FetchResult([], False, None)
        return self._take(names_, count)

    def wait(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Block until a message may have become ready in ``queues`` or the timeout
        passes; never longer than the timeout, and with nothing published meanwhile not
        much shorter. Like a condition variable it may wake early (Redis wakes whenever
        a queue changes), and a store need not wake for a delayed message coming due or
        a lease running out (Redis does not): a consumer bounds its timeout by the last
        fetch's ``next_due`` and fetches after every wake."""
        names_ = checked_queues(queues)
        timeout = checked_seconds(timeout_seconds, "timeout_seconds", allow_zero=True)
        if names_ and timeout > 0:
            self._wait(names_, timeout)

    def new_waiter(self) -> Waiter:
        """A waiter for one consumer that must not block (an event loop): its file
        descriptor turns readable when :meth:`wait` would return (see
        :mod:`tq_kombu.store.waiting`). By default :meth:`wait` runs in a thread; a
        store with a socket to block on offers that instead."""
        return ThreadWaiter(lambda queues, timeout, stop: self.wait(queues, timeout))

    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> list[Lease]:
        """Extend the given leases; return those no longer held (settled, expired and
        handed out again, or set aside)."""
        held = checked_leases(leases)
        if not held:
            return []
        return self._renew(held, checked_seconds(lease_seconds, "lease_seconds"))

    def ack(self, lease: Lease) -> bool:
        """Remove a delivered message for good; False if the lease was no longer held."""
        return self._ack(checked_lease(lease))

    def release(self, lease: Lease) -> bool:
        """Return a message its consumer let go of unsettled, whose task may have started
        (a closing channel); the delivery stays counted, so a message that keeps coming
        back still reaches ``max_deliveries``. One known never to have started is given
        back instead (:meth:`give_back`)."""
        return self._release(checked_lease(lease))

    def requeue(self, lease: Lease) -> bool:
        """Return a message to ready at its priority (the delivery stays counted)."""
        return self._requeue(checked_lease(lease))

    def give_back(self, lease: Lease) -> bool:
        """Return a message fetched but never started (prefetched when a worker shuts
        down warm) to ready at its priority, its delivery count back to what it was
        before this fetch: never lower, and not raised by a delivery that ran nothing."""
        return self._give_back(checked_lease(lease))

    def bury(self, lease: Lease, dead: DeadLetter) -> bool:
        """Set a delivered message aside as dead; then apply the retention policy."""
        return self._bury(checked_lease(lease), dead)

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _enqueue(self, queue: str, message: NewMessage) -> None: ...

    @abstractmethod
    def _fetch(
        self,
        queues: list[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: list[str],
    ) -> FetchResult: ...

    @abstractmethod
    def _take(self, queues: list[str], max_count: int) -> FetchResult: ...

    @abstractmethod
    def _wait(self, queues: list[str], timeout_seconds: float) -> None: ...

    @abstractmethod
    def _renew(self, leases: list[Lease], lease_seconds: float) -> list[Lease]: ...

    @abstractmethod
    def _ack(self, lease: Lease) -> bool: ...

    @abstractmethod
    def _give_back(self, lease: Lease) -> bool: ...

    @abstractmethod
    def _release(self, lease: Lease) -> bool: ...

    @abstractmethod
    def _requeue(self, lease: Lease) -> bool: ...

    @abstractmethod
    def _bury(self, lease: Lease, dead: DeadLetter) -> bool: ...
