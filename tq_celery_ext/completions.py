"""Completion records, sent so that they cost the task nothing and are never dropped.

A task's outcome releases (or fails) the messages that depend on it. Each worker process
keeps one :class:`CompletionOutbox`:

- until the store has held a message with parents (``Store.dependencies_in_use``), no
  success matters to another task: successes are only remembered for
  :data:`RECENT_SECONDS` (a child published just after its parent ended still finds it)
  while a thread asks the store every :data:`CHECK_SECONDS`; a worker of an app that
  uses no dependencies pays nothing per task;
- an early-acknowledged task's success goes into the outbox and returns at once; a
  thread sends what gathered there in one call (``Store.complete_many``), so a busy
  worker pays one round trip per batch instead of one per task;
- a late-acknowledged task (``acks_late``) records its outcome before its message is
  acknowledged, as before: a worker killed in between runs the task again and records
  again, so its children are never stranded;
- a record the store could not take (unreachable, restarting) stays in the outbox and is
  retried until the store is back; a process exiting waits up to
  :data:`EXIT_FLUSH_SECONDS` for it (Celery's ``worker_process_shutdown`` and
  ``worker_shutdown``, and ``atexit``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tq_kombu.errors import StoreError
from tq_kombu.store.contract import Store

logger = logging.getLogger(__name__)

#: Outcomes sent per call.
BATCH_SIZE = 500
#: Seconds between attempts while the store cannot be reached (doubling up to the max).
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
#: At most how long an exiting process waits for the store to take its records.
EXIT_FLUSH_SECONDS = 5.0
#: While the store has no dependents: how long successes are remembered, how many at
#: most, and how often the store is asked whether it has dependents now.
RECENT_SECONDS = 60.0
RECENT_MAX = 200_000
CHECK_SECONDS = 1.0

Outcome = tuple[str, bool, str]


class CompletionOutbox:
    """Outcomes waiting to be recorded in the store of one process."""

    def __init__(self, store_of: Callable[[], Store | None]) -> None:
        #: This process's store (None when the broker is not tq).
        self.store_of = store_of
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.flush, EXIT_FLUSH_SECONDS)

    def _reset(self) -> None:
        """A fresh outbox (a forked child inherits neither records nor the thread)."""
        self._pending: list[Outcome] = []
        self._sending = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        #: Whether the store has had dependents (learnt once; it never goes back).
        self._in_use = False
        #: Successes not sent while the store had no dependents: (monotonic time, task id).
        self._recent: deque[tuple[float, str]] = deque(maxlen=RECENT_MAX)
        self._checked_at = 0.0

    def record_success(self, task_id: str, wait: bool = False) -> None:
        """A task succeeded: recorded as :meth:`record` does once the store has
        dependents; until then only remembered (see the module's docstring)."""
        if self._in_use:
            self.record(task_id, True, "", wait)
            return
        with self._changed:
            self._recent.append((time.monotonic(), task_id))
            self._changed.notify()
            self._start()

    def _start(self) -> None:
        """Start the sending thread if it is not running (call with the lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tq-completions", daemon=True)
            self._thread.start()

    def record(self, task_id: str, succeeded: bool, detail: str = "", wait: bool = False) -> None:
        """Record an outcome: sent now when ``wait`` (kept and retried if the store is
        away), else sent by the outbox's thread."""
        if wait:
            store = self.store_of()
            if store is None:
                return
            try:
                store.complete(task_id, succeeded, detail)
                return
            except StoreError as exc:
                self._note_failure(exc)
        with self._changed:
            self._pending.append((task_id, succeeded, detail))
            self._changed.notify()
            self._start()

    def pending(self) -> int:
        """Outcomes not recorded yet (waiting or being sent)."""
        with self._changed:
            return len(self._pending) + self._sending

    def flush(self, timeout_seconds: float = EXIT_FLUSH_SECONDS) -> bool:
        """Wait until every outcome is recorded, at most ``timeout_seconds``; True if so."""
        deadline = time.monotonic() + timeout_seconds
        if not self._in_use and self._recent:
            self._check_in_use()
        with self._changed:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    if self._pending:
                        logger.error(
                            "tq: %d task outcome(s) could not be recorded (store unreachable): "
                            "their dependent tasks wait until their dependency timeout",
                            len(self._pending),
                        )
                    return False
                self._changed.wait(left)
        return True

    # -- the sending thread --------------------------------------------------------
    def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            with self._changed:
                while not self._pending:
                    if self._recent and not self._in_use:
                        due = self._checked_at + CHECK_SECONDS - time.monotonic()
                        if due <= 0:
                            break
                        self._changed.wait(due)
                    else:
                        self._changed.wait()
            if not self._pending:
                self._check_in_use()
                continue
            with self._changed:
                batch = self._pending[:BATCH_SIZE]
                del self._pending[:BATCH_SIZE]
                self._sending = len(batch)
            sent = self._send(batch)
            with self._changed:
                self._sending = 0
                if not sent:
                    self._pending[:0] = batch
                self._changed.notify_all()
            if sent:
                delay = RETRY_FIRST_SECONDS
            else:
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _send(self, batch: list[Outcome]) -> bool:
        """True when the batch is done with (recorded, or not recordable at all)."""
        try:
            store = self.store_of()
            if store is not None:
                store.complete_many(batch)
        except StoreError as exc:
            self._note_failure(exc)
            return False
        except Exception:  # noqa: BLE001 - a failing recorder must not stop the thread
            logger.exception("tq: could not record the outcome of %d task(s)", len(batch))
            return True
        if self._failing_since is not None:
            logger.info(
                "tq: task outcomes recorded again after %.1f s", time.time() - self._failing_since
            )
            self._failing_since = None
        return True

    def _check_in_use(self) -> None:
        """Ask the store whether it has dependents; if so, send the remembered successes."""
        self._checked_at = time.monotonic()
        try:
            store = self.store_of()
            in_use = store is not None and store.dependencies_in_use()
        except StoreError:
            return  # asked again at the next check
        with self._changed:
            horizon = time.monotonic() - RECENT_SECONDS
            if in_use:
                self._in_use = True
                self._pending.extend((t, True, "") for at, t in self._recent if at >= horizon)
                self._recent.clear()
                self._changed.notify_all()
            else:
                while self._recent and self._recent[0][0] < horizon:
                    self._recent.popleft()

    def _note_failure(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.time()
            logger.warning(
                "tq: could not record task outcomes now (%s); retrying until the store is back",
                exc,
            )


def connect_flushes(outbox: CompletionOutbox, uid: str) -> None:
    """Flush ``outbox`` when a worker (or a pool process) shuts down."""
    from celery.signals import worker_process_shutdown, worker_shutdown

    def flush(**_: Any) -> None:
        outbox.flush()

    worker_process_shutdown.connect(flush, weak=False, dispatch_uid=f"{uid}-process")
    worker_shutdown.connect(flush, weak=False, dispatch_uid=f"{uid}-worker")
