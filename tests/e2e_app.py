"""The Celery app the end-to-end tests run in real worker processes.

Configured from the environment: TQ_BROKER_URL, TQ_LEASE_SECONDS, TQ_JOURNAL (a
file each task appends a line to), TQ_RESULT_BACKEND (optional).
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.exceptions import Reject

import tq_kombu  # noqa: F401

app = Celery("e2e_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///e2e.sqlite3"),
    result_backend=os.environ.get("TQ_RESULT_BACKEND") or None,
    broker_transport_options={"lease_seconds": float(os.environ.get("TQ_LEASE_SECONDS", "30"))},
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    task_routes={"tests.e2e_app.send_email": {"queue": "emails"}},
    # how long the control plane's queues outlive their consumers (Celery: 10 s and 60 s)
    control_queue_expires=float(os.environ.get("TQ_CONTROL_QUEUE_EXPIRES", "10")),
    event_queue_expires=float(os.environ.get("TQ_EVENT_QUEUE_EXPIRES", "60")),
)


def record(line: str) -> None:
    with open(os.environ["TQ_JOURNAL"], "a", encoding="utf-8") as journal:
        journal.write(f"{line}\n")


@app.task
def note(label: str) -> str:
    record(label)
    return label


@app.task
def send_email(to: str) -> None:
    record(f"email {to}")


@app.task(acks_late=True)
def slow(label: str, seconds: float) -> str:
    record(f"start {label}")
    time.sleep(seconds)
    record(f"done {label}")
    return label


@app.task(bind=True, max_retries=5)
def flaky(self: object, label: str) -> str:
    attempt = self.request.retries + 1  # type: ignore[attr-defined]
    record(f"attempt {label} {attempt}")
    if attempt < 3:
        raise self.retry(countdown=1)  # type: ignore[attr-defined]
    return label


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(acks_late=True, reject_on_worker_lost=True)
def dies_once(label: str) -> str:
    """Kills its pool process on the first attempt (as an OOM kill would)."""
    marker = f"{os.environ['TQ_JOURNAL']}.{label}.died"
    if not os.path.exists(marker):
        open(marker, "w").close()
        record(f"dying {label}")
        os._exit(1)
    record(f"survived {label}")
    return label


# -- tasks of tests/test_e2e_worker.py ---------------------------------------------


@app.task
def stamp(label: str) -> str:
    """Record the label with the Unix time the task ran at."""
    record(f"{label} {time.time():.3f}")
    return label


@app.task
def block(label: str, seconds: float) -> str:
    """Keep a worker process busy; acknowledged early (when it starts), unlike ``slow``."""
    record(f"start {label}")
    time.sleep(seconds)
    record(f"done {label}")
    return label


@app.task(bind=True, max_retries=5)
def retried(self: object, label: str) -> str:
    """Fail twice with ``self.retry(countdown=1)``; record each attempt and its time."""
    attempt = self.request.retries + 1  # type: ignore[attr-defined]
    record(f"attempt {label} {attempt} {time.time():.3f}")
    if attempt < 3:
        raise self.retry(countdown=1)  # type: ignore[attr-defined]
    return label


# -- tasks of tests/test_e2e_control.py ----------------------------------------------


@app.task(bind=True, acks_late=True)
def reject_first_delivery(self: object, label: str) -> str:
    """Celery's documented pattern: requeue once, succeed when redelivered."""
    if not self.request.delivery_info.get("redelivered"):  # type: ignore[attr-defined]
        record(f"rejected {label}")
        raise Reject("first delivery", requeue=True)
    record(f"redelivered {label}")
    return label
