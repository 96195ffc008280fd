"""Real workers consume from Celery's event loop on both stores: a SQLite worker with
``worker_prefetch_multiplier = 1`` fetches again as soon as an ack frees credit, picks
up work promptly when idle, and answers remote control within a second while its pool
is full of long tasks.

Each test owns its store, journal and worker (see tests/test_e2e_worker.py).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_e2e_worker import E2E, stamped
from .workers import wait_for

pytestmark = pytest.mark.e2e

POOLS = {
    "prefork": ("--pool", "prefork", "-c", "2"),
    "threads": ("--pool", "threads", "-c", "2"),
}


@pytest.fixture
def e2e(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[E2E]:
    if store_url.startswith("redis"):
        request.getfixturevalue("redis_server")
    run = E2E(store_url, tmp_path)
    yield run
    run.close()
    for worker in run.workers:  # pytest shows it when the test failed
        print(f"--- {worker.log}\n{worker.output()[-6000:]}")


def ping(e2e: E2E, name: str) -> list[dict[str, object]]:
    """``app.control.ping`` of one worker, waiting at most a second for its reply."""
    replies: list[dict[str, object]] = e2e.client.control.ping(destination=[name], timeout=1)
    return replies


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_prefetch_one_sqlite_worker_drains_200_tasks_in_seconds(e2e: E2E, pool: str) -> None:
    # Given 200 no-op tasks waiting in a SQLite store
    labels = [f"n{i}" for i in range(200)]
    for label in labels:
        e2e.send("note", label)
    # When a worker with two processes and worker_prefetch_multiplier = 1 starts
    started = time.monotonic()
    e2e.worker(*POOLS[pool])
    # Then every ack frees credit that is used at once: all ran within a generous bound
    # (fetching only after a one-second wait, as before, drained ~2 tasks a second)
    wait_for(lambda: len(e2e.journal.lines()) >= 200, 30, "200 tasks to run within 30 s")
    elapsed = time.monotonic() - started
    assert sorted(e2e.journal.lines()) == sorted(labels)
    print(f"200 tasks drained in {elapsed:.1f} s from the worker's start")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_an_idle_sqlite_worker_picks_up_each_task_promptly(e2e: E2E) -> None:
    # Given an idle worker
    e2e.worker(*POOLS["prefork"])
    latencies = []
    for i in range(5):
        # When a task is sent
        sent = time.time()
        e2e.send("stamp", f"t{i}")
        wait_for(lambda i=i: e2e.lines_starting(f"t{i} "), 10, f"task t{i} to run")
        latencies.append(stamped(e2e.lines_starting(f"t{i} ")[0]) - sent)
    # Then it runs well within the one-second wait timeout: the worker was woken,
    # it did not find the task on its next timed look
    print(f"pickup latencies: {[round(x, 3) for x in latencies]}")
    assert statistics.median(latencies) < 0.3, latencies
    assert max(latencies) < 1.5, latencies


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_worker_answers_ping_within_a_second_idle_and_with_its_pool_full(
    e2e: E2E, pool: str
) -> None:
    # Given an idle worker with two processes (or threads)
    worker = e2e.worker(*POOLS[pool], name="busy")
    name = f"busy@{os.uname().nodename}"
    # Then it answers a ping within a second
    assert ping(e2e, name) == [{name: {"ok": "pong"}}]
    # When four long tasks fill its pool (two run, two wait)
    for i in range(4):
        e2e.send("block", f"b{i}", 5)
    wait_for(lambda: len(e2e.lines_starting("start ")) >= 2, 10, "two long tasks to start")
    # Then it still answers every ping within a second
    for _ in range(3):
        assert ping(e2e, name) == [{name: {"ok": "pong"}}]
    assert len(e2e.lines_starting("done ")) == 0, "the long tasks ended too soon for this test"
    worker.kill()
