"""Fault injection with task dependencies: chains keep their order and lose no link when
workers are killed with -9 and the store restarts (see tests/test_faults.py for the
journal and the workers). Marked slow."""

from __future__ import annotations

import time

import pytest

from .conftest import RedisServer
from .faults import POOLS, Faults
from .workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LINKS = ("a", "b", "c")


def publish_chains(faults: Faults, count: int, seconds: float) -> list[str]:
    """``count`` chains a<i> -> b<i> -> c<i> (each waits on the one before); their labels
    are their task ids."""
    labels = []
    for i in range(count):
        parent = None
        for link in LINKS:
            label = f"{link}{i}"
            depends = {"depends_on": [parent]} if parent else {}
            faults.send("work", label, seconds, task_id=label, **depends)
            labels.append(label)
            parent = label
    return labels


def first(faults: Faults, event: str) -> dict[str, float]:
    seen: dict[str, float] = {}
    for kind, label, _, at in faults.runs():
        if kind == event:
            seen.setdefault(label, float(at))
    return seen


def test_chains_run_in_order_through_kill_9s_and_a_redis_restart(
    redis_owned: RedisServer, make_faults: object
) -> None:
    faults: Faults = make_faults(redis_owned.url, 2)  # type: ignore[operator]
    faults.extra_env = {"TQ_EXTENSION": "1"}
    # Given two workers with the extension (prefork and threads) and 60 chains of three
    faults.worker("w0", *POOLS["prefork"], prefetch=4)
    faults.worker("w1", *POOLS["threads"], prefetch=4)
    labels = publish_chains(faults, 60, 0.05)
    wait_for(lambda: len(faults.done()) >= 20, 60, "the first links to run")
    # When a worker is killed with -9, Redis restarts, and the other worker is killed
    faults.kill("w0")
    faults.worker("r0", *POOLS["solo"], prefetch=4)
    faults.faults.append(time.time())
    redis_owned.stop()
    time.sleep(1.0)  # the length of the outage
    redis_owned.start()
    wait_for(lambda: len(faults.done()) >= 90, 90, "more links to run")
    faults.kill("w1")
    faults.worker("r1", *POOLS["prefork"], prefetch=4)
    # Then every link runs, and no link starts before its parent was done
    faults.wait_all_done(labels, 180)
    faults.assert_nothing_lost_and_no_worker_died(labels)
    done, started = first(faults, "done"), first(faults, "start")
    for i in range(60):
        for parent, child in zip(LINKS, LINKS[1:], strict=False):
            assert started[f"{child}{i}"] >= done[f"{parent}{i}"], f"{child}{i} ran early"
    # And only links a killed worker had started, or that were starting at the restart
    # in a prefork pool (see test_faults.assert_duplicates_only_at_faults), ran twice
    allowed = faults.started_by_killed_workers() | faults.in_flight_at_faults(0.3)
    assert faults.duplicates() <= allowed
