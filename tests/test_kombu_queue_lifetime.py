"""Queue lifetime, message TTL and redelivery as kombu users see them, on both stores:
real kombu Connection/Consumer/Producer over tq. Expiries are a fraction of a second
to a few seconds; every wait is polled with a deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

import tq_kombu  # noqa: F401  (registers tq+)
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import DeadReason, QueueCounts, QueueLifetime, State

from .workers import wait_for

OPTIONS = {"lease_seconds": 2, "queue_sweep_interval_seconds": 0.1}
FANOUT = Exchange("broadcast", type="fanout")


@pytest.fixture
def connection(store_url: str) -> Iterator[Connection]:
    with Connection(f"tq+{store_url}", transport_options=OPTIONS) as conn:
        yield conn


@pytest.fixture
def inspector(store: Store) -> Store:
    return store


def publish(conn: Connection, body: Any, **options: Any) -> None:
    Producer(conn.channel()).publish(body, serializer="json", **options)


def test_an_expiring_queue_vanishes_with_bindings_and_messages_once_its_consumer_stops(
    connection: Connection, inspector: Store
) -> None:
    # Given an auto-delete queue with x-expires=2 s bound to a fanout, consumed
    queue = Queue("listener", FANOUT, auto_delete=True, expires=2)
    got: list[Any] = []
    consumer = Consumer(connection.channel(), [queue], callbacks=[lambda b, m: got.append(b)])
    with consumer:
        publish(connection, "first", exchange=FANOUT)
        connection.drain_events(timeout=5)
        # While consumed it outlives its expiry
        time.sleep(2.5)  # longer than x-expires: the consumer must keep it alive
        assert inspector.lifetime("listener") == QueueLifetime(expires_seconds=2)
        assert [b.queue for b in inspector.bindings("broadcast")] == ["listener"]
    # When its consumer stops, and broadcasts keep coming
    publish(connection, "unheard", exchange=FANOUT)
    assert inspector.counts("listener").ready == 1
    # Then the queue goes with its binding and messages
    wait_for(lambda: inspector.lifetime("listener") is None, 10, "the queue to expire")
    assert inspector.counts("listener") == QueueCounts()
    assert inspector.bindings("broadcast") == []
    publish(connection, "after", exchange=FANOUT)
    assert inspector.counts("listener") == QueueCounts()
    assert got == ["first"]


def test_an_auto_delete_queue_without_x_expires_gets_the_store_side_expiry(
    store_url: str, inspector: Store
) -> None:
    options = {**OPTIONS, "auto_delete_expires_seconds": 0.5}
    with Connection(f"tq+{store_url}", transport_options=options) as conn:
        Queue("temporary", FANOUT, auto_delete=True)(conn.channel()).declare()
        assert inspector.lifetime("temporary") == QueueLifetime(expires_seconds=0.5)
        publish(conn, "x", exchange=FANOUT)
        assert inspector.counts("temporary").ready == 1
        wait_for(lambda: inspector.lifetime("temporary") is None, 10, "the queue to expire")
        assert inspector.counts("temporary") == QueueCounts()


def test_a_durable_queue_never_expires(connection: Connection, inspector: Store) -> None:
    Queue("tasks", FANOUT)(connection.channel()).declare()
    publish(connection, "x", exchange=FANOUT)
    assert inspector.lifetime("tasks") is None
    assert inspector.counts("tasks").ready == 1
    assert inspector.expire_queues() == []


def test_a_task_message_past_its_expiration_is_kept_dead_as_expired(
    connection: Connection, inspector: Store
) -> None:
    queue = Queue("work", routing_key="work")
    publish(connection, "stale", routing_key="work", declare=[queue], expiration=0.2)
    publish(connection, "fresh", routing_key="work", declare=[queue])
    time.sleep(0.3)  # the expiration must pass
    got: list[Any] = []
    with Consumer(connection.channel(), [queue], callbacks=[lambda b, m: (got.append(b), m.ack())]):
        connection.drain_events(timeout=5)
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.5)
    assert got == ["fresh"]
    (dead,) = inspector.list_messages("work", State.DEAD)
    assert dead.dead_reason == DeadReason.EXPIRED


def test_a_queue_message_ttl_drops_old_messages_of_an_expiring_queue(
    connection: Connection, inspector: Store
) -> None:
    queue = Queue("events", FANOUT, auto_delete=True, expires=30, message_ttl=0.2)
    queue(connection.channel()).declare()
    publish(connection, "old", exchange=FANOUT)
    time.sleep(0.3)  # the queue's message ttl must pass
    publish(connection, "new", exchange=FANOUT)
    got: list[Any] = []
    consumer = Consumer(
        connection.channel(), [queue], callbacks=[lambda b, m: got.append(b)], no_ack=True
    )
    with consumer:
        connection.drain_events(timeout=5)
    assert got == ["new"]
    assert inspector.counts("events") == QueueCounts()


def test_a_redelivered_message_says_so_where_celery_reads_it(connection: Connection) -> None:
    queue = Queue("again", routing_key="again")
    publish(connection, "m", routing_key="again", declare=[queue])
    seen: list[tuple[Any, Any]] = []

    def on_message(body: Any, message: Any) -> None:
        seen.append(
            (message.delivery_info.get("redelivered"), message.properties.get("redelivered"))
        )
        if len(seen) == 1:
            message.reject(requeue=True)
        else:
            message.ack()

    with Consumer(connection.channel(), [queue], callbacks=[on_message]):
        connection.drain_events(timeout=5)
        connection.drain_events(timeout=5)
    assert [info for info, _ in seen] == [False, True]


def test_a_store_opened_elsewhere_sees_the_declared_lifetime(
    connection: Connection, store_url: str
) -> None:
    Queue("pidbox", FANOUT, auto_delete=True, expires=10, message_ttl=300)(
        connection.channel()
    ).declare()
    other = open_store(store_url)
    try:
        assert other.lifetime("pidbox") == QueueLifetime(10, 300)
    finally:
        other.close()
