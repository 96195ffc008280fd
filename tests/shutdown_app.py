"""The Celery app of tests/test_e2e_shutdown.py: tq's extension installed, prefetch
multiplier 10, tasks that write a journal of their runs (independent of the broker).

Configured from the environment: TQ_BROKER_URL, TQ_JOURNAL.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import tq_celery_ext

app = Celery("shutdown_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///shutdown.sqlite3"),
    broker_transport_options={"lease_seconds": 30.0},
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=10,
)
tq_celery_ext.install(app)


def record(line: str) -> None:
    """One write of one line: lines of several processes never interleave."""
    fd = os.open(os.environ["TQ_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.task
def short(n: int) -> int:
    """A few milliseconds of work, acknowledged early (when it starts)."""
    time.sleep(0.003)
    record(f"ran {n}")
    return n


@app.task(acks_late=True)
def short_late(n: int) -> int:
    """A few milliseconds of work, acknowledged when it is done."""
    time.sleep(0.003)
    record(f"ran {n}")
    return n


@app.task(acks_late=True)
def hold(label: str, seconds: float) -> str:
    """Keep a pool process busy, recording its start and end."""
    record(f"start {label}")
    time.sleep(seconds)
    record(f"done {label}")
    return label


@app.task
def note(label: str) -> str:
    record(f"note {label}")
    return label
