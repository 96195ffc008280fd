"""The Celery app of the fault-injection suite (tests/test_faults.py).

Configured from the environment: TQ_BROKER_URL, TQ_LEASE_SECONDS, TQ_PREFETCH (the
prefetch multiplier), TQ_BUSY_TIMEOUT_SECONDS (SQLite), TQ_JOURNAL (the file every task run is recorded in, independently
of the broker), TQ_WORKER (the name of the worker, recorded with each run),
TQ_MAX_DELIVERIES (the max_deliveries option, default 5) and TQ_EXTENSION (set: the
app installs tq_celery_ext).
Every task is acks_late, so a run cut short by a kill is redelivered.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

from celery import Celery

import tq_celery_ext
import tq_kombu  # noqa: F401

app = Celery("faults_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///faults.sqlite3"),
    broker_transport_options={
        "lease_seconds": float(os.environ.get("TQ_LEASE_SECONDS", "30")),
        "busy_timeout_seconds": float(os.environ.get("TQ_BUSY_TIMEOUT_SECONDS", "5")),
        "max_deliveries": int(os.environ.get("TQ_MAX_DELIVERIES", "5")),
    },
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("TQ_PREFETCH", "1")),
    task_acks_late=True,
)
if os.environ.get("TQ_EXTENSION"):
    tq_celery_ext.install(app)


def record(event: str, label: str) -> None:
    """Append ``event label worker unix-time`` to the journal (one short O_APPEND write)."""
    line = f"{event} {label} {os.environ.get('TQ_WORKER', '?')} {time.time():.3f}\n"
    with open(os.environ["TQ_JOURNAL"], "a", encoding="utf-8") as journal:
        journal.write(line)


@app.task
def work(label: str, seconds: float = 0.0) -> str:
    """Sleep (releasing the GIL) for ``seconds``, recording the start and the end."""
    record("start", label)
    time.sleep(seconds)
    record("done", label)
    return label


@app.task
def hog(label: str, seconds: float) -> str:
    """Hold the GIL for ``seconds``: a C call made through ctypes.PyDLL keeps it held,
    as a regular expression backtracking or a GIL-holding C extension would."""
    record("start", label)
    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    libc.usleep(int(seconds * 1_000_000))
    record("done", label)
    return label
