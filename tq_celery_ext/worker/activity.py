"""What this process is doing, for its heartbeat: tasks finished and failed, and the
tasks running now (several at once on the threads pool).

Counted from Celery's task signals, in the process that runs the task (a prefork
child, or the worker itself on the solo and threads pools). A forked child starts
from zero.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery.signals import task_postrun, task_prerun

_lock = threading.Lock()
_running: dict[str, dict[str, Any]] = {}
_counts = {"done": 0, "failed": 0}


def on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    with _lock:
        _running[str(task_id)] = {
            "name": getattr(task, "name", None) or "?",
            "id": str(task_id),
            "started_at": time.time(),
        }


def on_task_postrun(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    with _lock:
        _running.pop(str(task_id), None)
        if state == "SUCCESS":
            _counts["done"] += 1
        elif state == "FAILURE":
            _counts["failed"] += 1


def snapshot() -> dict[str, Any]:
    """Counts and running tasks, as JSON-ready fields of a heartbeat."""
    with _lock:
        return {
            "tasks_done": _counts["done"],
            "tasks_failed": _counts["failed"],
            "current": sorted(_running.values(), key=lambda t: t["started_at"]),
        }


def _reset() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork
    _running.clear()
    _counts.update(done=0, failed=0)


def connect() -> None:
    """Count tasks in every process of this worker (idempotent)."""
    task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="tq-activity-prerun")
    task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="tq-activity-postrun")


os.register_at_fork(after_in_child=_reset)
