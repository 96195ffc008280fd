"""How a store tells an event loop that a consumer may have work: the waiter capability.

A consumer that cannot block (Celery's event loop, or ``drain_events`` also watching
for returned prefetch credit) asks its store for a :class:`Waiter`, arms it with the
queues it consumes and a timeout, and watches the waiter's file descriptor. The
descriptor turns readable when a message may have become ready in those queues (or
the timeout passed); the consumer then calls :meth:`Waiter.finish` and fetches.

Stores offer one of two kinds:

- a blocking wait on a socket (Redis: BZPOPMIN on a dedicated connection, the
  descriptor is that connection's socket);
- a wait in a thread (:class:`ThreadWaiter`, SQLite): a small thread runs the
  store's own blocking wait and writes a byte to a pipe whose read end the loop watches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["ThreadWaiter", "WaitFunction", "Waiter"]


class Waiter(Protocol):
    """One consumer's wait for work, at most one in flight at a time."""

    @property
    def armed(self) -> bool:
        """True while a wait is in flight (armed and not finished yet)."""

    def fileno(self) -> int | None:
        """The descriptor to watch for readability, or None before the first arm."""

    def arm(self, queues: Sequence[str], timeout_seconds: float) -> None:
        """Start waiting until ``queues`` may have work or the timeout passes; the
        descriptor may change (e.g. after a reconnection): read it again afterwards."""

    def finish(self) -> bool:
        """Called once the descriptor is readable: end the wait. False when the wait
        broke instead (e.g. the server hung up); the caller then closes the waiter."""

    def close(self) -> None:
        """Stop waiting and release the descriptor; arming again reopens it."""


#: A store's blocking wait that returns early once the event is set.
WaitFunction = Callable[[Sequence[str], float, threading.Event], None]


class ThreadWaiter:
    """Runs a store's blocking wait in a daemon thread of its own; the read end of a
    pipe turns readable when the wait is over."""

    def __init__(self, wait: WaitFunction, name: str = "tq-waiter") -> None:
        self._wait = wait
        self._name = name
        self._lock = threading.Condition(threading.Lock())
        self._request: tuple[list[str], float] | None = None
        self._armed = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def alive(self) -> bool:
        """True while the waiting thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def fileno(self) -> int | None:
        return None if self._closed else self._read_fd

    def arm(self, queues: Sequence[str], timeout_seconds: float) -> None:
        with self._lock:
            if self._closed:
                self._reopen()
            if self._armed:
                return
            self._armed = True
            self._request = (list(queues), max(float(timeout_seconds), 0.0))
            self._lock.notify()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def finish(self) -> bool:
        try:
            while os.read(self._read_fd, 64):
                pass
        except (BlockingIOError, OSError):
            pass
        self._armed = False
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._armed = False
            self._request = None
            self._stop.set()
            self._lock.notify()
            # under the lock: the thread never writes to a descriptor closed (and reused)
            for fd in (self._read_fd, self._write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)

    def _reopen(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._closed = False
        self._stop = threading.Event()
        self._thread = None

    def _run(self) -> None:
        stop = self._stop
        while True:
            with self._lock:
                while self._request is None and not stop.is_set():
                    self._lock.wait()
                if stop.is_set():
                    return
                assert self._request is not None
                queues, timeout_seconds = self._request
                self._request = None
            try:
                self._wait(queues, timeout_seconds, stop)
            except Exception:  # noqa: BLE001 - the consumer fetches and sees the error itself
                stop.wait(min(timeout_seconds, 1.0))
            with self._lock:
                if stop.is_set():
                    return
                try:
                    os.write(self._write_fd, b"w")
                except BlockingIOError:
                    pass  # the pipe is full: the loop has a wake-up to read already
