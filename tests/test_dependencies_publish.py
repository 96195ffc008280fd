"""Publishing with dependencies, graphs and bulk publishes, in the test process, on the
memory store: what is stored, and bad input refused before anything is stored."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery, group
from celery.result import AsyncResult, GroupResult

import tq_celery_ext
import tq_kombu
from tq_kombu import DependencyError
from tq_kombu.admin import Admin
from tq_kombu.store import Store, open_store
from tq_kombu.store.contract.checks import MAX_PARENTS
from tq_kombu.store.model import QueueCounts, State

QUEUE = "unit"


def task(app: Celery, short: str) -> str:
    """A task name of this app only (the before_task_publish signal names no app)."""
    return f"{app.main}.{short}"


@pytest.fixture
def app() -> Iterator[Celery]:
    name = uuid.uuid4().hex
    app = Celery(name, broker=f"tq+memory://{name}")
    app.conf.update(task_default_queue=QUEUE, task_routes={task(app, "mail"): {"queue": "mails"}})
    tq_celery_ext.install(app)

    @app.task(name=task(app, "step"), shared=False)
    def step(label: str) -> str:
        return label

    @app.task(name=task(app, "mail"), shared=False)
    def mail(to: str) -> str:
        return to

    @app.task(name=task(app, "patient"), shared=False, tq_dependency_timeout_seconds=42)
    def patient() -> None:
        return None

    yield app
    app.close()


@pytest.fixture
def store(app: Celery) -> Store:
    return open_store(app.conf.broker_url[3:])


def waiting(store: Store, queue: str = QUEUE) -> list[str]:
    return [info.task_id for info in store.list_messages(queue, State.WAITING, 0, 1000)]


def test_a_child_of_an_async_result_and_a_task_id_is_stored_waiting_on_both(app, store):
    step = app.tasks[task(app, "step")]
    first = step.delay("a")
    child = step.apply_async(("c",), depends_on=[first, "some-task-id"])
    # Then the child waits on both parents; the parent is ready
    assert waiting(store) == [child.id]
    info = store.dependency_info(child.id)
    assert info is not None
    assert sorted(link.task_id for link in info.parents) == sorted([first.id, "some-task-id"])
    assert store.counts(QUEUE).ready == 1


def test_signature_set_depends_on_and_policy_reach_the_store(app, store):
    step = app.tasks[task(app, "step")]
    parent = step.delay("p")
    child = step.s("c").set(depends_on=[parent], on_parent_failure="run").apply_async()
    info = store.dependency_info(child.id)
    assert info is not None and info.on_parent_failure == "run"


def test_the_dependency_timeout_comes_from_the_call_the_task_or_the_app(app, store):
    step, patient = app.tasks[task(app, "step")], app.tasks[task(app, "patient")]
    app.conf.tq_dependency_timeout_seconds = 600
    now = time.time()
    given = step.apply_async(("x",), depends_on=["p"], dependency_timeout_seconds=5)
    by_task = patient.apply_async(depends_on=["p"])
    by_app = step.apply_async(("y",), depends_on=["p"])
    deadlines = {}
    for result in (given, by_task, by_app):
        info = store.dependency_info(result.id)
        assert info is not None and info.dependency_deadline is not None
        deadlines[result.id] = info.dependency_deadline - now
    assert deadlines[given.id] == pytest.approx(5, abs=2)
    assert deadlines[by_task.id] == pytest.approx(42, abs=2)
    assert deadlines[by_app.id] == pytest.approx(600, abs=2)


def test_the_dependency_headers_are_sealed_in_the_stored_message(app):
    step = app.tasks[task(app, "step")]
    child = step.apply_async(("c",), depends_on=["parent-1"], on_parent_failure="run")
    with Admin.from_app(app) as admin:
        shown = admin.show(child.id)
    headers = shown["message"]["headers"]
    assert headers["tq_depends_on"] == ["parent-1"]
    assert headers["tq_on_parent_failure"] == "run"
    assert shown["envelope"]["encrypted"] is True


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"depends_on": [object()]}, "depends_on takes task ids"),
        ({"depends_on": [GroupResult("g", [])]}, "depends_on takes task ids"),
        ({"depends_on": [""]}, "depends_on takes task ids"),
        ({"depends_on": ["me"], "task_id": "me"}, "cannot depend on itself"),
        ({"depends_on": [str(i) for i in range(MAX_PARENTS + 1)]}, "at most"),
        ({"depends_on": ["p"], "on_parent_failure": "ignore"}, "on_parent_failure"),
        ({"depends_on": ["p"], "dependency_timeout_seconds": 0}, "dependency_timeout_seconds"),
        ({"depends_on": ["p"], "dependency_timeout_seconds": "soon"}, "dependency_timeout"),
    ],
)
def test_bad_dependencies_are_refused_at_publish_and_nothing_is_stored(app, store, options, says):
    with pytest.raises(DependencyError, match=says):
        app.tasks[task(app, "step")].apply_async(("x",), **options)
    assert store.counts(QUEUE) == QueueCounts()


def test_an_empty_depends_on_publishes_a_plain_ready_message(app, store):
    result = app.tasks[task(app, "step")].apply_async(("x",), depends_on=[])
    assert store.counts(QUEUE).ready == 1
    assert store.dependency_info(result.id) is None


def test_an_eager_run_records_no_outcome(app, store):
    result = app.tasks[task(app, "step")].apply(("eager",))
    assert result.get() == "eager"
    assert store.dependency_info(result.id) is None


# -- graphs --------------------------------------------------------------------
def test_a_diamond_graph_is_stored_in_one_step_with_its_edges(app, store):
    step = app.tasks[task(app, "step")]
    g = tq_celery_ext.graph(app)
    g.add("d", step.s("d"), parents=["b", "c"])  # any order of adding
    g.add("a", step.s("a"))
    g.add("b", step.s("b"), parents=["a"])
    g.add("c", step.s("c"), parents=["a"])
    results = g.publish()
    assert set(results) == {"a", "b", "c", "d"}
    assert all(isinstance(r, AsyncResult) for r in results.values())
    assert store.counts(QUEUE).ready == 1 and store.counts(QUEUE).waiting == 3
    d = store.dependency_info(results["d"].id)
    assert d is not None
    assert sorted(p.task_id for p in d.parents) == sorted([results["b"].id, results["c"].id])


def test_a_graph_node_keeps_its_own_outside_parents(app, store):
    step = app.tasks[task(app, "step")]
    outside = step.delay("outside")
    g = tq_celery_ext.graph(app)
    g.add("a", step.s("a"))
    g.add("b", step.s("b").set(depends_on=[outside]), parents=["a"])
    results = g.publish()
    info = store.dependency_info(results["b"].id)
    assert info is not None
    assert sorted(p.task_id for p in info.parents) == sorted([outside.id, results["a"].id])


def test_a_cycle_is_refused_naming_it_and_nothing_is_stored(app, store):
    step = app.tasks[task(app, "step")]
    g = tq_celery_ext.graph(app)
    g.add("root", step.s("root"))
    g.add("a", step.s("a"), parents=["root", "c"])
    g.add("b", step.s("b"), parents=["a"])
    g.add("c", step.s("c"), parents=["b"])
    with pytest.raises(
        DependencyError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    ):
        g.publish()
    assert store.counts(QUEUE) == QueueCounts()


def test_a_node_depending_on_itself_is_a_cycle(app):
    g = tq_celery_ext.graph(app).add("a", app.tasks[task(app, "step")].s("a"), parents=["a"])
    with pytest.raises(DependencyError, match="cycle: a -> a"):
        g.publish()


def test_unknown_parents_duplicate_names_and_non_signatures_are_refused(app, store):
    step = app.tasks[task(app, "step")]
    g = tq_celery_ext.graph(app).add("a", step.s("a"), parents=["ghost"])
    with pytest.raises(DependencyError, match="unknown node.*ghost"):
        g.publish()
    with pytest.raises(DependencyError, match="added twice"):
        g.add("a", step.s("again"))
    with pytest.raises(DependencyError, match="one task's signature"):
        g.add("grp", group(step.s("x"), step.s("y")))
    with pytest.raises(DependencyError, match="one task's signature"):
        g.add("task", step)  # type: ignore[arg-type]
    assert store.counts(QUEUE) == QueueCounts()


# -- bulk ----------------------------------------------------------------------
def test_bulk_stores_nothing_until_the_block_ends_then_everything(app, store):
    step, mail = app.tasks[task(app, "step")], app.tasks[task(app, "mail")]
    with tq_kombu.bulk(app):
        for i in range(5):
            step.delay(str(i))
        mail.apply_async(("x@example.com",), priority=tq_kombu.Priority.URGENT)
        step.apply_async(("later",), countdown=3600)
        assert store.counts(QUEUE) == QueueCounts()
        assert store.counts("mails") == QueueCounts()
    # routed, prioritised and delayed exactly as an unbuffered publish
    assert store.counts(QUEUE).ready == 5 and store.counts(QUEUE).delayed == 1
    [urgent] = store.list_messages("mails", State.READY, 0, 10)
    assert urgent.priority == tq_kombu.Priority.URGENT


def test_an_error_inside_bulk_stores_nothing(app, store):
    step = app.tasks[task(app, "step")]
    with pytest.raises(RuntimeError, match="boom"), tq_kombu.bulk(app):
        step.delay("a")
        step.delay("b")
        raise RuntimeError("boom")
    assert store.counts(QUEUE) == QueueCounts()
    step.delay("after")  # the thread publishes normally again
    assert store.counts(QUEUE).ready == 1


def test_bulk_needs_the_tq_broker() -> None:
    other = Celery("other", broker="memory://")
    with pytest.raises(tq_kombu.ConfigurationError, match="needs the tq broker"):
        with tq_kombu.bulk(other):
            pass


def test_a_store_that_fails_the_write_of_a_bulk_raises_and_keeps_nothing(tmp_path) -> None:
    # Given an app on a private Redis that goes away while a bulk is being filled
    from tq_kombu.batch import BatchError

    from .conftest import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        name = uuid.uuid4().hex
        app = Celery(name, broker=f"tq+{server.url}")
        app.conf.update(
            task_default_queue=QUEUE,
            broker_transport_options={"socket_connect_timeout_seconds": 1},
        )

        @app.task(name=task(app, "step"), shared=False)
        def step(label: str) -> str:
            return label

        # When its one store write fails
        with pytest.raises(BatchError, match="none of the 3 messages") as raised:
            with tq_kombu.bulk(app):
                for i in range(3):
                    step.delay(str(i))
                server.stop()
        assert isinstance(raised.value.__cause__, tq_kombu.StoreError)
        # Then, the server back with its data, nothing was stored, and publishing works
        server.start()
        store = open_store(server.url)
        assert store.counts(QUEUE) == QueueCounts()
        step.delay("after")
        assert store.counts(QUEUE).ready == 1
        store.close()
        app.close()
    finally:
        server.stop()
