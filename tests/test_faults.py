"""Fault injection with real workers: nothing is lost, no worker dies, and a task runs
twice only when a worker was killed while running it (or, in the prefork pool, when the
connection dropped just as a pool process was starting it: see
assert_duplicates_only_at_faults).

Each test owns its store (a private redis-server it may kill or restart, or a SQLite
file), its `celery -A tests.faults_app worker` processes and a journal file the tasks
append `start|done <label> <worker> <time>` to, independently of the broker. The journal is
the ground truth: a label never done is lost, a label done twice is a duplicate.
Marked slow: CI runs them as a separate step (`python -m pytest -m slow`).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from tq_kombu.store import open_store
from tq_kombu.store.base import QueueCounts

from .conftest import RedisServer
from .workers import Worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

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


@pytest.fixture
def redis_owned(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may be killed or restarted), keeping its
    data across a restart (append-only file)."""
    server = RedisServer(
        tmp_path / "redis", appendonly=True, extra_args=("--enable-debug-command", "local")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_faults(tmp_path: Path) -> Iterator[object]:
    made: list[Faults] = []

    def make(store_url: str, lease_seconds: float) -> Faults:
        faults = Faults(tmp_path, store_url, lease_seconds)
        made.append(faults)
        return faults

    yield make
    for faults in made:
        faults.stop()
        for name, worker in faults.workers.items():
            print(f"--- {name}.log (tail)\n{worker.output()[-2000:]}")


def publish(faults: Faults, count: int, seconds: float, prefix: str = "t") -> list[str]:
    labels = [f"{prefix}{i}" for i in range(count)]
    for label in labels:
        faults.send("work", label, seconds)
    return labels


# -- the store connection goes away -------------------------------------------------


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_client_kill_loops_lose_nothing_and_kill_no_worker(
    redis_owned: RedisServer, make_faults: object, pool: str
) -> None:
    faults: Faults = make_faults(redis_owned.url, 3)  # type: ignore[operator]
    # Given a worker running 150 short tasks
    faults.worker("w", *POOLS[pool])
    labels = publish(faults, 150, 0.05)
    admin = redis.Redis(port=redis_owned.port)
    # When every client connection is killed every 0.7 s while they run
    deadline = time.monotonic() + 120
    while len(faults.done()) < len(labels) and time.monotonic() < deadline:
        faults.faults.append(time.time())
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        time.sleep(0.7)  # the fault's rhythm, not a synchronisation
    # Then every task ran, the worker is still up, and no task ran twice but one
    # starting at a kill in the prefork pool (see assert_duplicates_only_at_faults)
    faults.wait_all_done(labels, 60)
    assert len(faults.faults) >= 3
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert_duplicates_only_at_faults(faults, pool)


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


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_connection_lost_while_a_prefetched_batch_waits_loses_and_duplicates_nothing(
    redis_owned: RedisServer, make_faults: object, pool: str
) -> None:
    faults: Faults = make_faults(redis_owned.url, 2)  # type: ignore[operator]
    # Given a worker of two processes or threads that prefetched 8 tasks of 1.5 s:
    # two running, six waiting in the worker (in the pool or in Celery's buffers)
    labels = publish(faults, 8, 1.5)
    faults.worker("w", *POOLS[pool], prefetch=4)
    wait_for(lambda: len([r for r in faults.runs() if r[0] == "start"]) >= 2, 30, "2 starts")
    # When its connections are killed
    redis.Redis(port=redis_owned.port).execute_command(
        "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
    )
    # Then the running ones are acked after the reconnect, the waiting ones run or go
    # back to the queue (and run once), none is stuck in flight, and the worker lives
    faults.wait_all_done(labels, 60)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert faults.duplicates() == set()
    wait_for(
        lambda: open_store(redis_owned.url).counts("celery") == QueueCounts(),
        10,
        "the queue to be empty (nothing held in flight)",
    )


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_redis_restart_loses_nothing_and_kills_no_worker(
    redis_owned: RedisServer, make_faults: object, pool: str
) -> None:
    faults: Faults = make_faults(redis_owned.url, 6)  # type: ignore[operator]
    # Given a worker running 60 tasks of 0.1 s
    faults.worker("w", *POOLS[pool])
    labels = publish(faults, 60, 0.1)
    wait_for(lambda: len(faults.done()) >= 5, 30, "the first tasks to run")
    # When Redis stops while tasks run, and comes back 1.5 s later (same port and data)
    faults.faults.append(time.time())
    redis_owned.stop()
    time.sleep(1.5)  # the length of the outage
    redis_owned.start()
    # Then the worker reconnects by itself and every task runs, once but for one
    # starting at the stop in the prefork pool
    faults.wait_all_done(labels, 120)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert_duplicates_only_at_faults(faults, pool)


def test_redis_stalls_shorter_than_the_lease_lose_and_duplicate_nothing(
    redis_owned: RedisServer, make_faults: object
) -> None:
    faults: Faults = make_faults(redis_owned.url, 4)  # type: ignore[operator]
    # Given a worker running 60 tasks of 0.1 s
    faults.worker("w", *POOLS["prefork"])
    labels = publish(faults, 60, 0.1)
    admin = redis.Redis(port=redis_owned.port)
    # When Redis stalls for 1.5 s (DEBUG SLEEP) three times while they run
    for _ in range(3):
        admin.execute_command("DEBUG", "SLEEP", "1.5")
        time.sleep(0.5)  # the fault's rhythm
    # Then every task ran exactly once and the worker is still up
    faults.wait_all_done(labels, 60)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert faults.duplicates() == set()


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_sqlite_database_locked_for_a_while_loses_and_duplicates_nothing(
    tmp_path: Path, make_faults: object, pool: str
) -> None:
    database = tmp_path / "queue.db"
    faults: Faults = make_faults(f"sqlite:///{database}", 4)  # type: ignore[operator]
    faults.busy_timeout_seconds = 0.2
    # Given a worker that gives up on a locked database after 0.2 s, running 60 tasks
    faults.worker("w", *POOLS[pool])
    labels = publish(faults, 60, 0.05)
    wait_for(lambda: len(faults.done()) >= 5, 30, "the first tasks to run")
    # When another process holds the database's write lock for 1.5 s, twice
    for _ in range(2):
        locker = sqlite3.connect(database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        time.sleep(1.5)  # the length of the lock
        locker.execute("COMMIT")
        locker.close()
        time.sleep(0.5)  # the fault's rhythm
    # Then the worker rides it out: every task runs exactly once
    faults.wait_all_done(labels, 60)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert faults.duplicates() == set()


# -- workers die ---------------------------------------------------------------------


def test_ten_kill_9s_of_random_workers_during_2000_tasks_lose_nothing(
    redis_owned: RedisServer, make_faults: object
) -> None:
    faults: Faults = make_faults(redis_owned.url, 2)  # type: ignore[operator]
    rng = random.Random(7)
    # Given three workers (one of each pool) and 2,000 short tasks
    for index, pool in enumerate(["prefork", "threads", "solo"]):
        faults.worker(f"w{index}", *POOLS[pool], prefetch=4)
    labels = publish(faults, 2000, 0.05)
    wait_for(lambda: len(faults.done()) >= 50, 60, "the first tasks to run")
    # When ten times a random worker is killed with -9 and a new one takes its place
    for kill in range(10):
        time.sleep(0.2 + rng.random())  # when the next kill strikes
        victim = rng.choice(sorted(set(faults.workers) - faults.killed))
        faults.kill(victim)
        faults.worker(f"r{kill}", *POOLS[rng.choice(list(POOLS))], prefetch=4)
    assert len(faults.done()) < len(labels), "the kills came after the work: make tasks longer"
    # Then every task is done; only tasks a killed worker had started ran twice
    faults.wait_all_done(labels, 180)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert faults.duplicates() <= faults.started_by_killed_workers()


# -- busy consumers ------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_prefetched_batch_waiting_behind_a_long_task_runs_exactly_once(
    redis_owned: RedisServer, tmp_path: Path, make_faults: object, store: str
) -> None:
    url = redis_owned.url if store == "redis" else f"sqlite:///{tmp_path / 'queue.db'}"
    faults: Faults = make_faults(url, 1)  # type: ignore[operator]
    # Given a long task (5 leases) and three short ones waiting, published first
    faults.send("work", "long", 5)
    labels = ["long", *publish(faults, 3, 0.01, prefix="short")]
    # When a solo worker fetches all four in one batch and starts the long one
    faults.worker("first", *POOLS["solo"], prefetch=4)
    wait_for(lambda: any(r[:2] == ("start", "long") for r in faults.runs()), 30, "the long task")
    # and an idle worker on the same queue would take any lease that expires
    thief = faults.worker("thief", *POOLS["solo"])
    # Then the short ones stay leased behind it: each task runs once, on the first worker
    faults.wait_all_done(labels, 60)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    assert faults.duplicates() == set()
    assert "] received" not in thief.output()


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_task_holding_the_gil_for_three_leases_runs_exactly_once(
    redis_owned: RedisServer, make_faults: object, pool: str
) -> None:
    faults: Faults = make_faults(redis_owned.url, 2)  # type: ignore[operator]
    # Given a worker running a task that holds the GIL for 3 leases
    faults.worker("first", *POOLS[pool])
    faults.send("hog", "hog", 6)
    wait_for(lambda: any(r[:2] == ("start", "hog") for r in faults.runs()), 30, "the task")
    # When an idle worker would take its message the moment its lease expired
    thief = faults.worker("thief", *POOLS["solo"])
    # Then the lease is renewed all along (by the renewer process): it runs once
    faults.wait_all_done(["hog"], 30)
    faults.assert_nothing_lost_and_no_worker_died(["hog"])
    assert faults.done() == Counter({"hog": 1})
    assert "] received" not in thief.output()
