"""Fault injection with real workers: nothing is lost, no worker dies, and a task runs
twice only when a worker was killed while running it (or, in the prefork pool, when the
connection dropped just as a pool process was starting it: see
assert_duplicates_only_at_faults).

The workers, the journal of task runs (the ground truth) and the client are in
tests/faults.py; the fixtures ``redis_owned`` and ``make_faults`` in conftest.py. Marked slow: CI runs them as a separate step (`python -m pytest -m slow`).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tq_kombu.store import open_store
from tq_kombu.store.base import QueueCounts

from .conftest import RedisServer
from .faults import POOLS, Faults, assert_duplicates_only_at_faults, publish
from .workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# -- the store connection goes away -------------------------------------------------


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_client_kill_loops_lose_nothing_and_kill_no_worker(
    redis_owned: RedisServer, make_faults: object, pool: str
) -> None:
    faults: Faults = make_faults(redis_owned.url, 3)  # type: ignore[operator]
    # (a message the pool had not started when a kill came goes back counted, and ~170
    # kills may hand one out more often than the default max_deliveries of 5 allows:
    # then it is dead as max_deliveries, by design; this test is about losing nothing)
    faults.extra_env = {"TQ_MAX_DELIVERIES": "1000"}
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
