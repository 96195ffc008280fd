"""Administering dependencies through Admin, on the memory store: the graph around a
task, waiting counts and lists, cancelling with and without cascade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

import tq_celery_ext
from tq_kombu.admin import Admin
from tq_kombu.errors import MessageNotFound
from tq_kombu.store.model import DeadReason, State

QUEUE = "unit"


@pytest.fixture
def app() -> Iterator[Celery]:
    name = uuid.uuid4().hex
    app = Celery(name, broker=f"tq+memory://{name}")
    app.conf.update(task_default_queue=QUEUE)
    tq_celery_ext.install(app)

    @app.task(name=f"{name}.step", shared=False)
    def step(label: str) -> str:
        return label

    yield app
    app.close()


@pytest.fixture
def admin(app: Celery) -> Iterator[Admin]:
    with Admin.from_app(app) as admin:
        yield admin


def chain_of_three(app: Celery) -> dict[str, str]:
    """a -> b -> c, published as one graph; task ids by name."""
    step = app.tasks[f"{app.main}.step"]
    g = tq_celery_ext.graph(app)
    g.add("a", step.s("a")).add("b", step.s("b"), parents=["a"]).add("c", step.s("c"), ["b"])
    return {name: result.id for name, result in g.publish().items()}


def test_the_summary_of_a_task_lists_its_parents_and_children_with_states(app, admin):
    ids = chain_of_three(app)
    summary = admin.dependency_summary(ids["b"])
    assert summary is not None
    assert summary["outcome"] == "pending"
    [parent] = summary["parents"]
    [child] = summary["children"]
    assert (parent["task_id"], parent["outcome"], parent["state"]) == (ids["a"], "pending", "ready")
    assert (child["task_id"], child["state"], child["queue"]) == (ids["c"], "waiting", QUEUE)
    assert parent["task_name"] == f"{app.main}.step"


def test_the_graph_around_a_task_follows_edges_up_and_down_to_the_depth(app, admin):
    ids = chain_of_three(app)
    near = admin.dependency_graph(ids["a"], depth=1)
    assert set(near.nodes) == {ids["a"], ids["b"]}
    assert near.edges == [(ids["a"], ids["b"])]
    whole = admin.dependency_graph(ids["b"], depth=5)
    assert list(whole.nodes) == [ids["a"], ids["b"], ids["c"]]  # parents first
    assert sorted(whole.edges) == sorted([(ids["a"], ids["b"]), (ids["b"], ids["c"])])
    assert whole.as_dict()["root"] == ids["b"]


def test_the_graph_of_an_unknown_task_is_not_found(admin):
    with pytest.raises(MessageNotFound):
        admin.dependency_graph("no-such-task")


def test_waiting_messages_are_counted_and_listed(app, admin):
    ids = chain_of_three(app)
    [stats] = admin.stats(QUEUE)
    assert (stats.ready, stats.waiting) == (1, 2)
    listed = {info.task_id for info in admin.messages(QUEUE, state="waiting")}
    assert listed == {ids["b"], ids["c"]}


def test_cancel_with_cascade_cancels_the_task_and_every_dependent(app, admin):
    ids = chain_of_three(app)
    cancelled = admin.cancel_cascade(None, ids["b"])
    # dependents first, the task last; the parent is untouched
    assert [info.task_id for info in cancelled] == [ids["c"], ids["b"]]
    counts = admin.store.counts(QUEUE)
    assert (counts.ready, counts.waiting, counts.dead) == (1, 0, 0)


def test_cancel_without_cascade_fails_the_dependents_as_the_store_does(app, admin):
    ids = chain_of_three(app)
    admin.cancel(None, ids["b"])
    dead = {info.task_id: info for info in admin.dead_letters(QUEUE)}
    assert set(dead) == {ids["c"]}
    assert dead[ids["c"]].dead_reason == DeadReason.DEPENDENCY_FAILED
    assert admin.store.counts(QUEUE).waiting == 0


def test_cancel_with_cascade_refuses_a_message_that_is_not_queued(app, admin):
    ids = chain_of_three(app)
    admin.cancel(None, ids["c"])
    with pytest.raises(MessageNotFound):
        admin.cancel_cascade(None, ids["c"])
    assert admin.store.counts(QUEUE).waiting == 1
    assert admin.find(ids["b"]).state == State.WAITING
