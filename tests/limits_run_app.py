"""The Celery app the limits end-to-end tests run in real worker processes.

Configured from the environment: TQ_BROKER_URL, TQ_JOURNAL (a file each task run
appends ``<event> <label> <task id> <time>`` to, independent of the broker),
TQ_LEASE_SECONDS (short, so that a killed worker's slot frees quickly).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import tq_celery_ext
import tq_kombu  # noqa: F401

app = Celery("limits_run_app")
app.conf.update(
    broker_url=os.environ.get("TQ_BROKER_URL", "tq+sqlite:///limits.sqlite3"),
    broker_transport_options={
        "lease_seconds": float(os.environ.get("TQ_LEASE_SECONDS", "30")),
        "wait_timeout_seconds": 0.5,
    },
    broker_connection_retry_on_startup=True,
    task_default_queue="limits",
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    tq_rate_limits={"shared_rate": "10/s", "dial": "100/s"},
    tq_concurrency_limits={"pair": 2, "single": 1, "tenant_slots": 2, "dial_slots": 1},
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


def tenant_of(args: Any, kwargs: Any) -> str:
    return str(args[0] if args else kwargs["tenant"])


@app.task(shared=False, bind=True, name="lim.call_a", tq_rate_limit="shared_rate")
def call_a(self: Any, label: str) -> None:
    record("start", label, self.request.id)


@app.task(shared=False, bind=True, name="lim.call_b", tq_rate_limit="shared_rate")
def call_b(self: Any, label: str) -> None:
    record("start", label, self.request.id)


@app.task(shared=False, bind=True, name="lim.dialed", tq_rate_limit="dial")
def dialed(self: Any, label: str) -> None:
    record("start", label, self.request.id)


def started_before(label: str) -> bool:
    """Whether a run of ``label`` already started (this one is a redelivery)."""
    if not os.path.exists(os.environ["TQ_JOURNAL"]):
        return False
    with open(os.environ["TQ_JOURNAL"]) as journal:
        return any(line.split(" ")[:2] == ["start", label] for line in journal)


def _work(self: Any, label: str, seconds: float) -> None:
    """Journal a start (with the worker's name), work ``seconds``, journal the end; a
    redelivered run does not work again."""
    again = started_before(label)
    worker = str(self.request.hostname or "-").split("@")[0]
    record("start", label, worker)
    time.sleep(0 if again else seconds)  # the task's work
    record("end", label, worker)


@app.task(shared=False, bind=True, name="lim.paired", tq_concurrency_limit="pair")
def paired(self: Any, label: str, seconds: float) -> None:
    _work(self, label, seconds)


@app.task(shared=False, bind=True, name="lim.dial_work", tq_concurrency_limit="dial_slots")
def dial_work(self: Any, label: str, seconds: float) -> None:
    _work(self, label, seconds)


@app.task(shared=False, bind=True, name="lim.single", tq_concurrency_limit="single")
def single(self: Any, label: str, seconds: float) -> None:
    _work(self, label, seconds)


@app.task(
    shared=False,
    bind=True,
    name="lim.tenant_job",
    tq_concurrency_limit="tenant_slots",
    tq_limit_key=tenant_of,
)
def tenant_job(self: Any, tenant: str, label: str, seconds: float) -> None:
    _work(self, label, seconds)


@app.task(shared=False, bind=True, name="lim.rare", tq_rate_limit="1/30s")
def rare(self: Any, label: str) -> None:
    record("start", label, self.request.id)


@app.task(shared=False, bind=True, name="lim.plain")
def plain(self: Any, label: str) -> None:
    record("start", label, self.request.id)
