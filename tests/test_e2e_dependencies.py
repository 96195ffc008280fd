"""Task dependencies end to end: real `celery -A tests.deps_app worker` processes (a
prefork worker with 2 children and a solo one) on SQLite and Redis, fed by an ordinary
Celery client, with a journal of task runs kept apart from the broker.

The workers start once per store; each test uses labels of its own, and the tests
that count stored messages publish to a queue no worker consumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tq_celery_ext
from tq_kombu import DependencyError, bulk
from tq_kombu.admin import Admin
from tq_kombu.store.model import DeadReason, QueueCounts, State

from . import deps_app
from .conftest import RedisServer
from .workers import ROOT, Journal, Worker, run_celery, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.deps_app"
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")
step, fail, fails_once, gate = deps_app.step, deps_app.fail, deps_app.fails_once, deps_app.gate
retries_twice = deps_app.retries_twice


class Deps:
    """One store, its two workers, the journal, and the client publishing to them."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
        }
        self.workers: list[Worker] = []
        deps_app.app.close()
        deps_app.app.amqp._producer_pool = None
        deps_app.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        self.admin = Admin.from_app(deps_app.app)

    def start(self) -> None:
        for name, pool in (
            ("prefork", ("--pool", "prefork", "-c", "2")),
            ("solo", ("--pool", "solo")),
        ):
            worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
            self.workers.append(worker)
            worker.start("-n", f"{name}@%h", "-Q", "deps", *pool, *FAST)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.admin.close()
        deps_app.app.close()

    # -- the journal -----------------------------------------------------------
    def events(self, prefix: str) -> list[tuple[str, str, str, float]]:
        """(event, label, task id, time) of every journal line whose label starts so."""
        found = []
        for line in self.journal.lines():
            event, label, task_id, at = line.split(" ")
            if label.startswith(prefix):
                found.append((event, label, task_id, float(at)))
        return found

    def runs(self, prefix: str) -> dict[str, int]:
        counted: dict[str, int] = {}
        for event, label, _, _ in self.events(prefix):
            if event == "run":
                counted[label] = counted.get(label, 0) + 1
        return counted

    def ran_at(self, prefix: str) -> dict[str, float]:
        return {label: at for event, label, _, at in self.events(prefix) if event == "run"}

    def wait_runs(self, prefix: str, count: int, timeout_seconds: float = 30) -> dict[str, int]:
        wait_for(
            lambda: len(self.runs(prefix)) >= count, timeout_seconds, f"{count} runs of {prefix}*"
        )
        return self.runs(prefix)

    def dead(self, task_id: str) -> tuple[str | None, str | None]:
        """The dead reason and detail of a task's message (None, None if not dead)."""
        try:
            info = self.admin.find(task_id)
        except Exception:  # noqa: BLE001 - not stored (yet)
            return None, None
        if info.state != State.DEAD:
            return None, None
        return info.dead_reason, info.dead_detail

    def counts(self, queue: str) -> QueueCounts:
        return self.admin.store.counts(queue)

    def tq(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_celery(APP, self.env, "tq", *args)


STORES = ["sqlite", "redis"]


@pytest.fixture(scope="module", params=STORES)
def deps(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deps]:
    tmp_path = tmp_path_factory.mktemp(f"deps-{request.param}")
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'queue.db'}"
    run = Deps(url, tmp_path)
    try:
        run.start()
        yield run
    finally:
        run.close()
        for worker in run.workers:
            print(f"--- {worker.log}\n{worker.output()[-4000:]}")


def label() -> str:
    return uuid.uuid4().hex[:10]


def idle_queue() -> str:
    """A queue no worker consumes: what is published there stays stored."""
    return f"idle-{uuid.uuid4().hex[:8]}"


# -- shapes -------------------------------------------------------------------------
def test_a_chain_of_three_runs_in_order_each_once(deps: Deps) -> None:
    x = label()
    a = step.delay(f"{x}-a")
    b = step.apply_async((f"{x}-b",), depends_on=[a])
    step.apply_async((f"{x}-c",), depends_on=[b.id])
    assert deps.wait_runs(x, 3) == {f"{x}-a": 1, f"{x}-b": 1, f"{x}-c": 1}
    at = deps.ran_at(x)
    assert at[f"{x}-a"] <= at[f"{x}-b"] <= at[f"{x}-c"]


def test_a_diamond_runs_the_join_once_after_both_branches(deps: Deps) -> None:
    x = label()
    g = tq_celery_ext.graph(deps_app.app)
    g.add("a", step.s(f"{x}-a"))
    g.add("b", step.s(f"{x}-b"), parents=["a"])
    g.add("c", step.s(f"{x}-c"), parents=["a"])
    g.add("d", step.s(f"{x}-d"), parents=["b", "c"])
    g.publish()
    assert deps.wait_runs(x, 4) == {f"{x}-{n}": 1 for n in "abcd"}
    at = deps.ran_at(x)
    assert at[f"{x}-a"] <= min(at[f"{x}-b"], at[f"{x}-c"])
    assert max(at[f"{x}-b"], at[f"{x}-c"]) <= at[f"{x}-d"]


def test_a_child_of_fifty_parents_runs_once_after_all_of_them(deps: Deps) -> None:
    x = label()
    parents = [step.delay(f"{x}-p{i}") for i in range(50)]
    step.apply_async((f"{x}-join",), depends_on=parents)
    runs = deps.wait_runs(x, 51)
    assert set(runs.values()) == {1}
    at = deps.ran_at(x)
    assert at[f"{x}-join"] >= max(at[f"{x}-p{i}"] for i in range(50))


def test_a_parent_finished_before_the_child_is_published_releases_it_at_once(deps: Deps) -> None:
    x = label()
    parent = step.delay(f"{x}-parent")
    deps.wait_runs(x, 1)
    step.apply_async((f"{x}-late",), depends_on=[parent])
    assert deps.wait_runs(x, 2, timeout_seconds=15) == {f"{x}-parent": 1, f"{x}-late": 1}


def test_a_graph_of_a_hundred_nodes_runs_each_after_its_parents(deps: Deps) -> None:
    # ten layers of ten; each node depends on two nodes of the layer above
    x = label()
    g = tq_celery_ext.graph(deps_app.app)
    edges = {}
    for layer in range(10):
        for i in range(10):
            name = f"{layer}.{i}"
            parents = [] if layer == 0 else [f"{layer - 1}.{i}", f"{layer - 1}.{(i + 3) % 10}"]
            edges[name] = parents
            g.add(name, step.s(f"{x}-{name}"), parents=parents)
    g.publish()
    runs = deps.wait_runs(x, 100, timeout_seconds=60)
    assert set(runs.values()) == {1}
    at = deps.ran_at(x)
    for name, parents in edges.items():
        assert all(at[f"{x}-{p}"] <= at[f"{x}-{name}"] for p in parents), name


# -- failures -----------------------------------------------------------------------
def test_a_failure_cascades_three_levels_and_nothing_below_runs(deps: Deps) -> None:
    x = label()
    root = fail.delay(f"{x}-root")
    one = step.apply_async((f"{x}-1",), depends_on=[root])
    two = step.apply_async((f"{x}-2",), depends_on=[one])
    three = step.apply_async((f"{x}-3",), depends_on=[two])
    wait_for(lambda: deps.dead(three.id)[0] is not None, 30, "the third level to go dead")
    for child in (one, two, three):
        reason, _ = deps.dead(child.id)
        assert reason == DeadReason.DEPENDENCY_FAILED
    assert deps.dead(one.id)[1] and root.id in str(deps.dead(one.id)[1])
    assert deps.runs(x) == {}


def test_on_parent_failure_run_releases_the_child_anyway(deps: Deps) -> None:
    x = label()
    root = fail.delay(f"{x}-root")
    step.apply_async((f"{x}-runs",), depends_on=[root], on_parent_failure="run")
    assert deps.wait_runs(x, 1) == {f"{x}-runs": 1}


def test_a_retrying_parent_keeps_its_child_waiting_until_it_succeeds(deps: Deps) -> None:
    x = label()
    parent = retries_twice.delay(f"{x}-parent")
    step.apply_async((f"{x}-child",), depends_on=[parent])
    assert deps.wait_runs(x, 2) == {f"{x}-parent": 1, f"{x}-child": 1}
    retried = [at for event, _, _, at in deps.events(x) if event == "retry"]
    assert len(retried) == 2
    assert deps.ran_at(x)[f"{x}-child"] >= deps.ran_at(x)[f"{x}-parent"] > max(retried)


def test_an_unknown_parent_times_out_and_the_child_goes_dead(deps: Deps) -> None:
    orphan = step.apply_async(
        (label(),), depends_on=[f"never-{uuid.uuid4()}"], dependency_timeout_seconds=1
    )
    wait_for(lambda: deps.dead(orphan.id)[0] is not None, 20, "the orphan to time out")
    assert deps.dead(orphan.id)[0] == DeadReason.DEPENDENCY_TIMEOUT


def test_replaying_a_dead_parent_that_then_succeeds_releases_its_children(deps: Deps) -> None:
    x = label()
    parent = fails_once.delay(f"{x}-parent")
    child = step.apply_async((f"{x}-child",), depends_on=[parent])
    wait_for(lambda: deps.dead(child.id)[0] is not None, 30, "the child to go dead")
    result = deps.tq("dlq", "retry", parent.id)
    assert result.returncode == 0, result.stderr
    assert deps.wait_runs(x, 2) == {f"{x}-parent": 1, f"{x}-child": 1}


# -- atomicity and concurrency ------------------------------------------------------
def test_a_cycle_is_refused_and_nothing_is_stored(deps: Deps) -> None:
    queue = idle_queue()
    g = tq_celery_ext.graph(deps_app.app)
    g.add("a", step.s("a").set(queue=queue), parents=["c"])
    g.add("b", step.s("b").set(queue=queue), parents=["a"])
    g.add("c", step.s("c").set(queue=queue), parents=["b"])
    with pytest.raises(DependencyError, match="cycle"):
        g.publish()
    assert deps.counts(queue) == QueueCounts()


def test_a_bulk_publish_is_stored_in_one_step(deps: Deps) -> None:
    queue = idle_queue()
    with bulk(deps_app.app):
        parent = step.apply_async(("p",), queue=queue)
        for i in range(20):
            step.apply_async((str(i),), queue=queue, depends_on=[parent])
        assert deps.counts(queue) == QueueCounts()
    assert deps.counts(queue) == QueueCounts(ready=1, waiting=20)


PUBLISHER = """
import sys
import tq_celery_ext, tq_kombu
from tests import deps_app
queue, nodes = sys.argv[1], int(sys.argv[2])
g = tq_celery_ext.graph(deps_app.app)
for i in range(nodes):
    g.add(str(i), deps_app.step.s(str(i)).set(queue=queue), parents=[str(i // 2)] if i else [])
with tq_kombu.bulk(deps_app.app):  # the graph's own bulk joins this one
    g.publish()
    print("storing", flush=True)  # the one store write follows at the end of this block
print("stored", flush=True)
"""


@pytest.mark.parametrize(
    "delay_seconds",
    [
        0.0,
        0.2,
        pytest.param(0.02, marks=pytest.mark.slow),
        pytest.param(1.0, marks=pytest.mark.slow),
    ],
)
def test_a_publisher_killed_while_storing_a_graph_stores_all_or_nothing(
    deps: Deps, delay_seconds: float
) -> None:
    # Given a publisher about to store a graph of 1,000 nodes in one step
    queue, nodes = idle_queue(), 1000
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, queue, str(nodes)],
        cwd=ROOT,
        env=deps.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert publisher.stdout is not None
        assert publisher.stdout.readline().strip() == "storing"
        # When it is killed (-9) that long into the write (where the kill lands, not a sync)
        time.sleep(delay_seconds)
        publisher.send_signal(signal.SIGKILL)
    finally:
        publisher.wait(timeout=30)
    # Then the store holds the whole graph or none of it
    counts = deps.counts(queue)
    stored = counts.ready + counts.waiting
    print(f"killed {delay_seconds} s into the write: {stored} of {nodes} nodes stored")
    assert stored in (0, nodes), f"{stored} of {nodes} nodes stored"
    if stored:
        assert (counts.ready, counts.waiting) == (1, nodes - 1)


def test_two_hundred_children_are_released_exactly_once_by_concurrent_parents(
    deps: Deps,
) -> None:
    # Given three parents finishing at the same instant on both workers (3 processes)
    x = label()
    until = time.time() + 3.0
    parents = [gate.delay(f"{x}-parent{i}", until) for i in range(3)]
    # and 200 children each waiting on all three
    with bulk(deps_app.app):
        for i in range(200):
            step.apply_async((f"{x}-child{i}",), depends_on=parents)
    runs = deps.wait_runs(x, 203, timeout_seconds=60)
    # Then every child ran exactly once, and none before the last parent
    assert runs == {
        **{f"{x}-parent{i}": 1 for i in range(3)},
        **{f"{x}-child{i}": 1 for i in range(200)},
    }
    at = deps.ran_at(x)
    last_parent = max(at[f"{x}-parent{i}"] for i in range(3))
    assert min(at[f"{x}-child{i}"] for i in range(200)) >= last_parent
    assert deps.counts("deps").waiting == 0


# -- administration -------------------------------------------------------------------
def test_the_cli_shows_the_graph_around_a_waiting_task_and_cancels_with_cascade(
    deps: Deps,
) -> None:
    queue = idle_queue()
    g = tq_celery_ext.graph(deps_app.app)
    g.add("a", step.s("a").set(queue=queue))
    g.add("b", step.s("b").set(queue=queue), parents=["a"])
    g.add("c", step.s("c").set(queue=queue), parents=["b"])
    ids = {name: result.id for name, result in g.publish().items()}

    shown = deps.tq("show", ids["b"])
    assert shown.returncode == 0, shown.stderr
    assert "parents" in shown.stdout and ids["a"] in shown.stdout and ids["c"] in shown.stdout

    graph = deps.tq("graph", ids["b"], "--dot")
    assert graph.returncode == 0, graph.stderr
    assert f'"{ids["a"]}" -> "{ids["b"]}"' in graph.stdout
    assert f'"{ids["b"]}" -> "{ids["c"]}"' in graph.stdout
    text = deps.tq("graph", ids["a"])
    assert text.returncode == 0 and f"-> {ids['b']}" in text.stdout

    waiting = deps.tq("ls", queue, "--state", "waiting", "--json")
    assert waiting.returncode == 0, waiting.stderr
    assert ids["b"] in waiting.stdout and ids["c"] in waiting.stdout
    stats = deps.tq("stats", "-Q", queue, "--json")
    assert '"waiting": 2' in stats.stdout

    cancelled = deps.tq("cancel", ids["b"], "--cascade")
    assert cancelled.returncode == 0, cancelled.stderr
    assert deps.counts(queue) == QueueCounts(ready=1)


def test_cancel_without_cascade_sends_the_dependents_dead(deps: Deps) -> None:
    queue = idle_queue()
    parent = step.apply_async(("p",), queue=queue)
    child = step.apply_async(("c",), queue=queue, depends_on=[parent])
    result = deps.tq("cancel", parent.id)
    assert result.returncode == 0, result.stderr
    assert deps.dead(child.id)[0] == DeadReason.DEPENDENCY_FAILED
