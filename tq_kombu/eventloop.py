"""Consuming from the Redis store inside the Celery worker's event loop.

Like BullMQ's workers, an idle consumer blocks on its queues' marker keys with
BZPOPMIN, here on a dedicated connection whose socket the event loop watches; a
publish touches the marker, the socket turns readable, and the channel fetches
(and leases) the most urgent messages in one script call. While a fetch leaves
ready messages behind, the channel fetches again on the next loop tick instead.
"""

from __future__ import annotations

import logging
from time import time
from typing import TYPE_CHECKING, Any

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from .store.redis import RedisStore
    from .transport import Channel, Transport

logger = logging.getLogger(__name__)


class RedisWaiter:
    """One blocking BZPOPMIN at a time, registered with the event loop ``loop``."""

    def __init__(self, transport: Transport, loop: Any) -> None:
        self.transport = transport
        self.loop = loop
        self.store: RedisStore = transport.store  # type: ignore[assignment]
        self.connection: Any = None
        self.fileno: int | None = None
        self.armed = False

    def on_tick(self) -> None:
        """Fetch for channels that may have work; block on the markers for the others."""
        now = time()
        idle: list[Channel] = []
        for channel in self.transport._consuming_channels():
            if not channel.qos.can_consume():
                continue
            due = channel.next_due is not None and channel.next_due <= now
            if channel.maybe_more or due:
                channel.fetch_and_deliver()
            if not channel.maybe_more and channel.qos.can_consume():
                idle.append(channel)
        if idle and not self.armed:
            self._arm(idle)

    def _arm(self, channels: list[Channel]) -> None:
        queues = list(dict.fromkeys(q for ch in channels for q in ch._active_queues))
        try:
            if self.connection is None:
                self.connection = self.store.new_connection()
                self.connection.connect()
            self.store.send_wait(self.connection, queues, self.transport.wait_timeout(channels))
        except StoreUnavailable:
            self.close()
            raise
        self.armed = True
        fileno = self.connection._sock.fileno()
        if fileno != self.fileno:
            self._unregister()
            self.loop.add_reader(fileno, self.transport.on_readable, fileno)
            self.fileno = fileno

    def on_readable(self, fileno: int) -> None:
        if fileno != self.fileno or self.connection is None:
            return
        if not self.armed:
            # nothing was asked: the server closed the connection
            self.close()
            return
        try:
            self.store.read_wait(self.connection)
        except StoreUnavailable:
            self.close()
            raise
        self.armed = False
        for channel in self.transport._consuming_channels():
            channel.maybe_more = True
        self.on_tick()

    def _unregister(self) -> None:
        if self.fileno is not None:
            try:
                self.loop.remove_reader(self.fileno)
            except (KeyError, ValueError, OSError):
                pass
            self.fileno = None

    def close(self) -> None:
        """Drop the connection; the next tick opens a new one."""
        self._unregister()
        self.armed = False
        if self.connection is not None:
            try:
                self.connection.disconnect()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
            self.connection = None
