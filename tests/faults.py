"""The fault-injection suites' workers, journal and client (tests/test_faults*.py).

Each test owns its store (a private redis-server it may kill or restart, or a SQLite
file), its `celery -A tests.faults_app worker` processes and a journal file the tasks
append `start|done <label> <worker> <time>` to, independently of the broker. The journal is
the ground truth: a label never done is lost, a label done twice is a duplicate.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from celery import Celery

from .workers import Worker, wait_for

APP = "tests.faults_app"
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")
POOLS = {
    "prefork": ("--pool", "prefork", "-c", "2"),
    "threads": ("--pool", "threads", "-c", "2"),
    "solo": ("--pool", "solo"),
}


class Faults:
    """One test's store, journal, workers and client."""

    def __init__(self, tmp_path: Path, store_url: str, lease_seconds: float) -> None:
        self.tmp_path = tmp_path
        self.store_url = store_url
        self.lease_seconds = lease_seconds
        self.journal = tmp_path / "journal.txt"
        self.workers: dict[str, Worker] = {}
        self.killed: set[str] = set()
        self.busy_timeout_seconds = 5.0
        #: More environment for the workers (e.g. TQ_EXTENSION=1, see faults_app).
        self.extra_env: dict[str, str] = {}
        #: When connections were cut (Unix time).
        self.faults: list[float] = []
        self._client: Celery | None = None

    def env(self, name: str, prefetch: int = 1) -> dict[str, str]:
        return {
            **os.environ,
            "TQ_BUSY_TIMEOUT_SECONDS": str(self.busy_timeout_seconds),
            "TQ_BROKER_URL": f"tq+{self.store_url}",
            "TQ_LEASE_SECONDS": str(self.lease_seconds),
            "TQ_PREFETCH": str(prefetch),
            "TQ_JOURNAL": str(self.journal),
            "TQ_WORKER": name,
            "PYTHONWARNINGS": "ignore",
            **self.extra_env,
        }

    def worker(self, name: str, *args: str, prefetch: int = 1) -> Worker:
        worker = Worker(APP, self.env(name, prefetch), self.tmp_path / f"{name}.log")
        self.workers[name] = worker
        worker.start("-n", f"{name}@%h", *FAST, *args, ready_timeout_seconds=60)
        return worker

    def kill(self, name: str) -> None:
        self.workers[name].kill()
        self.killed.add(name)

    @property
    def client(self) -> Celery:
        if self._client is None:
            self._client = Celery("faults-client", broker=f"tq+{self.store_url}")
            self._client.conf.broker_transport_options = {"lease_seconds": self.lease_seconds}
        return self._client

    def send(
        self, task: str, label: str, *args: float, queue: str = "celery", **options: object
    ) -> None:
        self.client.send_task(f"{APP}.{task}", args=(label, *args), queue=queue, **options)

    def runs(self) -> list[tuple[str, str, str, str]]:
        """``(event, label, worker, unix time)`` of every start and end, in order."""
        if not self.journal.exists():
            return []
        return [tuple(line.split(" ")) for line in self.journal.read_text().splitlines()]  # type: ignore[misc]

    def in_flight_at_faults(self, margin_seconds: float) -> set[str]:
        """Tasks whose first run started within ``margin_seconds`` of a fault (a task
        Celery's prefork pool had handed to a process but not yet seen start)."""
        first_start: dict[str, float] = {}
        for event, label, _, at in self.runs():
            if event == "start":
                first_start.setdefault(label, float(at))
        return {
            label
            for label, at in first_start.items()
            if any(abs(at - fault) <= margin_seconds for fault in self.faults)
        }

    def done(self) -> Counter[str]:
        return Counter(label for event, label, *_ in self.runs() if event == "done")

    def wait_all_done(self, labels: list[str], timeout_seconds: float) -> None:
        wait_for(
            lambda: set(labels) <= set(self.done()),
            timeout_seconds,
            f"all {len(labels)} tasks to be done",
        )

    def assert_nothing_lost_and_no_worker_died(self, labels: list[str]) -> None:
        done = self.done()
        lost = [label for label in labels if not done[label]]
        assert lost == [], f"{len(lost)} tasks lost: {lost[:20]}"
        for name, worker in self.workers.items():
            if name in self.killed:
                continue
            log = worker.output()
            assert worker.process is not None and worker.process.poll() is None, (
                f"worker {name} died:\n{log[-3000:]}"
            )
            assert "Unrecoverable error" not in log, log[-3000:]

    def duplicates(self) -> set[str]:
        return {label for label, n in self.done().items() if n > 1}

    def started_by_killed_workers(self) -> set[str]:
        return {
            label for event, label, who, _ in self.runs() if event == "start" and who in self.killed
        }

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()


def publish(faults: Faults, count: int, seconds: float, prefix: str = "t") -> list[str]:
    labels = [f"{prefix}{i}" for i in range(count)]
    for label in labels:
        faults.send("work", label, seconds)
    return labels


def assert_duplicates_only_at_faults(faults: Faults, pool: str) -> None:
    """No task ran twice, except in the prefork pool one that was starting when the
    connection dropped: Celery's pool then forgets a task it handed to a process that has
    not reported its start yet (it counts on a redelivery), and the process runs it
    anyway; at most one per pool process per fault."""
    duplicates = faults.duplicates()
    if pool != "prefork":
        assert duplicates == set()
        return
    assert duplicates <= faults.in_flight_at_faults(margin_seconds=0.3)
    assert len(duplicates) <= 2 * len(faults.faults)
    assert all(runs == 2 for label, runs in faults.done().items() if label in duplicates)
