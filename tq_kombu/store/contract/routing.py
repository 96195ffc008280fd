"""Routing: how messages reach queues (bindings of exchanges, kept in the store so that
fanout and topic exchanges span processes) and how long queues live (AMQP
``x-expires``, ``auto_delete``, ``x-message-ttl``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ...errors import ConfigurationError
from ..model import Binding, QueueLifetime
from .checks import checked_queue, checked_seconds


class Routing(ABC):
    """Bindings and queue lifetimes."""

    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        """Record (or refresh) a binding; one with an expiry vanishes unless re-bound in time."""
        if not isinstance(binding, Binding):
            raise ConfigurationError(f"expected a Binding, got {type(binding).__name__}")
        checked_queue(binding.queue, "binding queue")
        expires = (
            None if expires_seconds is None else checked_seconds(expires_seconds, "expires_seconds")
        )
        self._bind(binding, expires)

    def unbind(self, binding: Binding) -> None:
        """Forget a binding (nothing happens if it is not recorded)."""
        self._unbind(binding)

    def bindings(self, exchange: str) -> list[Binding]:
        """Live bindings of ``exchange``, ordered by queue, routing key and pattern."""
        return self._bindings(str(exchange))

    def declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        """Record (or refresh) how long ``queue`` and its messages live. A self-expiring
        queue vanishes ``lifetime.expires_seconds`` after its last declaration unless
        declared again; a lifetime with neither limit forgets the record.

        Messages enqueued afterwards expire ``message_ttl_seconds`` after they arrive
        (or sooner, by their own ``ttl_seconds``). An expired message is never handed
        out: ``fetch`` and ``take`` drop it in a self-expiring queue and set it aside as
        dead (reason ``expired``) in any other queue."""
        for name in ("expires_seconds", "message_ttl_seconds"):
            value = getattr(lifetime, name)
            if value is not None:
                checked_seconds(value, name, allow_zero=True)
        self._declare_queue(checked_queue(queue), lifetime)

    def lifetime(self, queue: str) -> QueueLifetime | None:
        """The recorded lifetime of ``queue``, or None."""
        return self._lifetime(checked_queue(queue))

    def expire_queues(self) -> list[str]:
        """Delete every self-expiring queue not declared again within its expiry: its
        messages in every state, its lifetime record and its bindings. Returns their names."""
        return self._expire_queues()

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _bind(self, binding: Binding, expires_seconds: float | None) -> None: ...

    @abstractmethod
    def _unbind(self, binding: Binding) -> None: ...

    @abstractmethod
    def _bindings(self, exchange: str) -> list[Binding]: ...

    @abstractmethod
    def _declare_queue(self, queue: str, lifetime: QueueLifetime) -> None: ...

    @abstractmethod
    def _lifetime(self, queue: str) -> QueueLifetime | None: ...

    @abstractmethod
    def _expire_queues(self) -> list[str]: ...
