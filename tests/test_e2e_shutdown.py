"""Shutdown and signals, end to end: real `celery -A tests.shutdown_app worker` processes
(prefork, 2 processes, prefetch multiplier 10) on SQLite and on a private Redis, stopped
the way systemd stops a service: SIGTERM to the whole process group.

The tasks write a journal of their runs; the store is read directly to see where the
messages the worker let go of went.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tq_kombu import Priority
from tq_kombu.store import Store, open_store
from tq_kombu.store.model import QueueCounts, State

from .workers import Journal, Worker, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.shutdown_app"
PREFORK = ("--pool", "prefork", "-c", "2", "--without-mingle", "--without-gossip")
#: Bound on a warm shutdown of these tests (their longest task takes 3 s).
EXIT_SECONDS = 60


class Run:
    """One test's store, journal, client and workers."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.workers: list[Worker] = []
        self.client = Celery("shutdown-client", broker=f"tq+{store_url}")
        self.store: Store = open_store(store_url)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{self.store_url}",
            "TQ_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
        }

    def worker(self, name: str) -> Worker:
        worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
        self.workers.append(worker)
        return worker.start("-n", f"{name}@%h", *PREFORK)

    def send(self, task: str, *args: Any, **options: Any) -> Any:
        return self.client.send_task(f"{APP}.{task}", args=args, **options)

    def counts(self) -> QueueCounts:
        return self.store.counts("celery")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.client.close()
        self.store.close()


def stop_group_warm(worker: Worker) -> int:
    """SIGTERM to the worker's whole process group (systemd's KillMode=control-group);
    its exit status once it has shut down by itself."""
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGTERM)
    status = worker.process.wait(timeout=EXIT_SECONDS)
    worker.process = None
    return status


def pool_processes(worker: Worker) -> set[int]:
    """The pids of the worker's prefork pool processes (not its lease renewer)."""
    import psutil

    assert worker.process is not None
    pids = set()
    for child in psutil.Process(worker.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "tq_kombu.renewer" not in child.cmdline():
                pids.add(child.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return pids


@pytest.fixture
def run(store_url: str, tmp_path: Path) -> Iterator[Run]:
    """SQLite in a fresh file, or the session's private redis-server, flushed."""
    test = Run(store_url, tmp_path)
    yield test
    test.close()
    for worker in test.workers:  # pytest shows it when the test failed
        print(f"--- {worker.log}\n{worker.output()[-6000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["short_late", "short"], ids=["acks_late", "early_acks"])
def test_sigterm_to_the_process_group_under_load_loses_no_task_and_runs_none_twice(
    run: Run, task: str
) -> None:
    # Given 2,000 short tasks and a prefork worker busy with them
    total = 2000
    for n in range(total):
        run.send(task, n)
    worker = run.worker("first")
    wait_for(lambda: len(run.journal.lines()) >= 300, 60, "300 tasks run")
    # When the whole process group gets SIGTERM, as systemd stops a service
    status = stop_group_warm(worker)
    # Then the worker shut down warm by itself, its pool processes killed by nothing
    output = worker.output()
    assert status == 0, output[-3000:]
    assert "WorkerLostError" not in output and "exited with 'signal" not in output
    assert "ignores a SIGTERM sent to the whole process group" in output
    # and it holds nothing any more: every unstarted message is back, uncounted
    counts = run.counts()
    ran_before = len(run.journal.lines())
    assert counts.inflight == 0 and counts.dead == 0
    assert ran_before + counts.ready == total, (ran_before, counts)
    assert ran_before < total, "the shutdown came too late to test anything"
    ready = run.store.list_messages("celery", State.READY, limit=total)
    assert {info.delivery_count for info in ready} == {0}
    # When a worker starts again
    run.worker("second")
    wait_for(lambda: len(run.journal.lines()) >= total, 120, "every task run")
    wait_for(lambda: run.counts() == QueueCounts(), 30, "an empty queue")
    # Then every task ran exactly once
    runs = Counter(run.journal.lines())
    assert set(runs) == {f"ran {n}" for n in range(total)}
    assert [line for line, times in runs.items() if times > 1] == []


def test_a_prefetched_message_returns_to_ready_at_its_priority_and_delivery_count(
    run: Run,
) -> None:
    # Given a worker whose two pool processes are busy, and three messages it prefetched
    busy = [run.send("hold", f"busy-{n}", 3.0) for n in range(2)]
    worker = run.worker("w")
    wait_for(lambda: len(run.journal.lines()) == 2, 30, "both pool processes busy")
    levels = {"urgent": Priority.URGENT, "normal": Priority.NORMAL, "low": Priority.LOW}
    waiting = {label: run.send("note", label, priority=p) for label, p in levels.items()}
    wait_for(lambda: run.counts().inflight == 5, 30, "the three prefetched")
    # When the process group gets SIGTERM
    status = stop_group_warm(worker)
    # Then the running tasks finished, and the prefetched ones never started
    assert status == 0, worker.output()[-3000:]
    assert sorted(run.journal.lines()) == sorted(
        [f"start busy-{n}" for n in range(2)] + [f"done busy-{n}" for n in range(2)]
    )
    for result in busy:
        assert run.store.find_task("celery", result.id) is None  # acknowledged
    # and each prefetched message is ready at its priority, never counted as delivered
    assert run.counts() == QueueCounts(ready=3)
    for label, result in waiting.items():
        info = run.store.find_task("celery", result.id)
        assert info is not None, label
        assert (info.state, info.priority, info.delivery_count) == (
            State.READY,
            levels[label],
            0,
        )


def test_sigusr1_logs_the_held_messages_memory_and_running_tasks(run: Run) -> None:
    # Given a worker running one task and holding two more it prefetched
    run.send("hold", "busy", 3.0)
    worker = run.worker("w")
    wait_for(lambda: "start busy" in run.journal.lines(), 30, "the task started")
    run.send("hold", "second", 3.0)
    queued = run.send("note", "queued", priority=Priority.LOW)
    wait_for(lambda: run.counts().inflight == 3, 30, "three messages held")
    queued_info = run.store.find_task("celery", queued.id)
    assert queued_info is not None
    # When the main process gets SIGUSR1
    assert worker.process is not None
    worker.process.send_signal(signal.SIGUSR1)
    # Then its log names the held message with its lease expiry, memory and the tasks
    wait_for(lambda: "running: " in worker.output(), 15, "the state report")
    output = worker.output()
    held = [line for line in output.splitlines() if queued_info.message_id in line]
    assert held and "lease until" in held[0] and "not started" in held[0], output[-3000:]
    assert "memory: main process" in output and "RSS" in output
    assert "running: tests.shutdown_app.hold" in output
    # and Celery's own SIGUSR1 dump (thread tracebacks) still follows
    wait_for(lambda: "Thread" in worker.output(), 15, "Celery's traceback dump")
    assert worker.process.poll() is None


def test_sigquit_after_a_group_sigterm_is_still_a_cold_shutdown_that_ends_the_pool(
    run: Run,
) -> None:
    # Given a worker running a long task (its other pool process never ran one)
    run.send("hold", "long", 60.0)
    worker = run.worker("w")
    wait_for(lambda: "start long" in run.journal.lines(), 30, "the task started")
    assert worker.process is not None
    # When the group gets SIGTERM (warm: the task goes on), then later the main process
    # SIGQUIT (cold)
    os.killpg(worker.process.pid, signal.SIGTERM)
    wait_for(lambda: "ignores a SIGTERM" in worker.output(), 15, "the pool process staying")
    assert worker.process.poll() is None
    wait_for(lambda: "Warm shutdown" in worker.output(), 15, "the warm shutdown")
    time.sleep(1.5)  # past the window in which a SIGTERM is taken for the group's
    started = time.monotonic()
    worker.process.send_signal(signal.SIGQUIT)
    # Then the worker ends the pool and exits long before the task would have ended
    worker.process.wait(timeout=30)
    assert time.monotonic() - started < 30
    assert "done long" not in run.journal.lines()


def test_revoke_with_terminate_still_ends_the_task_in_its_pool_process(run: Run) -> None:
    # Given a worker running a long task
    result = run.send("hold", "long", 60.0)
    worker = run.worker("w")
    wait_for(lambda: "start long" in run.journal.lines(), 30, "the task started")
    before = pool_processes(worker)
    # When it is revoked with terminate (SIGTERM to that pool process alone)
    run.client.control.revoke(result.id, terminate=True)
    # Then the process running it ends (and is replaced), its message is settled
    wait_for(lambda: "Terminating" in worker.output(), 30, "the revoke")
    wait_for(lambda: len(before - pool_processes(worker)) == 1, 30, "a pool process ended")
    wait_for(lambda: run.counts() == QueueCounts(), 30, "the message settled")
    assert worker.process is not None and worker.process.poll() is None
    assert "done long" not in run.journal.lines()
    assert "ignores a SIGTERM" not in worker.output()
