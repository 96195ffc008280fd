"""The Redis store's waiter: BZPOPMIN on the queues' marker keys, on a dedicated
connection whose socket the event loop watches (as BullMQ's workers block)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .client import translated

__all__ = ["SocketWaiter"]


class SocketWaiter:
    """One consumer's blocking wait: at most one BZPOPMIN in flight."""

    def __init__(self, client: Any, marker_keys: Callable[[list[str]], list[str]]) -> None:
        self._client = client
        self._marker_keys = marker_keys
        self.connection: Any = None
        self._armed = False

    @property
    def armed(self) -> bool:
        return self._armed

    def fileno(self) -> int | None:
        sock = getattr(self.connection, "_sock", None)
        return None if sock is None else int(sock.fileno())

    def arm(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Send BZPOPMIN without reading its reply (:meth:`finish` reads it)."""
        if self._armed:
            return
        with translated():
            if self.connection is None:
                pool = self._client.connection_pool
                self.connection = pool.connection_class(**pool.connection_kwargs)
                self.connection.connect()
            keys = self._marker_keys(list(queues))
            self.connection.send_command("BZPOPMIN", *keys, f"{timeout_seconds:.3f}")
        self._armed = True

    def finish(self) -> bool:
        """Read the reply of the wait; False when the server hung up instead."""
        if not self._armed:
            return False  # readable without a request: the server hung up
        self._armed = False
        with translated():
            self.connection.read_response()
        return True

    def close(self) -> None:
        """Drop the connection; the next wait opens a new one."""
        self._armed = False
        if self.connection is not None:
            try:
                self.connection.disconnect()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
            self.connection = None
