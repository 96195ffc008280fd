"""The hard memory limit: a thread reading RSS while tasks run.

Over ``tq_worker_memory_hard_limit``, the task is stopped: :class:`MemoryLimitExceeded`
is raised inside it, so it fails as any task does (Celery settles its message, tq's
failure recorder sets it aside as dead with reason ``memory_limit``), and the process
is recycled after it. Under the threads pool the task stopped is the one that started
when the process used the least memory (the one that has grown most since). A task
that does not stop within a grace period (stuck in C code, or catching the exception)
is set aside as dead from here and its process replaced at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from tq_kombu.store.model import DeadReason

from . import pools
from .memory import MemoryLimitExceeded, megabytes, raise_in_thread, rss_bytes
from .settings import HARD_LIMIT, RecycleMode, WorkerSettings

if TYPE_CHECKING:
    from .recycling import Recycler, Running

logger = logging.getLogger(__name__)
#: Least seconds a stopped task gets to end before its process is replaced at once.
GRACE_SECONDS = 5.0


class Watchdog(threading.Thread):
    """Reads this process's RSS every check interval while a task runs."""

    def __init__(self, recycler: Recycler, settings: WorkerSettings) -> None:
        super().__init__(name="tq-memory-watchdog", daemon=True)
        assert settings.memory_hard_limit_bytes is not None
        self.recycler = recycler
        self.limit = settings.memory_hard_limit_bytes
        self.interval = settings.memory_check_interval_seconds
        self.grace = max(GRACE_SECONDS, 3 * self.interval)
        self.mode = settings.recycle_mode

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive one bad reading
                logger.exception("tq: the memory watchdog could not check this process")

    def check(self) -> None:
        running = self.recycler.running_tasks()
        if not running:
            return
        rss = rss_bytes()
        stuck = [r for r in running if r.stopped_at is not None]
        if stuck:
            oldest = min(r.stopped_at or 0.0 for r in stuck)
            if time.monotonic() - oldest > self.grace:
                self.replace_now(stuck[0], rss)
            return
        if rss <= self.limit:
            return
        victim = min(running, key=lambda r: (r.rss_at_start, r.started))
        logger.error(
            "tq: task %s[%s] stopped: process %d uses %s, over %s = %s; its message is set "
            "aside as dead (memory_limit) and the process is recycled",
            victim.task.name,
            victim.task_id,
            os.getpid(),
            megabytes(rss),
            HARD_LIMIT,
            megabytes(self.limit),
        )
        with self.recycler._lock:
            if victim.task_id not in self.recycler.running:
                return  # it ended meanwhile
            victim.stopped_at = time.monotonic()
            raise_in_thread(victim.thread, MemoryLimitExceeded)

    def replace_now(self, victim: Running, rss: int) -> None:
        """The stopped task did not end: bury its message here, replace the process."""
        logger.error(
            "tq: task %s[%s] did not stop within %.0f s (process %d at %s): replacing the "
            "process now",
            victim.task.name,
            victim.task_id,
            self.grace,
            os.getpid(),
            megabytes(rss),
        )
        recorder = getattr(self.recycler.app, "tq", None)
        try:
            if recorder is not None:
                exc = MemoryLimitExceeded(f"{megabytes(rss)} over {HARD_LIMIT}")
                recorder.record(victim.task, victim.request, DeadReason.MEMORY_LIMIT, exc)
        except Exception:  # noqa: BLE001 - replace the process anyway
            logger.exception("tq: could not set task %s aside as dead", victim.task_id)
        if self.recycler.pool == pools.PREFORK and os.getpid() != self.recycler.main_pid:
            os.kill(os.getpid(), signal.SIGKILL)  # billiard starts a fresh process
        elif self.mode == RecycleMode.REEXEC:
            pools.restart_in_place()
        else:
            os._exit(0)
