"""Cluster-wide limits end to end: real `celery -A tests.limits_run_app worker` processes
on each store, fed by an ordinary Celery client, with a journal of task starts and ends
kept apart from the broker.

Workers per store (started once): two prefork workers with 2 children each on queue
``limits`` (4 slots between them; the last test kills one), a prefork ``-c 1``
worker on ``solo`` and a prefork ``-c 2`` worker on ``fair``. Every test uses labels
of its own.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tq_celery_ext
from tq_kombu import bulk
from tq_kombu.admin import Admin

from . import limits_run_app as lim
from .workers import Journal, Worker, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.limits_run_app"
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")
LEASE_SECONDS = 3.0
#: Stores with limits enforced.
STORES = ["sqlite", "redis"]
#: How much later a task may start than its message is handed out (prefork dispatch).
DISPATCH_JITTER_SECONDS = 0.1


class Cluster:
    """One store, its workers, the journal, and the client publishing to them."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_JOURNAL": str(self.journal.path),
            "TQ_LEASE_SECONDS": str(LEASE_SECONDS),
            "PYTHONWARNINGS": "ignore",
        }
        self.workers: dict[str, Worker] = {}
        lim.app.close()
        lim.app.amqp._producer_pool = None
        lim.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        self.admin = Admin.from_app(lim.app)
        self.control = tq_celery_ext.limits_of(lim.app)

    def start(self) -> None:
        for name, queue, pool in (
            ("one", "limits", ("--pool", "prefork", "-c", "2")),
            ("two", "limits", ("--pool", "prefork", "-c", "2")),
            ("solo", "solo", ("--pool", "prefork", "-c", "1")),
            ("fair", "fair", ("--pool", "prefork", "-c", "2")),
        ):
            worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
            self.workers[name] = worker
            worker.start("-n", f"{name}@%h", "-Q", queue, *pool, *FAST)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.control.close()
        self.admin.close()
        lim.app.close()

    def events(self, prefix: str, event: str = "start") -> list[tuple[str, float]]:
        """(label, time) of the journal's ``event`` lines whose label starts so, by time."""
        found = []
        for line in self.journal.lines():
            kind, label, _, at = line.split(" ")
            if kind == event and label.startswith(prefix):
                found.append((label, float(at)))
        return sorted(found, key=lambda item: item[1])

    def wait_events(self, prefix: str, count: int, timeout: float, event: str = "start") -> None:
        wait_for(
            lambda: len(self.events(prefix, event)) >= count,
            timeout,
            f"{count} {event} of {prefix} (log: {self.tmp_path})",
        )


@pytest.fixture(scope="module", params=STORES)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp_path = tmp_path_factory.mktemp(f"limits-{request.param}")
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'queue.db'}"
    current = Cluster(url, tmp_path)
    try:
        current.start()
        yield current
    finally:
        current.close()
        for worker in current.workers.values():
            print(f"--- {worker.log}\n{worker.output()[-2000:]}")


def label(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def most_in_window(times: list[float], width: float) -> int:
    """The most of ``times`` in any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= width:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_overlapping(cluster: Cluster, prefix: str) -> int:
    """The most runs of ``prefix`` going on at once (from their start and end lines)."""
    moments = [(at, 1) for _, at in cluster.events(prefix, "start")]
    moments += [(at, -1) for _, at in cluster.events(prefix, "end")]
    running = most = 0
    for _, step in sorted(moments):  # an end sorts before a start at the same time
        running += step
        most = max(most, running)
    return most


def test_the_workers_store_their_apps_limits(cluster: Cluster) -> None:
    defined = {d.name: d for d in cluster.admin.limits()}
    assert defined["shared_rate"].interval_us == 100_000
    assert defined["shared_rate"].tolerance_us == 0
    assert defined["pair"].slots == 2
    assert defined["@lim.rare"].interval_us == 30_000_000
    assert {d.origin for d in defined.values()} == {"settings"}


@pytest.mark.slow
def test_a_rate_shared_by_two_task_types_holds_over_two_workers(cluster: Cluster) -> None:
    # Given a limit of 10/s shared by two task types, and 100 of them queued
    prefix = label("rate")
    with bulk(lim.app):
        for n in range(50):
            lim.call_a.delay(f"{prefix}-a{n}")
            lim.call_b.delay(f"{prefix}-b{n}")
    # When the two workers (4 slots) run them
    cluster.wait_events(prefix, 100, timeout=40)
    starts = [at for _, at in cluster.events(prefix)]
    # Then they took at least 9.9 s, and no second held more than 10 starts (windows
    # shortened by the dispatch jitter between the store's hand-out and the task start)
    assert starts[-1] - starts[0] >= 9.9 - DISPATCH_JITTER_SECONDS
    assert most_in_window(starts, 1.0 - DISPATCH_JITTER_SECONDS) <= 10
    assert {name[len(prefix) + 1] for name, _ in cluster.events(prefix)} == {"a", "b"}


def test_a_concurrency_of_two_holds_over_four_worker_slots(cluster: Cluster) -> None:
    # Given a concurrency limit of 2 and 8 tasks of 0.4 s for 4 free worker slots
    prefix = label("pair")
    for n in range(8):
        lim.paired.delay(f"{prefix}-{n}", 0.4)
    # When they have all run
    cluster.wait_events(prefix, 8, timeout=30, event="end")
    # Then never more than 2 ran at once, and 2 did
    assert most_overlapping(cluster, prefix) == 2
    starts = [at for _, at in cluster.events(prefix)]
    assert starts[-1] - starts[0] >= 3 * 0.4
    # and both slots free once the last two are acknowledged (just after their end line)

    def running() -> int:
        status = cluster.control.status("pair")
        assert status is not None
        return sum(k.running for k in status.keys)

    wait_for(lambda: running() == 0, 10, "the slots of pair to free")


def test_keys_take_turns_under_a_shared_concurrency(cluster: Cluster) -> None:
    # Given tenant A's 500 tasks queued before tenant B's 5, keyed by tenant
    prefix = label("fair")
    with bulk(lim.app):
        for n in range(500):
            lim.tenant_job.apply_async(("A", f"{prefix}-A{n:03}", 0.02), queue="fair")
        for n in range(5):
            lim.tenant_job.apply_async(("B", f"{prefix}-B{n}", 0.02), queue="fair")
    # When a worker with 2 slots runs them
    cluster.wait_events(f"{prefix}-B", 5, timeout=30)
    starts = cluster.events(prefix)
    cluster.admin.purge("fair")
    # Then B's 5 all started before A's 20th
    a_starts = [at for name, at in starts if name.startswith(f"{prefix}-A")]
    b_starts = [at for name, at in starts if name.startswith(f"{prefix}-B")]
    assert len(b_starts) == 5
    assert len(a_starts) < 20 or max(b_starts) < a_starts[19]


def test_limits_changed_at_run_time_are_obeyed_within_a_second(cluster: Cluster) -> None:
    # Given 3 tasks of 1.5 s under "dial_slots" (1 at once): one runs, two wait
    prefix = label("dial")
    for n in range(3):
        lim.dial_work.delay(f"{prefix}-{n}", 1.5)
    cluster.wait_events(prefix, 1, timeout=20)
    status = cluster.control.status("dial_slots")
    assert status is not None and [(k.waiting, k.running) for k in status.keys] == [(2, 1)]
    try:
        # When an operator allows 3 at once, and lowers "dial" from 100/s to 1/m
        changed_at = time.time()
        cluster.control.set_concurrency("dial_slots", 3)
        cluster.control.set_rate("dial", "1/m")
        # Then the two waiting tasks start within a second
        cluster.wait_events(prefix, 3, timeout=10)
        assert cluster.events(prefix)[-1][1] - changed_at <= 1.0
        # and of 3 tasks under "dial" one starts now, the others wait a minute
        for n in range(3):
            lim.dialed.delay(f"{prefix}-rate{n}")
        cluster.wait_events(f"{prefix}-rate", 1, timeout=10)
        status = cluster.control.status("dial")
        assert status is not None and sum(k.waiting for k in status.keys) == 2
        cluster.wait_events(prefix, 3, timeout=10, event="end")
        assert len(cluster.events(f"{prefix}-rate")) == 1
        origins = {d.name: d.origin for d in cluster.control.all()}
        assert (origins["dial"], origins["dial_slots"]) == ("runtime", "runtime")
    finally:
        assert cluster.control.remove("dial") and cluster.control.remove("dial_slots")
        cluster.admin.purge("limits")


def test_a_task_held_by_its_rate_holds_no_worker_slot(cluster: Cluster) -> None:
    # Given on a -c 1 worker a task limited to 1/30s that has just run once, a second
    # one held back for 30 s, then an unlimited task
    prefix = label("rare")
    lim.rare.apply_async((f"{prefix}-first",), queue="solo")
    cluster.wait_events(f"{prefix}-first", 1, timeout=20)
    lim.rare.apply_async((f"{prefix}-second",), queue="solo")
    lim.plain.apply_async((f"{prefix}-plain",), queue="solo")
    # When the worker goes on
    cluster.wait_events(f"{prefix}-plain", 1, timeout=10)
    # Then the unlimited task ran meanwhile, and the limited one still waits
    assert cluster.events(f"{prefix}-second") == []
    status = cluster.control.status("@lim.rare")
    assert status is not None and sum(k.waiting for k in status.keys) == 1
    cluster.admin.purge("solo")


# (last: it kills a worker)
def test_a_slot_held_by_a_killed_worker_frees_when_its_lease_expires(cluster: Cluster) -> None:
    # Given a task holding the one slot of "single" on a worker that is then killed -9
    prefix = label("single")
    lim.single.delay(f"{prefix}-held", 120.0)
    cluster.wait_events(f"{prefix}-held", 1, timeout=20)
    lim.single.delay(f"{prefix}-next", 0.0)
    status = cluster.control.status("single")
    assert status is not None and [(k.waiting, k.running) for k in status.keys] == [(1, 1)]
    (holder,) = {line.split(" ")[2] for line in cluster.journal.lines() if f"{prefix}-held" in line}
    cluster.workers[holder].kill()
    killed_at = time.time()
    # When its lease expires (nobody renews it), the other worker fetching
    cluster.wait_events(f"{prefix}-next", 1, timeout=LEASE_SECONDS + 10)
    # Then the slot freed within the lease (plus a fetch wait): the waiting task ran,
    # and the held one is handed out again (it returns at once)
    ((_, started),) = cluster.events(f"{prefix}-next")
    assert started - killed_at <= LEASE_SECONDS + 2.0
    cluster.wait_events(f"{prefix}-held", 2, timeout=10)
