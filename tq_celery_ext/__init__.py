"""tq_celery_ext: the Celery side of tq. One line in the app module::

    tq_celery_ext.install(app)

What it adds:

- a task that fails for good (an exception it does not retry, or its retries used up)
  is kept in tq's dead-letter store with its traceback, with or without ``acks_late``,
  so it can be inspected and replayed (``celery -A app tq dlq``);
- task dependencies: ``apply_async(..., depends_on=[r1, r2])`` and whole graphs
  published atomically (:func:`graph`), released by the broker as parents succeed;
- cluster-wide rate and concurrency limits, per key and fair, applied by the broker
  (``tq_rate_limits``, ``tq_concurrency_limits``, task options ``tq_rate_limit``,
  ``tq_concurrency_limit``, ``tq_limit_key``), changed at run time with
  :func:`limits_of` (``tq_celery_ext.limits`` is the package that implements them);
- worker heartbeats (``tq_heartbeat_seconds``), listed by ``celery -A app tq workers``;
- memory-recycling workers (``tq_worker_memory_soft_limit``, ``..._hard_limit``,
  ``tq_worker_max_tasks``, SIGUSR2): :mod:`tq_celery_ext.worker.recycling`;
- a warm shutdown that loses nothing, also on SIGTERM to the whole process group, and
  SIGUSR1 logging the worker's state (``tq_celery_ext.worker.shutdown``).
"""

from __future__ import annotations

from typing import Any

from .dead_letters import FailureRecorder
from .dependencies import DependencyRecorder
from .graph import Graph, graph
from .limits import LimitControl, limits_of
from .limits import connect as connect_limits
from .worker import shutdown
from .worker.heartbeat import connect as connect_heartbeats
from .worker.recycling import connect_recycling

__all__ = ["Graph", "LimitControl", "graph", "install", "limits_of"]


def install(app: Any) -> FailureRecorder:
    """Add tq's worker-side features to a Celery app; returns the failure recorder."""
    recorder = FailureRecorder(app)
    recorder.connect()
    dependencies = DependencyRecorder(app, recorder)
    dependencies.connect()
    app.tq = recorder
    connect_limits(app)
    app.tq_dependencies = dependencies
    app.tq_heartbeats = connect_heartbeats(app)
    connect_recycling(app)
    shutdown.connect(app)
    return recorder
