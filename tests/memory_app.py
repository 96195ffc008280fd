"""A Celery app with memory-recycling workers, for the recycling tests.

Configured from the environment: TQ_BROKER_URL, TQ_JOURNAL (the file each task appends
one line to, O_APPEND), TQ_SOFT_LIMIT, TQ_HARD_LIMIT, TQ_MAX_TASKS, TQ_RECYCLE_MODE,
TQ_ACKS_LATE ("1": every task acks late), TQ_BALLAST_MB (memory the app holds from
import on: a heavy start-up).
"""

from __future__ import annotations

import os
import time

from celery import Celery

import tq_celery_ext
import tq_kombu  # noqa: F401

MB = 1000**2

app = Celery("memory_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///memory.sqlite3"),
    broker_transport_options={"lease_seconds": 30.0},
    broker_connection_retry_on_startup=True,
    task_acks_late=os.environ.get("TQ_ACKS_LATE") == "1",
    worker_prefetch_multiplier=4,
    tq_worker_memory_soft_limit=os.environ.get("TQ_SOFT_LIMIT") or None,
    tq_worker_memory_hard_limit=os.environ.get("TQ_HARD_LIMIT") or None,
    tq_worker_memory_check_interval_seconds=0.1,
    tq_worker_max_tasks=int(os.environ["TQ_MAX_TASKS"]) if os.environ.get("TQ_MAX_TASKS") else None,
    tq_worker_recycle_mode=os.environ.get("TQ_RECYCLE_MODE") or "reexec",
)
tq_celery_ext.install(app)

#: Memory this process keeps: a leak the tasks grow, the start-up ballast.
KEPT: list[bytes] = [b"\x01" * int(os.environ.get("TQ_BALLAST_MB") or 0) * MB]


def record(line: str) -> None:
    """Append one line to the journal in a single write (O_APPEND: whole lines)."""
    fd = os.open(os.environ["TQ_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def recycles() -> str:
    return os.environ.get("TQ_WORKER_RECYCLES", "0")


@app.task(name="memory.leak")
def leak(n: int, megabytes: int = 30) -> int:
    """Keep ``megabytes`` more (touched pages: resident) and note the run."""
    KEPT.append(b"\x01" * megabytes * MB)
    record(f"leak {n} {os.getpid()} {recycles()}")
    return n


@app.task(name="memory.note")
def note(label: str) -> str:
    record(f"note {label} {os.getpid()} {recycles()}")
    return label


@app.task(name="memory.hog")
def hog(label: str, megabytes: int) -> str:
    """Allocate up to ``megabytes`` in steps (freed at the end), unless stopped first."""
    record(f"start {label}")
    held = []
    for _ in range(megabytes // 20):
        held.append(b"\x01" * 20 * MB)
        time.sleep(0.05)
    record(f"done {label}")
    return label


@app.task(name="memory.stubborn")
def stubborn(label: str, megabytes: int, seconds: float) -> str:
    """Hold ``megabytes`` for ``seconds``, swallowing any exception meanwhile."""
    record(f"start {label}")
    deadline = time.monotonic() + seconds
    held: list[bytes] = []
    while time.monotonic() < deadline:
        try:
            if not held:
                held.append(b"\x01" * megabytes * MB)
            time.sleep(0.05)
        except Exception:  # noqa: BLE001, S110 - the point of this task
            pass
    record(f"done {label}")
    return label
