"""``tq+memory://``: the reference store as a broker for users' own unit tests, with a
Celery worker running in the test process (``celery.contrib.testing.worker``)."""

from __future__ import annotations

import threading
import uuid

from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Connection, Consumer, Producer, Queue

import tq_kombu  # noqa: F401  (registers tq+)
from tq_kombu import Priority
from tq_kombu.store import open_store


def test_kombu_publishes_and_consumes_through_a_memory_store() -> None:
    url = f"tq+memory://{uuid.uuid4().hex}"
    queue = Queue("jobs", routing_key="jobs")
    got: list[object] = []
    with Connection(url) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel, routing_key="jobs")
        for body, priority in (("low", Priority.LOW), ("urgent", Priority.URGENT)):
            producer.publish(body, priority=priority, serializer="json")
        with Consumer(conn.channel(), [queue], callbacks=[lambda b, m: (got.append(b), m.ack())]):
            while len(got) < 2:
                conn.drain_events(timeout=5)
    # the most urgent first, and nothing left behind
    assert got == ["urgent", "low"]
    assert open_store(url[3:]).counts("jobs").ready == 0


def test_a_celery_worker_in_the_test_process_runs_tasks_from_a_memory_store() -> None:
    app = Celery("unit", broker=f"tq+memory://{uuid.uuid4().hex}", backend="cache+memory://")
    app.conf.update(worker_hijack_root_logger=False, task_default_queue="unit")
    ran: list[str] = []
    done = threading.Event()

    @app.task(name="unit.record")
    def record(label: str) -> str:
        ran.append(label)
        done.set()
        return label

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result = record.delay("hello")
        assert result.get(timeout=10) == "hello"
    assert ran == ["hello"]
