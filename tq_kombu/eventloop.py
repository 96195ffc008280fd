"""Consuming from the Redis store inside the Celery worker's event loop.

Like BullMQ's workers, an idle channel blocks on its queues' marker keys with
BZPOPMIN, on a dedicated connection whose socket the event loop watches; a
publish touches the marker, the socket turns readable, and the channel fetches
(and leases) the most urgent messages in one script call. While a fetch leaves
ready messages behind, the channel fetches again on the next loop tick instead.
"""

from __future__ import annotations

import os
from time import time
from typing import TYPE_CHECKING, Any

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from .store.redis import RedisStore
    from .transport import TQChannel as Channel
    from .transport import Transport


class ChannelWaiter:
    """One channel's blocking wait: at most one BZPOPMIN in flight."""

    def __init__(self, channel: Channel, store: RedisStore, loop: Any, on_readable: Any) -> None:
        self.channel = channel
        self.store = store
        self.loop = loop
        self.on_readable = on_readable
        self.connection: Any = None
        self.fileno: int | None = None
        self.armed = False

    def arm(self, timeout_seconds: float) -> None:
        try:
            if self.connection is None:
                self.connection = self.store.new_connection()
                self.connection.connect()
            self.store.send_wait(self.connection, self.channel.consumed_queues(), timeout_seconds)
        except StoreUnavailable:
            self.close()
            raise
        self.armed = True
        fileno = self.connection._sock.fileno()
        if fileno != self.fileno:
            self._unregister()
            self.loop.add_reader(fileno, self.on_readable, fileno)
            self.fileno = fileno

    def finish(self) -> bool:
        """Read the reply of the wait; False when the connection had been closed instead."""
        if not self.armed:
            self.close()  # readable without a request: the server hung up
            return False
        try:
            self.store.read_wait(self.connection)
        except StoreUnavailable:
            self.close()
            raise
        self.armed = False
        return True

    def _unregister(self) -> None:
        if self.fileno is not None:
            try:
                self.loop.remove_reader(self.fileno)
            except (KeyError, ValueError, OSError):
                pass
            self.fileno = None

    def close(self) -> None:
        """Drop the connection; the next wait opens a new one."""
        self._unregister()
        self.armed = False
        if self.connection is not None:
            try:
                self.connection.disconnect()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
            self.connection = None


class EventLoopConsumer:
    """Drives every consuming channel of a transport from the event loop's ticks."""

    def __init__(self, transport: Transport, loop: Any) -> None:
        self.transport = transport
        self.loop = loop
        self.store: RedisStore = transport.store  # type: ignore[assignment]
        self.waiters: dict[Channel, ChannelWaiter] = {}
        # A pipe we write to so that the loop comes round again at once when a
        # channel has credit and ready messages are left, or callbacks are pending.
        self._kick_read, self._kick_write = os.pipe()
        os.set_blocking(self._kick_read, False)
        os.set_blocking(self._kick_write, False)
        self._kicked = False
        loop.add_reader(self._kick_read, self._on_kick)

    def on_tick(self) -> None:
        """Fetch for channels that may have work; block on the markers for the others."""
        now = time()
        more = False
        for channel in self.transport._consuming_channels():
            if not channel.qos.can_consume():
                continue
            due = channel.next_due is not None and channel.next_due <= now
            if channel.maybe_more or due:
                channel.fetch_and_deliver()
            if not channel.qos.can_consume():
                continue
            if channel.maybe_more:
                more = True
            else:
                waiter = self._waiter(channel)
                if not waiter.armed:
                    waiter.arm(self.transport.wait_timeout([channel]))
        # Celery acks through hub.call_soon, which does not interrupt the poll when
        # called from the loop itself: come round at once so credit returns promptly.
        if (more or getattr(self.loop, "_ready", None)) and not self._kicked:
            self._kicked = True
            os.write(self._kick_write, b"k")

    def _on_kick(self) -> None:
        try:
            os.read(self._kick_read, 64)
        except BlockingIOError:
            pass
        self._kicked = False
        self.on_tick()

    def _waiter(self, channel: Channel) -> ChannelWaiter:
        waiter = self.waiters.get(channel)
        if waiter is None:
            waiter = ChannelWaiter(channel, self.store, self.loop, self.transport.on_readable)
            self.waiters[channel] = waiter
        return waiter

    def on_readable(self, fileno: int) -> None:
        for channel, waiter in list(self.waiters.items()):
            if waiter.fileno == fileno:
                if waiter.finish():
                    channel.maybe_more = True
                    self.on_tick()
                return

    def forget(self, channel: Channel) -> None:
        waiter = self.waiters.pop(channel, None)
        if waiter is not None:
            waiter.close()

    def close(self) -> None:
        for channel in list(self.waiters):
            self.forget(channel)
        try:
            self.loop.remove_reader(self._kick_read)
        except (KeyError, ValueError, OSError):
            pass
        for fd in (self._kick_read, self._kick_write):
            try:
                os.close(fd)
            except OSError:
                pass
