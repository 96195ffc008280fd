"""Dead letters and administration from Python, on both stores: the Admin API without
a Celery app, the transport's delivery property, the failure recorder's edge cases,
and the SQLite schema upgrade that brought the ``attempts`` column."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import TimeLimitExceeded
from kombu import Connection

import tq_celery_ext
from tq_kombu.admin import Admin, UnknownQueue
from tq_kombu.errors import ConfigurationError, MessageNotFound
from tq_kombu.store import open_store
from tq_kombu.store.base import DeadLetter, DeadReason, NewMessage, QueueCounts, State
from tq_kombu.transport import DELIVERY_PROPERTY


def report(day: str) -> None:
    raise ValueError(f"no data for {day}")


@pytest.fixture
def app(store_url: str) -> Iterator[Celery]:
    """An ordinary Celery app on the store, with the extension installed."""
    celery = Celery("dlq_spec", broker=f"tq+{store_url}", set_as_current=False)
    celery.conf.task_routes = {"dlq_spec.report": {"queue": "reports"}}
    celery.task(name="dlq_spec.report")(report)
    tq_celery_ext.install(celery)
    yield celery
    celery.close()


def test_an_admin_without_an_app_finds_every_queue_in_the_store(store_url: str) -> None:
    # Given messages in three queues, one of them dead
    store = open_store(store_url)
    store.enqueue("emails", NewMessage("e1", b"x", 5, task_id="task-e1"))
    store.enqueue("reports", NewMessage("r1", b"x", 10, eta=9e9))
    store.bury_payload("exports", NewMessage("x1", b"x", 5), DeadLetter(DeadReason.FAILED))
    # When an Admin is opened on the URL alone
    with Admin(f"tq+{store_url}") as admin:
        # Then it lists, finds and acts across all of them
        assert [s.queue for s in admin.stats()] == ["emails", "exports", "reports"]
        assert [(m.queue, m.state) for m in admin.messages()] == [
            ("emails", State.READY),
            ("exports", State.DEAD),
            ("reports", State.DELAYED),
        ]
        assert admin.find("task-e1").message_id == "e1"
        assert [m.message_id for m in admin.dead_letters()] == ["x1"]
        assert admin.retry_dead(message_ids=["x1"]) == 1
        assert admin.store.counts("exports") == QueueCounts(ready=1)
        with pytest.raises(UnknownQueue, match="unknown queue 'nowhere'"):
            admin.messages("nowhere")
        with pytest.raises(MessageNotFound):
            admin.find("no-such-id")
    store.close()


def test_a_delivered_message_tells_the_task_where_it_lives_in_the_store(store_url: str) -> None:
    # Given a message published through the tq transport
    with Connection(f"tq+{store_url}") as conn:
        queue = conn.SimpleQueue("inbox")
        queue.put({"hello": "world"}, priority=7)
        store = open_store(store_url)
        [stored] = store.list_messages("inbox", State.READY)
        # When it is consumed
        received = queue.get(timeout=5)
        # Then its properties name its queue, store id, delivery count and first-seen time
        where = received.properties[DELIVERY_PROPERTY]
        assert (where["queue"], where["message_id"], where["delivery_count"]) == (
            "inbox",
            stored.message_id,
            1,
        )
        assert where["first_seen"] == pytest.approx(stored.created_at, abs=0.01)
        received.ack()
        queue.close()
        store.close()


def test_a_task_applied_eagerly_is_not_a_dead_letter(app: Celery) -> None:
    with pytest.raises(ValueError, match="no data"):
        app.tasks["dlq_spec.report"].apply(("monday",), throw=True)
    with Admin.from_app(app) as admin:
        assert admin.dead_letters() == []


def test_a_failure_reported_without_its_request_is_kept_in_the_routed_queue(app: Celery) -> None:
    # Given the failure of a hard time limit, which Celery reports from the worker's
    # main process with the task's arguments but without its request
    task = app.tasks["dlq_spec.report"]
    recorder = app.tq  # type: ignore[attr-defined]
    recorder.on_task_failure(
        sender=task,
        task_id="t-1",
        exception=TimeLimitExceeded(5.0),
        args=("tuesday",),
        kwargs={},
        traceback=None,
    )
    # Then the task is a dead letter in the queue it is routed to, and replays as itself
    with Admin.from_app(app) as admin:
        [dead] = admin.dead_letters("reports")
        assert (dead.task_id, dead.task_name, dead.dead_reason) == ("t-1", task.name, "failed")
        shown = admin.show("t-1")
        assert shown["failure"]["exc_type"] == "TimeLimitExceeded"
        assert shown["message"]["body"][0] == ["tuesday"]
        assert shown["message"]["headers"]["id"] == "t-1"
        assert admin.retry_dead("reports") == 1


def test_the_recorder_stands_aside_when_the_broker_is_not_tq(
    caplog: pytest.LogCaptureFixture,
) -> None:
    celery = Celery("not_tq", broker="memory://", set_as_current=False)
    recorder = tq_celery_ext.install(celery)
    with caplog.at_level(logging.WARNING):
        assert recorder.admin is None
        assert recorder.admin is None
    assert [r.getMessage() for r in caplog.records].count(
        "tq: failed tasks are not kept as dead letters: the broker 'memory://' is not a tq "
        "broker: set broker_url to 'tq+redis://...' or 'tq+sqlite:///...' (after `import "
        "tq_kombu`), or broker_transport = 'tq_kombu.transport:Transport'"
    ) == 1


def test_filters_are_checked_before_anything_is_replayed(store_url: str) -> None:
    with Admin(f"tq+{store_url}", ["q"]) as admin:
        admin.store.bury_payload("q", NewMessage("m", b"x", 5), DeadLetter(DeadReason.FAILED))
        for bad in (
            {"reason": "no-such-reason"},
            {"to_queue": "no-such-queue"},
            {"priority": 256},
            {"message_ids": ["m", "no-such-id"]},
        ):
            with pytest.raises((ConfigurationError, UnknownQueue, MessageNotFound, ValueError)):
                admin.retry_dead("q", **bad)  # type: ignore[arg-type]
        assert admin.store.counts("q") == QueueCounts(dead=1)


def test_a_schema_2_sqlite_database_is_upgraded_and_keeps_its_messages(tmp_path: Path) -> None:
    # Given a database written before dead letters recorded attempts (schema 2)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    store.enqueue("q", NewMessage("kept", b"payload", 5))
    store.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("ALTER TABLE messages DROP COLUMN attempts")
        conn.execute("PRAGMA user_version = 2")
    # When this tq opens it
    upgraded = open_store(url)
    # Then the message is still there and failures record their attempts
    assert upgraded.payload("q", "kept") == b"payload"
    dead = DeadLetter(DeadReason.FAILED, attempts=3)
    assert upgraded.bury_payload("q", NewMessage("kept", b"", 5), dead) == State.READY
    info: Any = upgraded.info("q", "kept")
    assert (info.state, info.attempts) == (State.DEAD, 3)
    upgraded.close()
