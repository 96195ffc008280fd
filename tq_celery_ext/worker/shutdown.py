"""A warm shutdown that loses nothing, also when SIGTERM reaches the whole process group.

- Every message held but never started (prefetched) goes back to its queue at its
  priority and delivery count when the worker shuts down warm: the transport asks
  :class:`Deliveries` which deliveries no pool process accepted (see
  :mod:`tq_kombu.handback`).
- systemd (``KillMode=control-group``), ``kill -TERM -<pgid>`` and many container
  runtimes send SIGTERM to every process of the worker at once. Celery's prefork children
  take SIGTERM's default action and die mid-task. Here a pool process that receives
  SIGTERM waits (up to :data:`GROUP_WINDOW_SECONDS`) for the main process to say it took
  a SIGTERM too: if so the signal was sent to the group, the child goes on with its task
  and the main process ends it when the warm shutdown is done. A SIGTERM meant for the
  child alone (a cold shutdown cancelling tasks, ``revoke(terminate=True)``, a hard time
  limit, an operator) still ends it, just up to that window later.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import struct
import sys
import time
from types import FrameType
from typing import Any

from celery import signals

from tq_kombu import handback

from . import signals as tq_signals
from .pool_drain import DrainPoolMessages

logger = logging.getLogger(__name__)

#: How long a pool process waits for the main process to confirm a group SIGTERM.
GROUP_WINDOW_SECONDS = 1.0
_POLL_SECONDS = 0.01
_CLOCK = struct.Struct("d")


class GroupSignalClock:
    """When the main process last took SIGTERM as a warm shutdown (``time.monotonic``,
    the same clock in every process), in memory its pool processes share (forked)."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _CLOCK.size)
        self.note(float("-inf"))

    def note(self, moment: float) -> None:
        self._memory[: _CLOCK.size] = _CLOCK.pack(moment)

    def last(self) -> float:
        return float(_CLOCK.unpack(self._memory[: _CLOCK.size])[0])

    def confirms(self, received: float, timeout_seconds: float) -> bool:
        """Whether the main process takes (or took) a SIGTERM within the window around
        ``received``, waiting up to ``timeout_seconds`` for it to say so."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if abs(self.last() - received) <= GROUP_WINDOW_SECONDS:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)


class Deliveries:
    """The task requests of this worker process by delivery tag, until acknowledged.

    Celery forgets its prefetched requests (``state.requests``) when it closes the
    connection, before kombu returns their messages, and a request cancelled by a cold
    shutdown is forgotten too: so keep them here, to tell one a pool process accepted
    (its message is released, the delivery counted) from one never started (given back).
    """

    def __init__(self) -> None:
        self._requests: dict[str, Any] = {}

    def received(self, request: Any = None, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is None:
            return
        for old, kept in list(self._requests.items()):
            if kept.acknowledged:
                self._requests.pop(old, None)
        self._requests[str(tag)] = request

    def unstarted(self, delivery_tag: str) -> bool:
        """Whether ``delivery_tag`` is a task request no pool process accepted."""
        request = self._requests.get(delivery_tag)
        return request is not None and request.time_start is None and not request.acknowledged


class ShutdownGuard:
    """Connects the shutdown behaviour to one app's workers."""

    def __init__(self) -> None:
        self.clock = GroupSignalClock()
        self.deliveries = Deliveries()
        #: Set in a prefork pool process (not in a solo or threads worker's only one).
        self.in_pool_process = False

    def connect(self, app: Any) -> None:
        handback.set_unstarted_probe(self.deliveries.unstarted)
        signals.task_received.connect(self.deliveries.received, weak=False)
        signals.worker_shutting_down.connect(self._on_shutting_down, weak=False)
        signals.worker_process_init.connect(self._in_pool_process, weak=False)
        signals.task_prerun.connect(self._before_task, weak=False)
        tq_signals.connect(app)
        app.steps["worker"].add(DrainPoolMessages)

    def _on_shutting_down(self, sig: object = None, how: object = None, **_: Any) -> None:
        """In the main process, from Celery's own signal handler."""
        if how == "Warm" and str(sig).upper().removeprefix("SIG") == "TERM":
            self.clock.note(time.monotonic())

    def _in_pool_process(self, **_: Any) -> None:
        # billiard replaces every SIGTERM handler but "ignore" once this returns, so the
        # pool process ignores SIGTERM until its first task, which installs the handler
        self.in_pool_process = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _before_task(self, **_: Any) -> None:
        if not self.in_pool_process:
            return
        if signal.getsignal(signal.SIGTERM) != self._on_sigterm_in_pool_process:
            signal.signal(signal.SIGTERM, self._on_sigterm_in_pool_process)

    def _on_sigterm_in_pool_process(self, signum: int, frame: FrameType | None) -> None:
        received = time.monotonic()
        if self.clock.confirms(received, GROUP_WINDOW_SECONDS):
            logger.warning(
                "tq: pool process %d ignores a SIGTERM sent to the whole process group: the "
                "main process shuts down warm and ends it once its task is done",
                os.getpid(),
            )
            return
        # meant for this process alone: end as billiard ends a pool process on SIGTERM
        # (SystemExit, so that finally blocks release what the process holds)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.exit(-(256 - signum))


def connect(app: Any) -> ShutdownGuard:
    """Warm shutdown for group signals, prefetched messages given back, SIGUSR1 report."""
    guard = ShutdownGuard()
    guard.connect(app)
    return guard
