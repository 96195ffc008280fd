"""The demo Celery app: four queues, ordinary tasks, tq as the broker.

The broker defaults to the embedded SQLite store; set ``TQ_BROKER_URL`` to use
Redis, e.g. ``tq+redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from kombu import Queue

import tq_celery_ext
import tq_kombu  # noqa: F401  (registers the tq+ broker URL scheme)

app = Celery("demo_project")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///demo-queue.sqlite3"),
    result_backend=os.environ.get("TQ_RESULT_BACKEND") or None,
    task_queues=[
        Queue(name, routing_key=name) for name in ("default", "emails", "notifications", "heavy")
    ],
    task_default_queue="default",
    task_routes={
        "demo_project.celery.send_email": {"queue": "emails"},
        "demo_project.celery.notify": {"queue": "notifications"},
        "demo_project.celery.crunch": {"queue": "heavy"},
    },
    broker_transport_options={
        "lease_seconds": float(os.environ.get("TQ_LEASE_SECONDS", "30")),
        # DEVELOPMENT KEY, published with the demo: never use it for real data.
        # Generate your own with `celery -A app tq keygen` and keep it secret.
        **(
            {}
            if os.environ.get("TQ_ENCRYPTION_KEYS")
            else {
                "encryption_keys": {"demo-dev": "dHEgZGVtbyBkZXZlbG9wbWVudCBrZXk6IHB1YmxpYyE="},
            }
        ),
    },
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

tq_celery_ext.install(app)  # failed tasks are kept as dead letters

#: Where tasks append a line when they run (the demo and the tests read it).
JOURNAL = os.environ.get("TQ_DEMO_JOURNAL", "demo-journal.txt")


def record(line: str) -> None:
    with open(JOURNAL, "a", encoding="utf-8") as journal:
        journal.write(line + "\n")


@app.task
def send_email(to: str, subject: str) -> str:
    record(f"send_email {to} {subject}")
    return f"sent {subject!r} to {to}"


@app.task
def notify(user: str, text: str) -> str:
    record(f"notify {user} {text}")
    return text


@app.task
def crunch(label: str, seconds: float = 0.0) -> str:
    time.sleep(seconds)
    record(f"crunch {label}")
    return label


@app.task
def noop() -> None:
    return None


@app.task
def fail(label: str) -> None:
    record(f"fail {label}")
    raise ValueError(f"cannot process {label}")


@app.task(acks_late=True)
def fail_late(label: str) -> None:
    record(f"fail_late {label}")
    raise ValueError(f"cannot process {label} (late ack)")


@app.task(acks_late=True, acks_on_failure_or_timeout=False)
def fail_rejected(label: str) -> None:
    """Late ack, and Celery rejects (rather than acks) the message when it fails."""
    record(f"fail_rejected {label}")
    raise ValueError(f"cannot process {label} (rejected)")


@app.task(bind=True, max_retries=1)
def flaky(self: Any, label: str) -> None:
    """Retries once, then gives up: a dead letter with reason max_retries_exceeded."""
    record(f"flaky {label} {self.request.retries + 1}")
    raise self.retry(exc=ConnectionError(f"{label}: service unavailable"), countdown=0)
