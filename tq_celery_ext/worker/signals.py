"""SIGUSR1 on a worker's main process logs its state, then Celery's own dump.

The report (logger ``tq_celery_ext.worker.signals``, level WARNING so it shows at the
default log level) names every message the process holds with its lease expiry, the
memory (RSS) of the main process and of its pool processes, and the tasks running. The
leases are renewed once to read their expiry, from a thread of its own (a store call
must not run inside a signal handler, which may have interrupted one), and Celery's
SIGUSR1 handler (the thread tracebacks) runs after it as before.

Send SIGUSR1 to the main process only (``kill -USR1 <pid>``, ``systemctl kill
--kill-whom=main``): in a prefork pool process it is the soft time limit signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from celery import signals
from celery.worker import state

from tq_kombu.held import registries

logger = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any]


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def _rss_lines() -> list[str]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency of the extension
        return ["memory: psutil is not installed"]
    main = psutil.Process()
    lines = [f"memory: main process {main.pid} RSS {main.memory_info().rss / 2**20:.1f} MiB"]
    for child in main.children():
        try:
            rss = child.memory_info().rss / 2**20
            name = " ".join(child.cmdline()[:3])
        except psutil.Error:
            continue
        lines.append(f"memory: child {child.pid} RSS {rss:.1f} MiB ({name})")
    return lines


def _requests_by_tag() -> dict[str, Any]:
    by_tag: dict[str, Any] = {}
    for request in list(state.requests.values()):
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            by_tag[str(tag)] = request
    return by_tag


def _held_lines() -> list[str]:
    by_tag = _requests_by_tag()
    lines: list[str] = []
    for registry in registries():
        held = registry.held()
        if not held:
            continue
        seconds = registry.renewer.lease_seconds_of([lease for _, lease in held])
        lost: set[Any] = set()
        expiry: dict[Any, float] = {}
        for lease_seconds in set(seconds.values()):
            group = [lease for lease, s in seconds.items() if s == lease_seconds]
            renewed_at = time.time()
            lost.update(registry.store.renew(group, lease_seconds))
            for lease in group:
                expiry[lease] = renewed_at + lease_seconds
        for tag, lease in held:
            request = by_tag.get(tag)
            task = (
                f"task {request.task_name}[{request.id}] "
                + ("running" if request.time_start is not None else "not started")
                if request is not None
                else "no task request"
            )
            until = (
                "lease LOST"
                if lease in lost
                else f"lease until {_clock(expiry[lease])}"
                if lease in expiry
                else "lease not renewed here"
            )
            lines.append(
                f"held: message {lease.message_id} in queue {lease.queue!r}, {until}, {task}"
            )
    return lines or ["held: no message"]


def _task_lines() -> list[str]:
    lines = []
    for request in list(state.active_requests):
        started = request.time_start
        since = f"since {_clock(started)}" if started else "accepted"
        lines.append(
            f"running: {request.task_name}[{request.id}] in process {request.worker_pid} {since}"
        )
    return lines or ["running: no task"]


def report() -> str:
    """The state of this worker process, one fact a line."""
    lines = [f"tq worker state (pid {os.getpid()}, {len(state.requests)} requests reserved)"]
    parts: list[Callable[[], list[str]]] = [_held_lines, _rss_lines, _task_lines]
    for part in parts:
        try:
            lines += part()
        except Exception as exc:  # noqa: BLE001 - a report must not fail the worker
            lines.append(f"(could not report: {exc!r})")
    return "\n  ".join(lines)


def _log_report() -> None:
    logger.warning("%s", report())


class StateReporter:
    """Chains a SIGUSR1 handler in the main process in front of Celery's."""

    def __init__(self) -> None:
        self.previous: Handler | int | None = None

    def install(self, **_: Any) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        if previous is self.on_sigusr1:
            return
        self.previous = previous
        signal.signal(signal.SIGUSR1, self.on_sigusr1)

    def on_sigusr1(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=_log_report, name="tq-state-report", daemon=True).start()
        previous = self.previous
        if callable(previous):
            previous(signum, frame)


def connect(app: Any) -> StateReporter:
    """Install the SIGUSR1 report once the worker is ready (after Celery's handlers)."""
    reporter = StateReporter()
    signals.worker_ready.connect(reporter.install, weak=False)
    return reporter
