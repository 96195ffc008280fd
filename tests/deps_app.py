"""The Celery app the dependency end-to-end tests run in real worker processes.

Configured from the environment: TQ_BROKER_URL, TQ_JOURNAL (a file each task run
appends ``<event> <label> <task id> <time>`` to, independent of the broker).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import tq_celery_ext
import tq_kombu  # noqa: F401

app = Celery("deps_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///deps.sqlite3"),
    broker_transport_options={"lease_seconds": 30.0, "wait_timeout_seconds": 0.5},
    broker_connection_retry_on_startup=True,
    task_default_queue="deps",
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
tq_celery_ext.install(app)


def record(event: str, label: str, task_id: str) -> None:
    # one short O_APPEND write per line: lines of concurrent processes never interleave
    line = f"{event} {label} {task_id} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["TQ_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task(bind=True)
def step(self: Any, label: str) -> str:
    record("run", label, self.request.id)
    return label


@app.task(bind=True)
def fail(self: Any, label: str) -> None:
    record("fail", label, self.request.id)
    raise ValueError(f"{label} fails on purpose")


@app.task(bind=True)
def fails_once(self: Any, label: str) -> str:
    """Fails on its first run, succeeds when run again (replayed from the dead letters)."""
    marker = f"{os.environ['TQ_JOURNAL']}.{label}.failed"
    if not os.path.exists(marker):
        open(marker, "w").close()
        record("fail", label, self.request.id)
        raise ValueError(f"{label} fails the first time")
    record("run", label, self.request.id)
    return label


@app.task(bind=True)
def gate(self: Any, label: str, until: float) -> str:
    """Finishes at wall-clock time ``until``: parents that finish at the same instant."""
    time.sleep(max(until - time.time(), 0.0))
    record("run", label, self.request.id)
    return label


@app.task(bind=True, max_retries=3)
def retries_twice(self: Any, label: str) -> str:
    """Retries twice (its children keep waiting), then succeeds."""
    if self.request.retries < 2:
        record("retry", label, self.request.id)
        raise self.retry(countdown=0.2)
    record("run", label, self.request.id)
    return label
