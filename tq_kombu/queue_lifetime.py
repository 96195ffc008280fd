"""Queue lifetime: AMQP ``x-expires``, ``auto_delete`` and ``x-message-ttl`` on a Store.

Celery's control plane declares its queues this way: a worker's ``<host>.celery.pidbox``
and every reply queue (``control_queue_expires``, ``control_queue_ttl``), each event
receiver's ``celeryev.*`` queue and each worker's gossip queue (``event_queue_expires``,
``event_queue_ttl``). The store records a queue's lifetime (:meth:`Store.declare_queue`);
this module decides it from kombu's declaration and keeps the queues a process consumes
alive, so that only the queues of stopped (or killed) consumers vanish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from time import monotonic
from typing import Any

from .errors import ConfigurationError
from .options import OPTIONS
from .store.contract import Routing
from .store.model import Binding, QueueLifetime

logger = logging.getLogger(__name__)

#: Expiry of an auto-delete (or exclusive) queue declared without ``x-expires``: kombu's
#: virtual transports cannot see its last consumer go, so it vanishes this long after
#: its last consumer in any process stopped refreshing it (killed with -9 included).
AUTO_DELETE_EXPIRES_SECONDS: float = OPTIONS["auto_delete_expires_seconds"].default
#: How often a process deletes the expired queues of every process from the store.
QUEUE_SWEEP_INTERVAL_SECONDS: float = OPTIONS["queue_sweep_interval_seconds"].default


def _seconds(arguments: Mapping[str, Any], name: str) -> float | None:
    """An AMQP queue argument in milliseconds, as seconds (None when absent)."""
    value = arguments.get(name)
    if value is None:
        return None
    try:
        milliseconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"queue argument {name}={value!r} is not a number of milliseconds"
        ) from None
    if milliseconds < 0:
        raise ConfigurationError(f"queue argument {name}={value!r} must not be negative")
    return milliseconds / 1000


def lifetime_of(
    declaration: Mapping[str, Any], auto_delete_expires_seconds: float
) -> QueueLifetime:
    """The lifetime kombu's ``queue_declare`` keyword arguments ask for."""
    arguments = declaration.get("arguments") or {}
    expires = _seconds(arguments, "x-expires")
    if expires is None and (declaration.get("auto_delete") or declaration.get("exclusive")):
        expires = auto_delete_expires_seconds
    return QueueLifetime(expires, _seconds(arguments, "x-message-ttl"))


def message_ttl_seconds(properties: Mapping[str, Any]) -> float | None:
    """A message's own time to live: its AMQP ``expiration`` property (milliseconds)."""
    expiration = properties.get("expiration")
    if expiration in (None, ""):
        return None
    try:
        return max(float(expiration), 0.0) / 1000
    except (TypeError, ValueError):
        logger.warning("tq: ignoring unreadable expiration %r (expected milliseconds)", expiration)
        return None


class QueueKeeper:
    """The self-expiring queues (and their bindings) one process declared: re-declared
    while the process consumes them; plus a periodic sweep of expired queues."""

    def __init__(
        self,
        store: Routing,
        consumed: Callable[[], Iterable[str]],
        sweep_interval_seconds: float = QUEUE_SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self.store = store
        self.consumed = consumed
        self.sweep_interval_seconds = sweep_interval_seconds
        self._lifetimes: dict[str, QueueLifetime] = {}
        self._bindings: dict[Binding, None] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def declare(self, queue: str, lifetime: QueueLifetime) -> None:
        """Record the lifetime in the store; a self-expiring queue is kept from now on."""
        self.store.declare_queue(queue, lifetime)
        with self._lock:
            if lifetime.self_expiring:
                self._lifetimes[queue] = lifetime
            else:
                self._lifetimes.pop(queue, None)

    def expires_seconds(self, queue: str) -> float | None:
        """The expiry of a queue this process declared self-expiring, else None."""
        with self._lock:
            lifetime = self._lifetimes.get(queue)
        return None if lifetime is None else lifetime.expires_seconds

    def bound(self, binding: Binding) -> None:
        with self._lock:
            if binding.queue in self._lifetimes:
                self._bindings[binding] = None

    def unbound(self, binding: Binding) -> None:
        with self._lock:
            self._bindings.pop(binding, None)

    def forget(self, queue: str) -> None:
        with self._lock:
            self._lifetimes.pop(queue, None)
            for binding in [b for b in self._bindings if b.queue == queue]:
                del self._bindings[binding]

    def shortest_expiry_seconds(self) -> float | None:
        with self._lock:
            return min((lt.expires_seconds or 0 for lt in self._lifetimes.values()), default=None)

    def refresh(self) -> None:
        """Declare again the self-expiring queues consumed now, with their bindings; then
        sweep expired queues when the sweep is due."""
        in_use = set(self.consumed())
        with self._lock:
            lifetimes = {q: lt for q, lt in self._lifetimes.items() if q in in_use}
            bindings = [b for b in self._bindings if b.queue in lifetimes]
        for queue, lifetime in lifetimes.items():
            self.store.declare_queue(queue, lifetime)
        for binding in bindings:
            self.store.bind(binding, lifetimes[binding.queue].expires_seconds)
        if monotonic() >= self._next_sweep:
            self._next_sweep = monotonic() + self.sweep_interval_seconds
            for queue in self.store.expire_queues():
                logger.info("tq: queue %r expired unused and was deleted", queue)
