"""tq_celery_ext: the Celery side of tq. One line in the app module::

    tq_celery_ext.install(app)

What it adds now: a task that fails for good (an exception it does not retry, or
its retries used up) is kept in tq's dead-letter store with its traceback, with or
without ``acks_late``, so it can be inspected and replayed (``celery -A app tq dlq``).
"""

from __future__ import annotations

from typing import Any

from .dead_letters import FailureRecorder
from .limits import connect as connect_limits

__all__ = ["install"]


def install(app: Any) -> FailureRecorder:
    """Add tq's worker-side features to a Celery app; returns the failure recorder."""
    recorder = FailureRecorder(app)
    recorder.connect()
    app.tq = recorder
    connect_limits(app)
    return recorder
