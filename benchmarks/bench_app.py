"""The Celery app the benchmark's workers run: one no-op task, the broker from the environment."""

from __future__ import annotations

import os

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
)


#: "1": tq_celery_ext installed, no feature used; "limited": the task also under a
#: cluster-wide rate limit that never binds (a million a second)
EXTENSION = os.environ.get("BENCH_EXTENSION", "")
if EXTENSION:
    import tq_celery_ext

    app.conf.tq_rate_limits = {"bench": "1000000/s"}
    tq_celery_ext.install(app)


@app.task(**({"tq_rate_limit": "bench"} if EXTENSION == "limited" else {}))
def noop() -> None:
    return None
