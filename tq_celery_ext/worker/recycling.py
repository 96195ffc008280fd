"""Memory-recycling workers: soft and hard memory limits, ``tq_worker_max_tasks`` and
SIGUSR2, in every pool.

After each task a process whose current RSS is over ``tq_worker_memory_soft_limit``,
or that ran ``tq_worker_max_tasks`` tasks, is recycled (see :mod:`.pools` for what that
means per pool). A process already over the soft limit before its first task (its
baseline) logs one error and is never recycled for memory: that would loop. While a
task runs, a watchdog (:mod:`.watchdog`) stops it when the process goes over
``tq_worker_memory_hard_limit``; its message goes dead (``memory_limit``) and the
process is recycled. SIGUSR2 asks for the same graceful recycle.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from tq_kombu.appconf import EXIT_SETUP
from tq_kombu.errors import ConfigurationError

from . import pools
from .counters import note_recycle
from .memory import megabytes, rss_bytes
from .settings import HARD_LIMIT, MAX_TASKS, SOFT_LIMIT, RecycleMode, WorkerSettings
from .settings import worker_settings as read_settings

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A task running in this process, as the watchdog sees it."""

    task_id: str
    thread: int
    started: float
    rss_at_start: int
    task: Any
    request: Any
    stopped_at: float | None = None


class Recycler:
    """Recycling for the workers of one app (the signal receivers and their state)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: Checked settings, set when a worker of this app starts (None elsewhere).
        self.settings: WorkerSettings | None = None
        self.pool = ""
        self.main_pid = 0
        self.worker: Any = None
        self._lock = threading.Lock()
        self._reset_process()
        os.register_at_fork(after_in_child=self._reset_process)

    def _reset_process(self) -> None:
        self._lock = threading.Lock()
        self.tasks_done = 0
        self.baseline: int | None = None
        self.soft_disabled = False
        self.pending = ""
        self.running: dict[str, Running] = {}
        self.watchdog: threading.Thread | None = None

    def connect(self) -> None:
        from celery.signals import task_postrun, task_prerun, worker_init, worker_ready

        uid = f"tq-recycling-{id(self.app)}"
        worker_init.connect(self.on_worker_init, weak=False, dispatch_uid=uid)
        worker_ready.connect(self.on_worker_ready, weak=False, dispatch_uid=uid)
        task_prerun.connect(self.on_task_prerun, weak=False, dispatch_uid=uid)
        task_postrun.connect(self.on_task_postrun, weak=False, dispatch_uid=uid)

    # -- worker start ----------------------------------------------------------------
    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        conf = self.app.conf
        if getattr(sender, "app", None) is not self.app:
            return
        try:
            settings = read_settings(conf)
        except ConfigurationError as exc:
            sys.stderr.write(
                f"error: tq cannot start: {exc}\n  (check {SOFT_LIMIT}, {HARD_LIMIT}, "
                f"{MAX_TASKS} and the other tq_worker_* settings)\n"
            )
            sys.stderr.flush()
            raise SystemExit(EXIT_SETUP) from None
        if not pools.owns_its_process(sender):
            # celery.contrib.testing runs a worker in a thread of the caller's process:
            # restarting or exiting would take the caller with it
            if settings.recycles():
                logger.info("tq: an embedded worker (not `celery worker`) does not recycle")
            return
        self.settings = settings
        self.worker = sender
        self.main_pid = os.getpid()
        self.pool = pools.pool_kind(sender.pool_cls)
        if self.pool == pools.PREFORK:
            sender.pool_restarts = True  # billiard's per-process restart event
            if settings.max_tasks and not sender.max_tasks_per_child:
                sender.max_tasks_per_child = settings.max_tasks
        else:
            if self.pool == pools.SOLO:
                sender.pool_cls = pools.solo_pool(sender.pool_cls, self.after_solo_task)
            if settings.recycles() and int(sender.prefetch_multiplier or 0) != 1:
                # A recycle hands back what is fetched but not started, and the store
                # counts that as a delivery: hold no more than the pool can run.
                sender.prefetch_multiplier = 1
                logger.info("tq: recycling %s worker: prefetch multiplier 1", self.pool)
        # before the pool starts, so that prefork processes inherit it
        signal.signal(signal.SIGUSR2, self.on_sigusr2)

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self.settings is None or getattr(sender, "app", None) is not self.app:
            return
        inner = getattr(getattr(self.worker, "pool", None), "_pool", None)
        down = getattr(inner, "on_process_down", None)
        if self.pool == pools.PREFORK and inner is not None and down is not None:

            def on_process_down(process: Any) -> Any:
                if not pools.stopping():  # billiard starts a fresh process in its place
                    count = note_recycle()
                    logger.info(
                        "tq: pool process %s left (exit code %s): %d recycled so far",
                        getattr(process, "pid", "?"),
                        getattr(process, "exitcode", "?"),
                        count,
                    )
                return down(process)

            inner.on_process_down = on_process_down

    # -- tasks -----------------------------------------------------------------------
    def _ours(self, task: Any) -> bool:
        """A task of this app in a worker that recycles (nothing to do otherwise)."""
        settings = self.settings
        return (
            settings is not None and settings.recycles() and getattr(task, "app", None) is self.app
        )

    def on_task_prerun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        if not self._ours(task) or self.settings is None:
            return
        hard = self.settings.memory_hard_limit_bytes
        rss = rss_bytes() if self.baseline is None or hard is not None else 0
        if self.baseline is None:
            self._note_baseline(rss, self.settings)
        running = Running(task_id, threading.get_ident(), time.monotonic(), rss, task, task.request)
        with self._lock:
            self.running[task_id] = running
        if hard is not None and self.watchdog is None:
            from .watchdog import Watchdog

            self.watchdog = Watchdog(self, self.settings)
            self.watchdog.start()

    def _note_baseline(self, rss: int, settings: WorkerSettings) -> None:
        self.baseline = rss
        soft = settings.memory_soft_limit_bytes
        if soft is not None and rss > soft:
            self.soft_disabled = True
            logger.error(
                "tq: this worker process (pid %d) uses %s before its first task, already "
                "over %s = %s: it is not recycled for memory (a fresh process would be "
                "over too); raise the limit or make start-up lighter",
                os.getpid(),
                megabytes(rss),
                SOFT_LIMIT,
                megabytes(soft),
            )

    def on_task_postrun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        if not self._ours(task) or self.settings is None:
            return
        with self._lock:
            running = self.running.pop(task_id, None)
            self.tasks_done += 1
            done = self.tasks_done
        reason = self._reason(running, done, self.settings)
        if reason:
            self.recycle(reason)

    def _reason(self, running: Running | None, done: int, settings: WorkerSettings) -> str:
        if running is not None and running.stopped_at is not None:
            return f"its task {running.task_id} went over {HARD_LIMIT}"
        limit = settings.max_tasks
        if limit and self.pool != pools.PREFORK and done >= limit:
            return f"after {done} tasks ({MAX_TASKS} = {limit})"
        soft = settings.memory_soft_limit_bytes
        if soft is not None and not self.soft_disabled:
            rss = rss_bytes()
            if rss > soft:
                return f"RSS {megabytes(rss)} over {SOFT_LIMIT} = {megabytes(soft)}"
        return ""

    def running_tasks(self) -> list[Running]:
        with self._lock:
            return list(self.running.values())

    # -- recycling -------------------------------------------------------------------
    def recycle(self, reason: str) -> None:
        """Recycle this process gracefully (once): after its task, or at once if idle."""
        with self._lock:
            if self.pending:
                return
            self.pending = reason
        pid = os.getpid()
        if self.pool == pools.PREFORK and pid != self.main_pid:
            note_recycle()
            logger.warning("tq: recycling pool process %d: %s", pid, reason)
            if not pools.leave_after_task():
                logger.error("tq: pool process %d cannot leave (no restart event)", pid)
            return
        mode = self.settings.recycle_mode if self.settings else RecycleMode.REEXEC
        note_recycle()
        logger.warning(
            "tq: recycling worker (pid %d): %s; it settles what it holds, then %s",
            pid,
            reason,
            "restarts in place" if mode == RecycleMode.REEXEC else "exits for its supervisor",
        )
        code = self.exit_code
        if mode == RecycleMode.REEXEC:
            atexit.register(pools.restart_in_place, self.worker)
        pools.warm_shutdown(code)

    @property
    def exit_code(self) -> int:
        """The code of the warm shutdown that recycles this worker."""
        mode = self.settings.recycle_mode if self.settings else RecycleMode.REEXEC
        return pools.RESTART_CODE if mode == RecycleMode.REEXEC else 0

    def after_solo_task(self) -> None:
        """Solo pool, the task settled: stop consuming now if a recycle is due (the
        rest of the fetched batch is released, not run)."""
        if self.pending:
            from celery.exceptions import WorkerShutdown

            raise WorkerShutdown(self.exit_code)

    def on_sigusr2(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.main_pid or self.pool != pools.PREFORK:
            self.recycle("asked by SIGUSR2")
            return
        logger.warning("tq: SIGUSR2: recycling every pool process after its task")
        # not from the signal handler: the pool and the event loop take locks
        threading.Thread(target=self._restart_pool, name="tq-sigusr2", daemon=True).start()

    def _restart_pool(self) -> None:
        hub = getattr(self.worker, "hub", None)
        pool = getattr(self.worker, "pool", None)
        if pool is None:
            return
        if hub is None:
            pools.restart_prefork(pool)
        else:
            hub.call_soon(pools.restart_prefork, pool)


def connect_recycling(app: Any) -> Recycler:
    """Recycle the worker processes of ``app`` (one line in :func:`tq_celery_ext.install`)."""
    recycler = Recycler(app)
    recycler.connect()
    app.tq_recycler = recycler
    return recycler
