"""Heartbeats: every worker process records itself in the store every
``tq_heartbeat_seconds`` (default 5), from a daemon thread of its own.

One beat per process, named ``<hostname>/<pid>``: the worker's main process (role
``main``, which fetches and so holds the leases) and, on the prefork pool, each pool
process (role ``child``, which runs the tasks). A beat carries hostname, pid, role,
pool, queues, RSS, tasks done and failed, the tasks running now, the recycle count and
the consumer ids of the process's channels (to name the worker holding a lease).

A beat vouches for :data:`MISSED_BEATS` intervals: a worker silent that long is
*lost*, and its last beat is kept (``tq workers`` lists it as lost) for
:data:`KEEP_LOST_SECONDS`. A worker that stops cleanly removes its beat; one that
starts removes the lost beats of an earlier run under its hostname.

A store that is away never blocks nor stops the worker: the failure is logged once,
and the next beat tries again (reopening the store).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from tq_kombu.admin import Admin
from tq_kombu.appconf import EXIT_SETUP
from tq_kombu.consumers import consumer_ids
from tq_kombu.errors import ConfigurationError

from . import activity
from .counters import recycles
from .settings import worker_settings

logger = logging.getLogger(__name__)

#: A worker is lost once this many beats in a row are missing.
MISSED_BEATS = 3
#: How long the store keeps a lost worker's last beat (seconds).
KEEP_LOST_SECONDS = 3600.0
#: Pool module names as ``--pool`` spells them.
POOL_NAMES = {"thread": "threads"}


def beat_name(hostname: str, pid: int) -> str:
    """The name a worker process beats under."""
    return f"{hostname}/{pid}"


class Heartbeat:
    """The beating thread of one process."""

    def __init__(self, app: Any, identity: dict[str, Any], interval_seconds: float) -> None:
        self.app = app
        self.identity = identity
        self.interval_seconds = interval_seconds
        self.name = beat_name(identity["hostname"], identity["pid"])
        self._admin: Admin | None = None
        self._failing = False
        self._disabled = False
        self._stop = threading.Event()
        self._forget_earlier = False
        self._forget_on_stop = True
        self._thread = threading.Thread(target=self._run, name="tq-heartbeat", daemon=True)
        self._rss = _rss_reader()

    def start(self, forget_earlier_runs: bool = False) -> Heartbeat:
        """Beat from now on (first dropping an earlier run's lost beats, if told to)."""
        self._forget_earlier = forget_earlier_runs
        self._thread.start()
        return self

    def stop(self, forget: bool = True) -> None:
        """Stop beating; with ``forget``, remove the beat (a clean stop is not a loss).
        The store is only ever called from the beating thread (once started), so a
        store that hangs never holds up the worker: this waits a bounded time."""
        self._forget_on_stop = forget
        self._stop.set()
        if self._thread.is_alive():
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=min(self.interval_seconds + 1, 5.0))
        elif self._thread.ident is None:  # never started: settle here
            self._finish()

    def info(self) -> dict[str, Any]:
        """What this beat says of the process now."""
        return {
            **self.identity,
            "rss_bytes": self._rss(),
            **activity.snapshot(),
            "recycles": recycles(),
            "consumers": consumer_ids(),
            "interval_seconds": self.interval_seconds,
        }

    def beat(self) -> bool:
        """Record one beat; False (logged once) when the store cannot be reached."""
        ttl = self.interval_seconds * MISSED_BEATS
        return self._call(
            lambda admin: admin.store.heartbeat(self.name, ttl, self.info(), KEEP_LOST_SECONDS)
        )

    def forget_earlier_runs(self) -> None:
        """Remove the lost beats of an earlier run of this worker (same hostname)."""

        def forget(admin: Admin) -> None:
            prefix = f"{self.identity['hostname']}/"
            for old in admin.store.workers(include_lost=True):
                if old.lost and old.worker.startswith(prefix):
                    admin.store.forget_worker(old.worker)

        self._call(forget)

    def _run(self) -> None:
        if self._forget_earlier:
            self.forget_earlier_runs()
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_seconds)
        self._finish()

    def _finish(self) -> None:
        if self._forget_on_stop:
            self._call(lambda admin: admin.store.forget_worker(self.name))
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()

    def _call(self, action: Any) -> bool:
        if self._disabled:
            return False
        if self._admin is None:
            try:
                self._admin = Admin.from_app(self.app)
            except ConfigurationError as exc:  # not a tq broker, or a bad setting: no beats
                logger.warning("tq: no heartbeats for %s: %s", self.name, exc)
                self._disabled = True
                self._stop.set()
                return False
            except Exception as exc:  # noqa: BLE001 - the next beat retries
                return self._failed(exc)
        try:
            action(self._admin)
        except Exception as exc:  # noqa: BLE001 - the worker goes on; the next beat retries
            return self._failed(exc)
        if self._failing:
            logger.warning("tq: heartbeat of %s recorded again", self.name)
        self._failing = False
        return True

    def _failed(self, exc: BaseException) -> bool:
        """Log the first failure of a run of them; drop the store, reopened next beat."""
        if not self._failing:
            logger.warning("tq: heartbeat of %s not recorded (retrying): %s", self.name, exc)
        self._failing = True
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        return False


def _rss_reader() -> Any:
    try:
        import psutil

        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    except Exception:  # noqa: BLE001 - no RSS rather than no heartbeat
        return lambda: None


def pool_name(pool_cls: Any) -> str:
    if isinstance(pool_cls, str):
        name = pool_cls.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    else:
        name = getattr(pool_cls, "__module__", "?").rsplit(".", 1)[-1]
    return POOL_NAMES.get(name, name)


class Heartbeats:
    """The signal receivers of one app: who beats, started and stopped with the worker."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.identity: dict[str, Any] | None = None
        self.interval_seconds = 5.0
        self.main_pid = 0
        self.current: Heartbeat | None = None
        self._inherited: Heartbeat | None = None

    def connect(self) -> None:
        uid = f"tq-heartbeat-{id(self.app)}"
        activity.connect()
        worker_init.connect(self.on_worker_init, weak=False, dispatch_uid=uid)
        worker_ready.connect(self.on_worker_ready, weak=False, dispatch_uid=uid)
        worker_shutdown.connect(self.on_shutdown, weak=False, dispatch_uid=uid)
        worker_process_init.connect(self.on_process_init, weak=False, dispatch_uid=uid)
        worker_process_shutdown.connect(self.on_shutdown, weak=False, dispatch_uid=uid)

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """Before the pool forks: what every process of this worker says of itself."""
        if not self._ours(sender):
            return
        try:
            self.interval_seconds = worker_settings(self.app.conf).heartbeat_seconds
        except ConfigurationError as exc:
            sys.stderr.write(f"error: tq cannot start: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(EXIT_SETUP) from None
        queues = getattr(self.app.amqp.queues, "consume_from", None) or self.app.amqp.queues
        self.main_pid = os.getpid()
        self.identity = {
            "hostname": str(sender.hostname),
            "pool": pool_name(sender.pool_cls),
            "concurrency": getattr(sender, "concurrency", None),
            "queues": sorted(str(q) for q in queues),
        }

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self.identity is None or not self._ours(sender):
            return
        if self.current is not None and self.current.identity["pid"] == os.getpid():
            return  # already beating (worker_ready sent twice)
        self._start("main", None, forget_earlier_runs=True)

    def on_process_init(self, **_: Any) -> None:
        """A prefork pool process: beat on its own (its parent's thread did not fork).
        The solo pool sends this signal too, in the worker's own process: not a child."""
        if self.identity is not None and os.getpid() != self.main_pid:
            # the parent's beat, copied by fork: kept referenced, never used here
            self._inherited = self.current
            self._start("child", os.getppid())

    def on_shutdown(self, **_: Any) -> None:
        heartbeat, self.current = self.current, None
        if heartbeat is not None and heartbeat.identity["pid"] == os.getpid():
            heartbeat.stop(forget=True)

    def _ours(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    def _start(
        self, role: str, parent_pid: int | None, forget_earlier_runs: bool = False
    ) -> Heartbeat:
        assert self.identity is not None
        identity = {
            **self.identity,
            "pid": os.getpid(),
            "role": role,
            "parent_pid": parent_pid,
            "started_at": time.time(),
        }
        heartbeat = Heartbeat(self.app, identity, self.interval_seconds)
        self.current = heartbeat.start(forget_earlier_runs)
        return self.current


def connect(app: Any) -> Heartbeats:
    """Make every worker process of ``app`` beat (``tq_celery_ext.install`` calls it)."""
    heartbeats = Heartbeats(app)
    heartbeats.connect()
    return heartbeats
