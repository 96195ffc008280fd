"""What recycling a process means in each Celery pool.

- prefork: the pool process leaves after the task it is running (billiard's per-process
  restart event, the one ``pool_restart`` uses) and billiard starts a fresh one;
- solo: the worker stops taking messages right after the task (a warm shutdown raised
  from the pool, so the rest of a fetched batch goes back to the store), then restarts
  in place or exits;
- threads (and other pools): a warm shutdown of the whole worker, then the same.

A warm shutdown settles what the worker holds: every message fetched but not started
is released to ready, keeping its priority and delivery count.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .counters import RECYCLES_ENV, recycles

logger = logging.getLogger(__name__)

PREFORK = "prefork"
SOLO = "solo"
THREADS = "threads"


def pool_kind(pool_cls: Any) -> str:
    """``prefork``, ``solo``, ``threads`` or the class name of another pool."""
    from celery import concurrency
    from celery.concurrency import prefork, solo, thread

    cls = concurrency.get_implementation(pool_cls) if isinstance(pool_cls, str) else pool_cls
    if isinstance(cls, type):
        if issubclass(cls, prefork.TaskPool):
            return PREFORK
        if issubclass(cls, solo.TaskPool):
            return SOLO
        if issubclass(cls, thread.TaskPool):
            return THREADS
    return str(getattr(cls, "__name__", cls))


def owns_its_process(worker: Any) -> bool:
    """Whether ``worker`` is a ``celery worker`` program (``app.Worker``), which may
    restart or end its process; not a worker embedded in another program's thread."""
    from celery.apps.worker import Worker

    return isinstance(worker, Worker)


def solo_pool(pool_cls: Any, after_task: Callable[[], None]) -> type:
    """The solo pool class calling ``after_task`` once each task is settled (acked),
    in the consuming thread: it may raise ``WorkerShutdown`` to stop consuming."""
    from celery import concurrency

    base: Any = concurrency.get_implementation(pool_cls)

    class RecyclingSoloPool(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            apply: Callable[..., Any] = getattr(self, "on_apply")  # noqa: B009 - untyped

            def on_apply(*a: Any, **kw: Any) -> Any:
                result = apply(*a, **kw)
                after_task()
                return result

            self.on_apply = on_apply

    RecyclingSoloPool.__name__ = RecyclingSoloPool.__qualname__ = base.__name__
    RecyclingSoloPool.__module__ = base.__module__
    return RecyclingSoloPool


def leave_after_task() -> bool:
    """In a prefork pool process: leave once the running task has reported its result
    (billiard then starts a fresh process). False when the pool has no restart event."""
    from billiard.process import current_process

    worker = getattr(current_process(), "_target", None)
    restart = getattr(worker, "_shutdown", None)
    if restart is None:
        return False
    restart.set()
    return True


def restart_prefork(pool: Any) -> None:
    """Replace every process of a prefork pool once it is done with its task: set their
    restart events, then hand each a no-op job, as an idle process only looks at its
    event between jobs."""
    from celery.utils.functional import noop

    inner = pool._pool
    inner.restart()
    for _ in range(len(inner._pool)):
        inner.apply_async(noop)


#: The exit code a worker stopping to restart in place gives Celery: a stop for another
#: reason (SIGTERM meanwhile) ends with Celery's own code, and then it does not restart.
RESTART_CODE = 0x9C


def warm_shutdown(code: int) -> None:
    """Ask the worker for a warm shutdown (its loop raises ``WorkerShutdown(code)``)."""
    from celery.worker import state

    state.should_stop = code


def stopping() -> bool:
    """Whether the worker is shutting down."""
    from celery.worker import state

    return state.should_stop not in (None, False) or state.should_terminate not in (None, False)


def restart_in_place(worker: Any = None) -> None:
    """Replace this process with a fresh run of the same command line (``os.execv``),
    once pending settles reached the store; the recycle count carries over. With
    ``worker``, only if it stopped to restart (exit code :data:`RESTART_CODE`)."""
    from tq_kombu import held

    if worker is not None and getattr(worker, "exitcode", None) != RESTART_CODE:
        return
    held._flush_at_exit()
    os.environ[RECYCLES_ENV] = str(recycles())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    try:
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    except OSError as exc:
        sys.stderr.write(f"error: tq could not restart the worker in place: {exc}\n")
        os._exit(1)
