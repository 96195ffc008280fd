"""Memory-recycling workers, end to end: real `celery -A tests.memory_app worker`
processes in the prefork, solo and threads pools, on SQLite and Redis.

Each task appends one line to a journal file (O_APPEND) with its process id and the
worker's recycle count, so every run is counted independently of the broker. A run is
complete when every task is in the journal and the store holds nothing ready or in
flight: no run can happen after that, so duplicates would be in the journal already.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tq_kombu.appconf import EXIT_SETUP
from tq_kombu.store import open_store
from tq_kombu.store.base import QueueCounts
from tq_kombu.store.model import State

from .workers import ROOT, Journal, Worker, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.memory_app"
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")
POOLS = {
    "prefork": ("--pool", "prefork", "-c", "2"),
    "solo": ("--pool", "solo"),
    "threads": ("--pool", "threads", "-c", "2"),
}


class Run:
    """One test's store, journal, client and workers."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.workers: list[Worker] = []
        self._client: Celery | None = None

    def env(self, **settings: str) -> dict[str, str]:
        return {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{self.store_url}",
            "TQ_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
            **settings,
        }

    def worker(self, pool: str, **settings: str) -> Worker:
        worker = Worker(APP, self.env(**settings), self.tmp_path / f"w{len(self.workers)}.log")
        self.workers.append(worker)
        return worker.start(*POOLS[pool], *FAST)

    @property
    def client(self) -> Celery:
        if self._client is None:
            self._client = Celery("memory-client", broker=f"tq+{self.store_url}")
        return self._client

    def send(self, task: str, *args: object) -> str:
        return str(self.client.send_task(f"memory.{task}", args=args).id)

    def counts(self) -> QueueCounts:
        store = open_store(self.store_url)
        try:
            return store.counts("celery")
        finally:
            store.close()

    def runs(self, kind: str) -> list[list[str]]:
        """The journal lines of one task, split: [kind, label, pid, recycles]."""
        return [line.split() for line in self.journal.lines() if line.startswith(kind + " ")]

    def wait_all_ran(self, kind: str, labels: set[str], timeout_seconds: float) -> None:
        def done() -> bool:
            ran = {run[1] for run in self.runs(kind)}
            return ran >= labels and self.counts().ready + self.counts().inflight == 0

        wait_for(done, timeout_seconds, f"every {kind} task to run and settle")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._client is not None:
            self._client.close()


@pytest.fixture
def run(sqlite_url: str, tmp_path: Path) -> Iterator[Run]:
    yield from _run(sqlite_url, tmp_path)


@pytest.fixture
def redis_run(redis_url: str, tmp_path: Path) -> Iterator[Run]:
    yield from _run(redis_url, tmp_path)


def _run(url: str, tmp_path: Path) -> Iterator[Run]:
    started = Run(url, tmp_path)
    yield started
    started.close()
    for worker in started.workers:  # pytest shows it when the test failed
        print(f"--- {worker.log}\n{worker.output()[-8000:]}")


def leak_fifty(run: Run, pool: str, acks: str, timeout_seconds: float = 180) -> None:
    """50 tasks keeping 30 MB each, a 150 MB soft limit: every task runs once, and the
    worker's processes were recycled on the way."""
    worker = run.worker(pool, TQ_SOFT_LIMIT="150MB", TQ_ACKS_LATE="1" if acks == "late" else "")
    labels = {str(n) for n in range(50)}
    for n in range(50):
        run.send("leak", n)
    run.wait_all_ran("leak", labels, timeout_seconds)
    times = Counter(label for _, label, _, _ in run.runs("leak"))
    assert {label for label, count in times.items() if count != 1} == set()
    assert set(times) == labels
    assert run.counts() == QueueCounts()
    if pool == "prefork":  # fresh pool processes took over from recycled ones
        assert len({pid for _, _, pid, _ in run.runs("leak")}) > 2
        assert "recycled so far" in worker.output()  # the main process counts them
    else:  # restarted in place, the count carried over
        assert max(int(recycled) for *_, recycled in run.runs("leak")) >= 5
    assert worker.output().count("tq: recycling") >= 5


@pytest.mark.parametrize(
    ("pool", "acks"),
    [
        ("prefork", "early"),
        pytest.param("solo", "late", marks=pytest.mark.slow),
        pytest.param("threads", "late", marks=pytest.mark.slow),
        pytest.param("prefork", "late", marks=pytest.mark.slow),
        pytest.param("solo", "early", marks=pytest.mark.slow),
        pytest.param("threads", "early", marks=pytest.mark.slow),
    ],
)
def test_a_leaking_task_over_the_soft_limit_recycles_processes_and_runs_every_task_once(
    run: Run, pool: str, acks: str
) -> None:
    leak_fifty(run, pool, acks)


@pytest.mark.slow
@pytest.mark.parametrize(("pool", "acks"), [("prefork", "late"), ("solo", "early")])
def test_recycling_on_redis_runs_every_task_once(redis_run: Run, pool: str, acks: str) -> None:
    leak_fifty(redis_run, pool, acks)


@pytest.mark.parametrize(
    ("pool", "acks"),
    [
        ("prefork", "late"),
        ("solo", "early"),
        pytest.param("threads", "late", marks=pytest.mark.slow),
    ],
)
def test_a_task_over_the_hard_limit_goes_dead_and_the_worker_runs_the_next_one(
    run: Run, pool: str, acks: str
) -> None:
    # Given a worker with a 300 MB hard limit
    worker = run.worker(pool, TQ_HARD_LIMIT="300MB", TQ_ACKS_LATE="1" if acks == "late" else "")
    # When a task allocates up to 800 MB
    hog = run.send("hog", "big", 800)
    # Then it is stopped on the way and its message is dead with reason memory_limit
    wait_for(lambda: run.counts().dead == 1, 30, "the hog's message to go dead")
    store = open_store(run.store_url)
    try:
        [dead] = store.list_messages("celery", State.DEAD)
    finally:
        store.close()
    assert (dead.task_id, dead.dead_reason) == (hog, "memory_limit")
    assert "done big" not in run.journal.lines()
    # and the worker, its process replaced, runs the next task
    run.send("note", "after")
    wait_for(lambda: run.runs("note"), 30, "the next task to run")
    wait_for(lambda: run.counts() == QueueCounts(dead=1), 10, "the note to be acknowledged")
    assert worker.output().count("over tq_worker_memory_hard_limit") >= 1
    assert "tq: recycling" in worker.output()
    assert worker.process is not None and worker.process.poll() is None
    assert run.journal.lines().count("start big") == 1  # never redelivered


def test_a_process_over_the_soft_limit_from_the_start_logs_one_error_and_never_loops(
    run: Run,
) -> None:
    # Given a worker whose app holds 200 MB from start-up, with a 150 MB soft limit
    worker = run.worker("solo", TQ_SOFT_LIMIT="150MB", TQ_BALLAST_MB="200")
    # When it runs tasks
    labels = {str(n) for n in range(8)}
    for n in range(8):
        run.send("note", n)
    run.wait_all_ran("note", labels, 30)
    # Then it logged one error naming its baseline and the limit, and never recycled
    output = worker.output()
    assert output.count("before its first task, already over tq_worker_memory_soft_limit") == 1
    assert "= 150.0 MB" in output
    assert "tq: recycling" not in output
    assert {recycled for *_, recycled in run.runs("note")} == {"0"}
    assert sorted(label for _, label, _, _ in run.runs("note")) == sorted(labels)


def test_max_tasks_recycles_a_solo_worker_after_every_ten_tasks(run: Run) -> None:
    # Given a solo worker with tq_worker_max_tasks = 10
    worker = run.worker("solo", TQ_MAX_TASKS="10")
    # When 35 tasks run
    labels = {str(n) for n in range(35)}
    for n in range(35):
        run.send("note", n)
    run.wait_all_ran("note", labels, 60)
    # Then each ran once, and the worker restarted in place 3 times: 10, 10, 10, 5 tasks
    runs = run.runs("note")
    assert sorted(label for _, label, _, _ in runs) == sorted(labels)
    assert Counter(recycled for *_, recycled in runs) == {"0": 10, "1": 10, "2": 10, "3": 5}
    assert worker.output().count("tq: recycling worker") == 3


def test_sigusr2_recycles_an_idle_solo_worker_at_once(run: Run) -> None:
    worker = run.worker("solo")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGUSR2)
    wait_for(lambda: worker.output().count(" ready.") == 2, 30, "the worker to restart")
    run.send("note", "after")
    run.wait_all_ran("note", {"after"}, 30)
    assert "asked by SIGUSR2" in worker.output()
    assert run.runs("note")[0][3] == "1"


def test_sigusr2_replaces_every_prefork_pool_process(run: Run) -> None:
    worker = run.worker("prefork")
    assert worker.process is not None
    before = {p.pid for p in _children(worker.process.pid)}
    worker.process.send_signal(signal.SIGUSR2)
    wait_for(
        lambda: (
            len({p.pid for p in _children(worker.process.pid)} - before) >= 2  # type: ignore[union-attr]
            and len(_children(worker.process.pid)) >= 2
        ),  # type: ignore[union-attr]
        30,
        "two fresh pool processes",
    )
    run.send("note", "after")
    run.wait_all_ran("note", {"after"}, 30)
    assert int(run.runs("note")[0][2]) not in before


def _children(pid: int) -> list[object]:
    import psutil

    return list(psutil.Process(pid).children())


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("TQ_SOFT_LIMIT", "150 parsecs"),
        ("TQ_HARD_LIMIT", "-5MB"),
        ("TQ_RECYCLE_MODE", "respawn"),
    ],
)
def test_a_malformed_setting_stops_the_worker_at_start_with_a_clear_error(
    run: Run, setting: str, value: str
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "worker", "--pool", "solo", *FAST],
        cwd=ROOT,
        env=run.env(**{setting: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_SETUP, result.stderr
    [line, *_] = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    names = {
        "TQ_SOFT_LIMIT": "tq_worker_memory_soft_limit",
        "TQ_HARD_LIMIT": "tq_worker_memory_hard_limit",
        "TQ_RECYCLE_MODE": "tq_worker_recycle_mode",
    }
    assert names[setting] in line and repr(value) in line
    assert time.monotonic() - started < 30


def test_in_exit_mode_a_recycled_worker_exits_0_and_leaves_the_rest_ready(run: Run) -> None:
    # Given a solo worker recycling after 3 tasks in mode "exit" (for its supervisor)
    worker = run.worker("solo", TQ_MAX_TASKS="3", TQ_RECYCLE_MODE="exit")
    assert worker.process is not None
    for n in range(5):
        run.send("note", n)
    # Then it exits with status 0 after its third task, holding nothing
    assert worker.process.wait(timeout=30) == 0
    assert len(run.runs("note")) == 3
    assert run.counts() == QueueCounts(ready=2)
    # and the worker its supervisor starts runs the other two, each once
    run.worker("solo", TQ_MAX_TASKS="3", TQ_RECYCLE_MODE="exit")
    run.wait_all_ran("note", {str(n) for n in range(5)}, 30)
    assert sorted(label for _, label, _, _ in run.runs("note")) == [str(n) for n in range(5)]


@pytest.mark.parametrize("pool", ["prefork", pytest.param("solo", marks=pytest.mark.slow)])
def test_a_task_that_does_not_stop_over_the_hard_limit_has_its_process_replaced(
    run: Run, pool: str
) -> None:
    # Given a worker with a 300 MB hard limit
    worker = run.worker(pool, TQ_HARD_LIMIT="300MB", TQ_ACKS_LATE="1")
    # When a task goes over it and swallows the exception that should stop it
    hog = run.send("stubborn", "big", 400, 60)
    # Then after the grace period its message is dead (memory_limit), its process replaced
    wait_for(lambda: run.counts().dead == 1, 30, "the stuck task's message to go dead")
    store = open_store(run.store_url)
    try:
        [dead] = store.list_messages("celery", State.DEAD)
    finally:
        store.close()
    assert (dead.task_id, dead.dead_reason) == (hog, "memory_limit")
    # and the worker runs the next task
    run.send("note", "after")
    run.wait_all_ran("note", {"after"}, 30)
    assert "did not stop within" in worker.output()
    assert worker.process is not None and worker.process.poll() is None
    assert run.journal.lines().count("start big") == 1
    assert not [line for line in run.journal.lines() if line.startswith("done big")]


def test_a_worker_embedded_in_another_program_never_recycles_that_program(
    memory_url: str,
) -> None:
    # Given a worker that celery.contrib.testing runs in a thread of this test process,
    # for an app that recycles after 2 tasks
    from celery.contrib.testing.worker import start_worker

    import tq_celery_ext

    app = Celery("embedded", broker=f"tq+{memory_url}", backend="cache+memory://")
    app.conf.tq_worker_max_tasks = 2
    tq_celery_ext.install(app)

    @app.task(shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    # When it runs 4 tasks, then they all ran, and this process was neither restarted
    # nor ended (this test would not finish)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert [add.delay(1, n).get(timeout=10) for n in range(4)] == [1, 2, 3, 4]
    assert app.tq_recycler.settings is None
