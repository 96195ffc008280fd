"""End to end, as a user runs tq: real `celery -A tests.e2e_app worker` processes on
both stores, in the solo and prefork pools, fed by an ordinary Celery client.

Each test owns its store (a flushed private Redis, or a fresh SQLite file), a journal
file the tasks append to, and its workers, whose `-l INFO` logs are printed when the
test fails. Waits poll a condition (journal, store counts, log) with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group

from tq_kombu import Priority
from tq_kombu.store import open_store
from tq_kombu.store.base import QueueCounts

from . import workers
from .conftest import RedisServer
from .e2e_app import app as worker_app
from .workers import Journal, run_celery, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.e2e_app"
#: Worker options that only save start-up time; left out where the feature is under test.
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")
PREFORK = ("--pool", "prefork", "-c", "2")
SOLO = ("--pool", "solo")
POOLS = {"solo": SOLO, "prefork": PREFORK}
EMPTY = QueueCounts()


class Worker(workers.Worker):
    """A worker stopped as an operator stops one: SIGTERM to the main process (warm
    shutdown), SIGKILL to the whole process group if it has not exited in time."""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(f"--- {self.log}: no exit within the bound after SIGTERM; SIGKILL")
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # pool children left behind, if any
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.terminate()
        self.reap(time.monotonic() + 15)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def received(self, task_id: str) -> bool:
        return f"[{task_id}] received" in self.output()


class E2E:
    """One test's store, result backend, journal, client and workers."""

    def __init__(self, store_url: str, tmp_path: Path, result_backend: str = "") -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.result_backend = result_backend
        self.lease_seconds = 30.0
        self.journal = Journal(tmp_path / "journal.txt")
        self.workers: list[Worker] = []
        self._client: Celery | None = None

    @property
    def broker_url(self) -> str:
        return f"tq+{self.store_url}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TQ_BROKER_URL": self.broker_url,
            "TQ_LEASE_SECONDS": str(self.lease_seconds),
            "TQ_JOURNAL": str(self.journal.path),
            "TQ_RESULT_BACKEND": self.result_backend,
            "PYTHONWARNINGS": "ignore",
        }

    def worker(self, *args: str, name: str = "w", fast: bool = True) -> Worker:
        """Start ``celery worker -n name@%h *args`` and wait until it logs 'ready.'."""
        worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
        self.workers.append(worker)
        worker.start("-n", f"{name}@%h", *args, *(FAST if fast else ()))
        return worker

    @property
    def client(self) -> Celery:
        """A Celery app that publishes like the user's code does (same routes, options)."""
        if self._client is None:
            client = Celery(
                "e2e-client", broker=self.broker_url, backend=self.result_backend or None
            )
            client.conf.update(
                broker_transport_options={"lease_seconds": self.lease_seconds},
                task_routes=worker_app.conf.task_routes,
            )
            self._client = client
        return self._client

    def send(self, task: str, *args: Any, **options: Any) -> Any:
        return self.client.send_task(f"{APP}.{task}", args=args, **options)

    def counts(self, queue: str = "celery") -> QueueCounts:
        store = open_store(self.store_url)
        try:
            return store.counts(queue)
        finally:
            store.close()

    def lines_starting(self, prefix: str) -> list[str]:
        return [line for line in self.journal.lines() if line.startswith(prefix)]

    def close(self) -> None:
        # SIGTERM every worker first so that they shut down side by side
        for worker in self.workers:
            worker.terminate()
        deadline = time.monotonic() + 15
        for worker in self.workers:
            worker.reap(deadline)
        if self._client is not None:
            self._client.close()


def stamped(line: str) -> float:
    """The Unix time at the end of a journal line written by ``stamp`` or ``retried``."""
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def e2e(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[E2E]:
    if store_url.startswith("redis"):
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = server.url.rsplit("/", 1)[0] + "/1"  # flushed with the broker's db
    else:
        (tmp_path / "results").mkdir()
        backend = f"file://{tmp_path / 'results'}"  # sqlalchemy is not installed
    run = E2E(store_url, tmp_path, backend)
    yield run
    run.close()
    for worker in run.workers:  # pytest shows it when the test failed
        print(f"--- {worker.log}\n{worker.output()[-6000:]}")


# -- priorities ---------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_tasks_queued_behind_a_busy_worker_run_most_urgent_first(e2e: E2E, pool: str) -> None:
    # Given a worker with one process and prefetch 1 (worker_prefetch_multiplier=1),
    # busy with a task acknowledged when it started
    e2e.worker("--pool", pool, "-c", "1")
    e2e.send("block", "blocker", 2.5)
    wait_for(lambda: "start blocker" in e2e.journal.lines(), 10, "the blocker to start")
    e2e.send("note", "LOW", priority=Priority.LOW)
    if pool == "prefork":
        # the acknowledged blocker left room for one message: LOW is prefetched
        wait_for(lambda: e2e.counts() == QueueCounts(inflight=1), 5, "the worker to prefetch LOW")
        expected = ["LOW", "URGENT", "HIGH", "NORMAL"]
    else:
        # the solo pool runs the task in the consuming thread: nothing is fetched meanwhile
        expected = ["URGENT", "HIGH", "NORMAL", "LOW"]
    # When more urgent tasks arrive while it is still busy
    for level in (Priority.NORMAL, Priority.HIGH, Priority.URGENT):
        e2e.send("note", level.name, priority=level)
    assert "done blocker" not in e2e.journal.lines(), "the blocker ended too soon for this test"
    # Then after the blocker they run most urgent first (the prefetched one aside)
    wait_for(lambda: len(e2e.journal.lines()) == 6, 20, "the four tasks")
    assert e2e.journal.lines() == ["start blocker", "done blocker", *expected]


# -- delays and retries -------------------------------------------------------------


def test_a_countdown_task_waits_delayed_in_the_broker_then_runs_when_due(e2e: E2E) -> None:
    # Given an idle worker with room for two messages
    e2e.worker(*PREFORK)
    # When a task is sent with countdown=2
    sent_at = time.time()
    e2e.send("stamp", "later", countdown=2)
    # Then until it is due the store counts it as delayed and no worker holds it
    while time.time() < sent_at + 1.8:
        assert e2e.counts() == QueueCounts(delayed=1)
        assert e2e.journal.lines() == []
        time.sleep(0.1)  # sampling interval of a condition that must hold throughout
    # And it runs once, not before 2 s and soon after
    wait_for(lambda: len(e2e.journal.lines()) == 1, 10, "the countdown task")
    ran_at = stamped(e2e.journal.lines()[0])
    assert sent_at + 2 - 0.01 <= ran_at < sent_at + 2 + 1.5
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")


def test_self_retry_with_a_countdown_succeeds_on_the_third_attempt(e2e: E2E) -> None:
    e2e.worker(*PREFORK)
    e2e.send("retried", "r")
    wait_for(lambda: len(e2e.lines_starting("attempt r 3")) == 1, 20, "the third attempt")
    attempts = e2e.lines_starting("attempt r")
    assert [line.rsplit(" ", 1)[0] for line in attempts] == [
        "attempt r 1",
        "attempt r 2",
        "attempt r 3",
    ]
    times = [stamped(line) for line in attempts]
    assert times[1] - times[0] >= 1 - 0.01 and times[2] - times[1] >= 1 - 0.01
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")


def test_an_eta_far_beyond_the_lease_runs_exactly_once(e2e: E2E) -> None:
    # Given two workers with 1 s leases (the stock transport would redeliver an ETA
    # task held in a worker's memory past its visibility timeout)
    e2e.lease_seconds = 1
    e2e.worker(*PREFORK, name="a")
    e2e.worker(*SOLO, name="b")
    # When an acks_late task is due in 4 s
    sent_at = time.time()
    e2e.send("slow", "eta", 0.1, countdown=4)
    # Then nobody holds it while it waits, it runs once, and nothing is left to run again
    while time.time() < sent_at + 3.8:
        assert e2e.counts() == QueueCounts(delayed=1)
        time.sleep(0.1)  # sampling interval of a condition that must hold throughout
    wait_for(lambda: "done eta" in e2e.journal.lines(), 10, "the ETA task")
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")
    assert e2e.journal.lines() == ["start eta", "done eta"]


# -- acknowledgement and leases -----------------------------------------------------


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_an_acks_late_task_is_held_while_it_runs_and_acked_after(e2e: E2E, pool: str) -> None:
    e2e.worker(*POOLS[pool])
    e2e.send("slow", "late", 1.5)
    wait_for(lambda: "start late" in e2e.journal.lines(), 10, "the task to start")
    # While it runs the message stays leased to the worker
    assert e2e.counts() == QueueCounts(inflight=1)
    wait_for(lambda: "done late" in e2e.journal.lines(), 10, "the task to finish")
    # Then the ack removed it: every count is zero
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_the_task_of_a_worker_killed_mid_task_completes_on_another(e2e: E2E, pool: str) -> None:
    # Given worker A running an acks_late task, with 2 s leases
    e2e.lease_seconds = lease = 2
    a = e2e.worker(*POOLS[pool], name="a")
    victim = e2e.send("slow", "victim", 2)
    wait_for(lambda: "start victim" in e2e.journal.lines(), 10, "A to start the task")
    # When A and its pool processes are killed with -9, and worker B starts
    a.kill()
    killed_at = time.monotonic()
    b = e2e.worker(*SOLO, name="b")
    # Then B runs the task once A's lease has run out, and nothing is lost or left over
    wait_for(lambda: "done victim" in e2e.journal.lines(), lease + 2 + 6, "B to finish the task")
    assert time.monotonic() - killed_at < lease + 2 + 6
    assert e2e.journal.lines() == ["start victim", "start victim", "done victim"]
    assert b.received(victim.id)
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")


def test_tasks_ten_times_longer_than_the_lease_run_exactly_once_in_both_pools(e2e: E2E) -> None:
    # Given 2 s leases (1 s ones expire when a loaded 2-core machine stalls the renewer
    # for a second), a solo and a prefork worker each on its own queue
    e2e.lease_seconds = lease = 2
    e2e.worker(*SOLO, "-Q", "long_solo", name="solo")
    e2e.worker(*PREFORK, "-Q", "long_prefork", name="prefork")
    # When each starts an acks_late task lasting 10 leases
    e2e.send("slow", "in-solo", 10 * lease, queue="long_solo")
    e2e.send("slow", "in-prefork", 10 * lease, queue="long_prefork")
    wait_for(lambda: len(e2e.journal.lines()) == 2, 10, "both tasks to start")
    # and an idle third worker consumes both queues, ready to take any expired lease
    thief = e2e.worker(*SOLO, "-Q", "long_solo,long_prefork", name="thief")
    # Then the leases are renewed all along: each task starts once and is acked
    done = {"done in-solo", "done in-prefork"}
    wait_for(lambda: done <= set(e2e.journal.lines()), 10 * lease + 10, "both tasks to finish")
    for queue in ("long_solo", "long_prefork"):
        wait_for(lambda q=queue: e2e.counts(q) == EMPTY, 5, f"{queue} to be empty")
    assert sorted(e2e.journal.lines()) == sorted(["start in-solo", "start in-prefork", *done])
    assert "] received" not in thief.output()


# -- control, routing, results, purge -----------------------------------------------


def test_inspect_ping_is_answered_by_every_worker(e2e: E2E) -> None:
    # Given two workers started with mingle, gossip and heartbeats (all broadcast)
    e2e.worker(*SOLO, name="one", fast=False)
    e2e.worker(*PREFORK, name="two", fast=False)
    # When `celery inspect ping` asks both by name
    hostname = os.uname().nodename
    names = [f"one@{hostname}", f"two@{hostname}"]
    done = run_celery(APP, e2e.env, "inspect", "ping", "-d", ",".join(names), "--timeout", "5")
    # Then both answer pong
    assert done.returncode == 0, done.stdout + done.stderr
    for name in names:
        assert f"{name}: OK" in done.stdout, done.stdout
    assert done.stdout.count("pong") == 2, done.stdout


def test_a_worker_restarted_after_control_shutdown_is_not_shut_down_again(e2e: E2E) -> None:
    # Given worker w, with 2 s leases, told to shut down by `celery control shutdown`
    e2e.lease_seconds = 2
    first = e2e.worker(*SOLO, name="w")
    name = f"w@{os.uname().nodename}"
    run_celery(APP, e2e.env, "control", "shutdown", "-d", name, "--timeout", "2")
    wait_for(lambda: not first.alive(), 15, "w to shut down")
    # Then the command is gone from w's control queue (nothing can deliver it again)
    assert e2e.counts(f"{name}.celery.pidbox") == EMPTY
    # And w, restarted under the same name once that lease would have expired, stays up
    time.sleep(e2e.lease_seconds)  # the lease of a redelivery bug must have run out
    again = e2e.worker(*SOLO, name="w")
    done = run_celery(APP, e2e.env, "inspect", "ping", "-d", name, "--timeout", "5")
    assert "pong" in done.stdout, done.stdout + done.stderr
    assert again.alive()


def test_tasks_reach_only_the_workers_consuming_their_queue(e2e: E2E) -> None:
    # Given a worker on the default queue and one on 'emails' and 'reports'
    default = e2e.worker(*SOLO, name="default")
    mailer = e2e.worker(*SOLO, "-Q", "emails,reports", name="mailer")
    # When a task routed by task_routes, one sent to a queue by name and a plain one are sent
    email = e2e.send("send_email", "ann@example.com")  # task_routes: emails
    report = e2e.send("note", "report", queue="reports")
    plain = e2e.send("note", "plain")
    # Then each ran once, on the worker consuming its queue
    wanted = ["email ann@example.com", "report", "plain"]
    wait_for(lambda: sorted(e2e.journal.lines()) == sorted(wanted), 15, "the three tasks")
    for queue in ("celery", "emails", "reports"):
        wait_for(lambda q=queue: e2e.counts(q) == EMPTY, 5, f"{queue} to be empty")
    assert mailer.received(email.id) and mailer.received(report.id)
    assert default.received(plain.id)
    assert not default.received(email.id) and not default.received(report.id)
    assert not mailer.received(plain.id)


def test_chains_groups_and_chords_return_their_results(e2e: E2E) -> None:
    # Given a worker and a client sharing a result backend (Redis db 1, or files)
    e2e.worker(*PREFORK)

    def add(*args: int) -> Any:
        return e2e.client.signature(f"{APP}.add", args=args)

    # Then a chain passes each result on, a group gathers, a chord calls back
    assert chain(add(1, 2), add(3), add(4))().get(timeout=20) == 10
    assert group(add(i, i) for i in range(5))().get(timeout=20) == [0, 2, 4, 6, 8]
    total = e2e.client.signature(f"{APP}.total")
    assert chord(add(i, 1) for i in range(3))(total).get(timeout=30) == 6


def test_celery_purge_empties_the_queues(e2e: E2E) -> None:
    # Given ready tasks in two queues and no worker running
    for i in range(5):
        e2e.send("note", f"p{i}")
        e2e.send("send_email", f"p{i}@example.com")
    assert (e2e.counts("celery").ready, e2e.counts("emails").ready) == (5, 5)
    # When `celery purge -f` names both queues
    done = run_celery(APP, e2e.env, "purge", "-f", "-Q", "celery,emails")
    # Then they are empty, and a worker started afterwards runs only what came later
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10 messages" in done.stdout, done.stdout
    assert e2e.counts("celery") == EMPTY and e2e.counts("emails") == EMPTY
    e2e.send("note", "after")
    e2e.worker(*SOLO, "-Q", "celery,emails")
    wait_for(lambda: e2e.journal.lines() != [], 15, "the task sent after the purge")
    assert e2e.journal.lines() == ["after"]


def test_celery_purge_leaves_countdown_tasks_delayed_and_tq_purge_drops_them(e2e: E2E) -> None:
    # Given a task with a countdown, waiting in the broker as delayed
    e2e.send("note", "delayed", countdown=30)
    assert e2e.counts("celery").delayed == 1
    # When `celery purge` runs, then (by design, see README) delayed tasks stay
    done = run_celery(APP, e2e.env, "purge", "-f")
    assert done.returncode == 0, done.stdout + done.stderr
    assert e2e.counts("celery").delayed == 1
    # And `celery tq purge --state delayed` drops them
    done = run_celery(APP, e2e.env, "tq", "purge", "celery", "--state", "delayed", "-f")
    assert done.returncode == 0, done.stdout + done.stderr
    assert e2e.counts("celery") == EMPTY


# -- Redis restart ------------------------------------------------------------------


def test_a_worker_keeps_going_by_itself_across_a_redis_restart(tmp_path: Path) -> None:
    # Given a private Redis with an append-only file, and a worker with 2 s leases
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    run = E2E(server.url, tmp_path)
    run.lease_seconds = 2
    try:
        worker = run.worker(*PREFORK)
        pid = worker.process.pid if worker.process else None
        labels = [f"t{i}" for i in range(50)]

        def ran() -> set[str]:
            return {line.split()[0] for line in run.journal.lines()}

        # When 50 tasks are sent in batches of 10, and Redis restarts mid-run
        for batch in range(2):
            for label in labels[batch * 10 : batch * 10 + 10]:
                run.send("stamp", label)
        wait_for(lambda: len(ran()) >= 5, 15, "the first tasks to run")
        server.stop()
        server.start()
        for batch in range(2, 5):
            for label in labels[batch * 10 : batch * 10 + 10]:
                run.send("stamp", label)
        # Then every task runs at least once, and the same worker process did it all
        wait_for(lambda: set(labels) <= ran(), 60, "all 50 tasks to run")
        assert worker.alive() and worker.process is not None and worker.process.pid == pid
        wait_for(lambda: run.counts() == EMPTY, 10, "the store to be empty")
    finally:
        run.close()
        server.stop()
        for worker in run.workers:
            print(f"--- {worker.log}\n{worker.output()[-8000:]}")
