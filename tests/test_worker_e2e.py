"""End to end: real `celery worker` processes on both stores, as a user runs them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tq_kombu import Priority
from tq_kombu.store import open_store
from tq_kombu.store.base import QueueCounts

from .conftest import RedisServer
from .workers import Journal, Worker, run_celery, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.e2e_app"
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")


class Run:
    """One test's broker, journal and workers; workers are stopped at the end."""

    def __init__(self, store_url: str, tmp_path: Path, lease_seconds: float = 30) -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_LEASE_SECONDS": str(lease_seconds),
            "TQ_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
        }
        self.workers: list[Worker] = []

    def app(self):  # type: ignore[no-untyped-def]
        """The test app configured like the workers (imported with this run's env)."""
        os.environ.update(
            {k: self.env[k] for k in ("TQ_BROKER_URL", "TQ_LEASE_SECONDS", "TQ_JOURNAL")}
        )
        from tests import e2e_app

        e2e_app.app.close()  # forget connections to an earlier test's broker
        e2e_app.app.amqp._producer_pool = None
        e2e_app.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        e2e_app.app.conf.broker_transport_options = {
            "lease_seconds": float(self.env["TQ_LEASE_SECONDS"])
        }
        e2e_app.app.conf.result_backend = self.env.get("TQ_RESULT_BACKEND") or None
        return e2e_app

    def worker(self, *args: str, name: str = "w") -> Worker:
        worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
        self.workers.append(worker)
        return worker.start("-n", f"{name}@%h", *args)

    def counts(self, queue: str = "celery"):  # type: ignore[no-untyped-def]
        store = open_store(self.store_url)
        try:
            return store.counts(queue)
        finally:
            store.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def run(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Run]:
    lease = getattr(request, "param", 30)
    current = Run(store_url, tmp_path, lease)
    yield current
    current.close()
    for worker in current.workers:  # shown by pytest when the test failed
        print(f"--- {worker.log}\n{worker.output()[-4000:]}")


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_worker_runs_the_most_urgent_task_first(run: Run, pool: str) -> None:
    # Given tasks of all four levels queued, least urgent first
    tasks = run.app()
    for level in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT):
        tasks.note.apply_async((level.name,), priority=level)
    # When one worker process with prefetch 1 consumes them
    run.worker("--pool", pool, "-c", "1", *FAST)
    wait_for(lambda: len(run.journal.lines()) == 4, 20, "four tasks")
    # Then they ran most urgent first
    assert run.journal.lines() == ["URGENT", "HIGH", "NORMAL", "LOW"]


def test_the_threads_pool_runs_tasks(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "threads", "-c", "4", *FAST)
    for i in range(20):
        tasks.note.delay(f"t{i}")
    wait_for(lambda: len(run.journal.lines()) == 20, 20, "twenty tasks")
    assert sorted(run.journal.lines()) == sorted(f"t{i}" for i in range(20))
    wait_for(lambda: run.counts() == QueueCounts(), 5, "the store to be empty")


def test_reject_on_worker_lost_requeues_the_task(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "prefork", "-c", "1", *FAST)
    tasks.dies_once.delay("x")
    wait_for(lambda: run.journal.count("survived x") == 1, 30, "the requeued task to run")
    assert run.journal.lines() == ["dying x", "survived x"]


def test_a_revoked_delayed_task_never_runs(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "solo")
    doomed = tasks.note.apply_async(("doomed",), countdown=2)
    tasks.app.control.revoke(doomed.id)
    tasks.note.apply_async(("kept",), countdown=2)
    wait_for(lambda: run.journal.count("kept") == 1, 20, "the kept task")
    assert "doomed" not in run.journal.lines()


def test_a_countdown_task_waits_in_the_broker_and_runs_when_due(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "solo", *FAST)
    sent = time.time()
    tasks.note.apply_async(("later",), countdown=2)
    # While it waits, the broker holds it as delayed and no worker holds it
    counts = run.counts()
    assert (counts.delayed, counts.inflight, counts.ready) == (1, 0, 0)
    wait_for(lambda: run.journal.count("later") == 1, 15, "the countdown task")
    assert time.time() - sent >= 2
    assert run.journal.lines() == ["later"]


def test_retry_with_countdown_succeeds_on_the_third_attempt(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "solo", *FAST)
    tasks.flaky.delay("r")
    wait_for(lambda: run.journal.count("attempt r 3") == 1, 20, "third attempt")
    assert run.journal.lines() == ["attempt r 1", "attempt r 2", "attempt r 3"]


def test_an_acks_late_task_is_acknowledged_after_it_runs(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "prefork", "-c", "2", *FAST)
    tasks.slow.delay("late", 0.2)
    wait_for(lambda: run.journal.count("done late") == 1, 15, "the task")
    wait_for(lambda: run.counts() == QueueCounts(), 5, "the store to be empty")


def test_inspect_ping_answers(run: Run) -> None:
    run.worker("--pool", "solo")
    result = run_celery(APP, run.env, "inspect", "ping", "--timeout", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pong" in result.stdout


def test_tasks_are_routed_to_the_queue_a_worker_consumes(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "solo", "-Q", "emails", *FAST)
    tasks.send_email.delay("ann@example.com")
    wait_for(lambda: run.journal.count("email ann@example.com") == 1, 15, "the routed task")


def test_purge_empties_the_queues(run: Run) -> None:
    tasks = run.app()
    for i in range(5):
        tasks.note.delay(f"p{i}")
    assert run.counts().ready == 5
    result = run_celery(APP, run.env, "purge", "-f")
    assert result.returncode == 0, result.stderr
    assert run.counts().ready == 0


@pytest.mark.parametrize("run", [2], indirect=True)
def test_a_task_of_a_worker_killed_mid_task_completes_on_another(run: Run) -> None:
    # Given worker A running an acks_late task
    tasks = run.app()
    a = run.worker("--pool", "prefork", "-c", "1", *FAST, name="a")
    tasks.slow.delay("victim", 3)
    wait_for(lambda: run.journal.count("start victim") == 1, 15, "A to start the task")
    # When A and its pool are killed with -9, and worker B starts
    a.kill()
    killed_at = time.time()
    run.worker("--pool", "solo", *FAST, name="b")
    # Then the task completes on B once A's lease (2 s) ran out, and nothing is left behind
    wait_for(lambda: run.journal.count("done victim") == 1, 30, "B to finish the task")
    assert time.time() - killed_at < 2 + 3 + 10
    assert run.journal.count("start victim") == 2
    wait_for(lambda: run.counts() == QueueCounts(), 5, "the store to be empty")


@pytest.mark.parametrize("run", [1], indirect=True)
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_task_ten_times_longer_than_the_lease_runs_exactly_once(run: Run, pool: str) -> None:
    tasks = run.app()
    run.worker("--pool", pool, "-c", "1", *FAST)
    tasks.slow.delay("long", 10)
    wait_for(lambda: run.journal.count("done long") == 1, 30, "the long task")
    assert run.journal.lines() == ["start long", "done long"]
    assert run.counts().ready == 0


@pytest.mark.parametrize("run", [1], indirect=True)
def test_an_eta_far_beyond_the_lease_runs_exactly_once(run: Run) -> None:
    tasks = run.app()
    run.worker("--pool", "prefork", "-c", "2", *FAST)
    tasks.note.apply_async(("eta",), countdown=4)
    wait_for(lambda: run.journal.count("eta") == 1, 20, "the ETA task")
    time.sleep(2)  # the assertion is that nothing more happens: give a rerun its chance
    assert run.journal.lines() == ["eta"]


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_chains_and_groups_work_with_a_result_backend(run: Run, redis_server: RedisServer) -> None:
    from celery import Celery, chain, chord, group

    run.env["TQ_RESULT_BACKEND"] = redis_server.url.replace("/0", "/1")
    run.worker("--pool", "prefork", "-c", "2", *FAST)
    client = Celery("client", broker=run.env["TQ_BROKER_URL"], backend=run.env["TQ_RESULT_BACKEND"])

    def add(*args: int):  # type: ignore[no-untyped-def]
        return client.signature("tests.e2e_app.add", args=args)

    try:
        assert chain(add(1, 2), add(3))().get(timeout=20) == 6
        assert group(add(i, i) for i in range(5))().get(timeout=20) == [0, 2, 4, 6, 8]
        total = client.signature("tests.e2e_app.total")
        assert chord(add(i, 1) for i in range(3))(total).get(timeout=20) == 6
    finally:
        client.close()


@pytest.mark.parametrize("scheme", ["redis", "sqlite"])
def test_broker_transport_setting_loads_tq_with_a_plain_url(
    tmp_path: Path, scheme: str, request: pytest.FixtureRequest
) -> None:
    # Given no tq+ prefix: broker_transport names the transport, the URL is plain
    url = request.getfixturevalue(f"{scheme}_url")
    from celery import Celery

    app = Celery("plain", broker=url)
    app.conf.broker_transport = "tq_kombu.transport:Transport"
    with app.connection_for_write() as conn:
        assert type(conn.transport).__module__ == "tq_kombu.transport"
        assert conn.transport.driver_type == scheme
        queue = conn.SimpleQueue("plain")
        queue.put({"hello": scheme}, priority=7)
        message = queue.get(timeout=5)
        assert message.payload == {"hello": scheme}
        message.ack()
        queue.close()
    assert open_store(url).counts("plain") == QueueCounts()


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_a_worker_resumes_by_itself_after_redis_restarts(tmp_path: Path, store_url: str) -> None:
    # Given a private Redis with an append-only file, and a worker on it
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    run = Run(server.url, tmp_path)
    try:
        tasks = run.app()
        run.worker("--pool", "prefork", "-c", "2", *FAST)
        for i in range(25):
            tasks.note.delay(f"a{i}")
        # When Redis restarts mid-run
        server.stop()
        server.start()
        for i in range(25):
            tasks.note.delay(f"b{i}")
        # Then every task runs, without restarting the worker
        expected = {f"a{i}" for i in range(25)} | {f"b{i}" for i in range(25)}
        wait_for(lambda: expected <= set(run.journal.lines()), 60, "all 50 tasks")
        assert run.workers[0].process is not None and run.workers[0].process.poll() is None
    finally:
        run.close()
        server.stop()


def test_an_undecryptable_message_goes_dead_and_the_worker_keeps_going(run: Run) -> None:
    # Given a message sealed with a key the worker does not have, then a good one
    tasks = run.app()
    stranger = {**os.environ, "TQ_ENCRYPTION_KEYS": "other:" + "A" * 43 + "="}
    result = run_celery(
        APP,
        {**run.env, **{"TQ_ENCRYPTION_KEYS": stranger["TQ_ENCRYPTION_KEYS"]}},
        "call",
        "tests.e2e_app.note",
        "--args",
        '["stranger"]',
    )
    assert result.returncode == 0, result.stderr
    tasks.note.delay("friend")
    # When a worker consumes them
    worker = run.worker("--pool", "solo", *FAST)
    # Then the good one runs, the other is dead as undecryptable, and the worker lives on
    wait_for(lambda: run.journal.count("friend") == 1, 15, "the good task")
    wait_for(lambda: run.counts().dead == 1, 5, "the bad message to be dead")
    assert "stranger" not in run.journal.lines()
    assert "undecryptable" in worker.output() or "cannot be read" in worker.output()
    tasks.note.delay("after")
    wait_for(lambda: run.journal.count("after") == 1, 15, "a later task")
