"""The Celery app the benchmark's workers run: a no-op task and a latency probe, the
broker from the environment (``BENCH_PREFETCH``: worker_prefetch_multiplier, default 4)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import tq_kombu  # noqa: F401  (registers tq+redis://)

app = Celery("bench_app", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    broker_transport_options=dict(
        item.split("=", 1) for item in filter(None, os.environ.get("BENCH_OPTIONS", "").split(";"))
    ),
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "4")),
)


#: "1": tq_celery_ext installed, no feature used (heartbeats are on); "limited": the task
#: also under a cluster-wide rate limit that never binds (a million a second);
#: "watched": memory recycling on, with limits no worker reaches here
EXTENSION = os.environ.get("BENCH_EXTENSION", "")
if EXTENSION:
    import tq_celery_ext

    app.conf.tq_rate_limits = {"bench": "1000000/s"}
    if EXTENSION == "watched":
        app.conf.tq_worker_memory_soft_limit = "8GiB"
        app.conf.tq_worker_memory_hard_limit = "16GiB"
    tq_celery_ext.install(app)


@app.task(**({"tq_rate_limit": "bench"} if EXTENSION == "limited" else {}))
def noop() -> None:
    return None


_report: Any = None


@app.task
def stamp(published: float) -> None:
    """Report how long after ``published`` (epoch seconds) this task started."""
    started = time.time()
    global _report
    if _report is None:
        import redis

        _report = redis.Redis.from_url(os.environ["BENCH_REPORT_URL"])
    _report.rpush("bench:latency", started - published)
