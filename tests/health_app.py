"""The Celery app of the worker health tests (heartbeats, ``tq workers``).

Configured from the environment: TQ_BROKER_URL, TQ_HEARTBEAT_SECONDS (0.5 by default
here), TQ_JOURNAL (a file each task appends a line to).
"""

from __future__ import annotations

import os
import time

from celery import Celery

import tq_celery_ext

app = Celery("health_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///health.sqlite3"),
    broker_transport_options={"lease_seconds": 30.0},
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    tq_heartbeat_seconds=float(os.environ.get("TQ_HEARTBEAT_SECONDS", "0.5")),
)
tq_celery_ext.install(app)


@app.task(acks_late=True)
def hold(label: str, seconds: float) -> str:
    """Run for ``seconds``, noting when it starts."""
    with open(os.environ["TQ_JOURNAL"], "a", encoding="utf-8") as journal:
        journal.write(f"start {label}\n")
    time.sleep(seconds)
    return label


@app.task
def hold_early(label: str, seconds: float) -> str:
    """:func:`hold`, acknowledged when it starts (Celery's default)."""
    return hold(label, seconds)


@app.task
def fail() -> None:
    raise ValueError("meant to fail")
