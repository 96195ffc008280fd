"""The Redis store's waiter: BZPOPMIN on the queues' marker keys, on a dedicated
connection whose socket the event loop watches (as BullMQ's workers block)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .redis import RedisStore


class SocketWaiter:
    """One consumer's blocking wait: at most one BZPOPMIN in flight."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.connection: Any = None
        self._armed = False

    @property
    def armed(self) -> bool:
        return self._armed

    def fileno(self) -> int | None:
        sock = getattr(self.connection, "_sock", None)
        return None if sock is None else int(sock.fileno())

    def arm(self, queues: Sequence[str], timeout_seconds: float) -> None:
        if self._armed:
            return
        if self.connection is None:
            self.connection = self.store.new_connection()
            self.connection.connect()
        self.store.send_wait(self.connection, queues, timeout_seconds)
        self._armed = True

    def finish(self) -> bool:
        """Read the reply of the wait; False when the server hung up instead."""
        if not self._armed:
            return False  # readable without a request: the server hung up
        self._armed = False
        self.store.read_wait(self.connection)
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
