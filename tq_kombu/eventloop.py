"""Consuming without blocking: in the Celery worker's event loop, and in ``drain_events``
while prefetch credit may come back from another thread.

Both depend only on two small protocols: a :class:`ConsumingChannel` (what a channel
offers: its queues, its prefetch credit, ``fetch_and_deliver``) and the store's
:class:`~tq_kombu.store.waiting.Waiter` (a wait whose file descriptor turns readable
when work may be ready: a socket for Redis, a pipe fed by a thread for SQLite).

In the loop, an idle channel with credit arms its waiter and the loop watches the
descriptor; when it turns readable the channel fetches (and leases) the most urgent
messages in one call. While a fetch leaves ready messages behind, the channel fetches
again on the next loop tick instead of waiting.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Sequence
from time import time
from typing import Any, Generic, Protocol, TypeVar

from .store.waiting import Waiter


class Credit(Protocol):
    def can_consume(self) -> bool: ...


class ConsumingChannel(Protocol):
    """What the consumers below need of a channel."""

    #: Ready messages may remain: fetch again as soon as there is credit.
    maybe_more: bool
    #: When a delayed message comes due or a lease expires (Unix time), if known.
    next_due: float | None

    @property
    def qos(self) -> Credit: ...

    def consumed_queues(self) -> list[str]: ...

    def fetch_and_deliver(self) -> int: ...


C = TypeVar("C", bound=ConsumingChannel)

#: A due-time timer fires this much after the due time, so the fetch finds it passed.
DUE_MARGIN_SECONDS = 0.001


class _Pipe:
    """A self-pipe another thread may write to at any time, even while it is closed."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._closed = False

    def write(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"w")
            except BlockingIOError:
                pass  # full: a wake-up is pending already

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 256):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self.read_fd, self._write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass


class _Waiters(Generic[C]):
    """One waiter per channel; the caller drops one that failed (the next arm reopens it)."""

    def __init__(self, new_waiter: Callable[[], Waiter]) -> None:
        self.new_waiter = new_waiter
        self.by_channel: dict[C, Waiter] = {}

    def arm(self, channel: C, timeout_seconds: float) -> Waiter:
        waiter = self.by_channel.get(channel)
        if waiter is None:
            waiter = self.by_channel[channel] = self.new_waiter()
        if not waiter.armed:
            waiter.arm(channel.consumed_queues(), timeout_seconds)
        return waiter

    def armed(self, channel: C) -> bool:
        waiter = self.by_channel.get(channel)
        return waiter is not None and waiter.armed

    def finish(self, channel: C) -> bool:
        """End the channel's wait; False when it broke instead (then drop the waiter)."""
        waiter = self.by_channel.get(channel)
        return waiter is not None and waiter.finish()

    def drop(self, channel: C) -> None:
        waiter = self.by_channel.pop(channel, None)
        if waiter is not None:
            waiter.close()

    def close(self) -> None:
        for channel in list(self.by_channel):
            self.drop(channel)


class EventLoopConsumer(Generic[C]):
    """Drives every consuming channel of a transport from the event loop's ticks."""

    def __init__(
        self,
        loop: Any,
        channels: Callable[[], Sequence[C]],
        new_waiter: Callable[[], Waiter],
        wait_timeout: Callable[[list[C]], float],
    ) -> None:
        self.loop = loop
        self.channels = channels
        self.wait_timeout = wait_timeout
        self.waiters: _Waiters[C] = _Waiters(new_waiter)
        #: The descriptor registered with the loop for each channel's waiter.
        self.fds: dict[C, int] = {}
        #: A loop timer per idle channel at its ``next_due`` (and that time).
        self._timers: dict[C, tuple[float, Any]] = {}
        # A pipe written to so that the loop comes round again at once: a channel has
        # credit and ready messages are left, callbacks are pending, or credit came
        # back from another thread.
        self._kick = _Pipe()
        self._kicked = False
        self._loop_thread: int | None = None
        loop.add_reader(self._kick.read_fd, self._on_kick)

    def on_tick(self) -> None:
        """Fetch for channels that may have work; arm the waiters of the others."""
        self._loop_thread = threading.get_ident()
        now = time()
        more = False
        for channel in self.channels():
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
                self._arm(channel)
        # Celery acks through hub.call_soon, which does not interrupt the poll when
        # called from the loop itself: come round at once so credit returns promptly.
        if (more or getattr(self.loop, "_ready", None)) and not self._kicked:
            self._kicked = True
            self._kick.write()

    def credit_returned(self) -> None:
        """An ack or reject freed prefetch credit: from another thread, wake the loop."""
        if threading.get_ident() != self._loop_thread:
            self._kick.write()

    def _arm(self, channel: C) -> None:
        try:
            waiter = self.waiters.arm(channel, self.wait_timeout([channel]))
        except BaseException:
            self.forget(channel)
            raise
        fd = waiter.fileno()
        if fd != self.fds.get(channel):
            self._unregister(channel)
            if fd is not None:
                self.loop.add_reader(fd, self.on_readable, fd)
                self.fds[channel] = fd
        self._wake_when_due(channel)

    def _wake_when_due(self, channel: C) -> None:
        """Come round at the channel's ``next_due`` (a delayed message, a lease, a limit),
        on a loop timer: a store's blocking wait may end late (Redis checks the
        timeouts of blocked clients about ten times a second)."""
        due = channel.next_due
        current = self._timers.get(channel)
        if current is not None and current[0] == due:
            return
        self._cancel_timer(channel)
        call_later = getattr(self.loop, "call_later", None)
        if due is not None and call_later is not None:
            delay = max(due - time(), 0.0) + DUE_MARGIN_SECONDS
            self._timers[channel] = (due, call_later(delay, self.on_tick))

    def _cancel_timer(self, channel: C) -> None:
        entry = self._timers.pop(channel, None)
        if entry is not None:
            entry[1].cancel()

    def _on_kick(self) -> None:
        self._kick.drain()
        self._kicked = False
        self.on_tick()

    def on_readable(self, fileno: int) -> None:
        for channel, fd in list(self.fds.items()):
            if fd == fileno:
                try:
                    finished = self.waiters.finish(channel)
                except BaseException:
                    self.forget(channel)
                    raise
                if finished:
                    channel.maybe_more = True
                    self.on_tick()
                else:
                    self.forget(channel)
                return

    def _unregister(self, channel: C) -> None:
        self._cancel_timer(channel)
        fd = self.fds.pop(channel, None)
        if fd is not None:
            try:
                self.loop.remove_reader(fd)
            except (KeyError, ValueError, OSError):
                pass

    def forget(self, channel: C) -> None:
        """Stop watching the channel's waiter, then close it (in that order: a closed
        descriptor's number may be reused at once)."""
        self._unregister(channel)
        self.waiters.drop(channel)

    def close(self) -> None:
        for channel in list(self._timers):
            self._cancel_timer(channel)
        for channel in list(self.fds):
            self._unregister(channel)
        self.waiters.close()
        try:
            self.loop.remove_reader(self._kick.read_fd)
        except (KeyError, ValueError, OSError):
            pass
        self._kick.close()


class DrainWait(Generic[C]):
    """``drain_events``' wait for work (kombu clients without an event loop).

    While every consuming channel has prefetch credit, it blocks in the store's wait.
    Once one has none, an ack from another thread may return it at any moment: then
    the waiters of the channels with credit and a credit pipe are watched together,
    so that such an ack leads to a fetch at once instead of after the wait's timeout.
    A waiter left armed by such a wait is watched again next time (never alongside the
    store's own wait, which could miss the wake-up the waiter takes).
    """

    def __init__(self, new_waiter: Callable[[], Waiter]) -> None:
        self.waiters: _Waiters[C] = _Waiters(new_waiter)
        self._credit = _Pipe()
        self._watching = False

    def credit_returned(self) -> None:
        """An ack or reject freed prefetch credit (from any thread)."""
        if self._watching:
            self._credit.write()

    def wait(
        self,
        channels: Sequence[C],
        timeout_seconds: float,
        store_wait: Callable[[list[str], float], None],
    ) -> None:
        """Block until a consumed queue may have work, credit comes back, or the timeout."""
        self._watching = True
        try:
            self._credit.drain()  # before looking at the credit: a later ack writes again
            credited = [ch for ch in channels if ch.qos.can_consume()]
            if len(credited) == len(channels) and not any(map(self.waiters.armed, credited)):
                queues = [q for ch in credited for q in ch.consumed_queues()]
                store_wait(list(dict.fromkeys(queues)), timeout_seconds)
                return
            watched: dict[int, C | None] = {self._credit.read_fd: None}
            for channel in credited:
                try:
                    fd = self.waiters.arm(channel, timeout_seconds).fileno()
                except BaseException:
                    self.waiters.drop(channel)
                    raise
                if fd is not None:
                    watched[fd] = channel
            poller = select.poll()  # not select.select: descriptors may exceed 1023
            for fd in watched:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(max(timeout_seconds, 0.0) * 1000):
                waiting = watched[fd]
                if waiting is None:
                    continue
                try:
                    finished = self.waiters.finish(waiting)
                except BaseException:
                    self.waiters.drop(waiting)
                    raise
                if not finished:
                    self.waiters.drop(waiting)
        finally:
            self._watching = False

    def forget(self, channel: C) -> None:
        self.waiters.drop(channel)

    def close(self) -> None:
        self.waiters.close()
        self._credit.close()
