"""What kombu's own callers (pidbox, events, Celery's control) expect of a transport's
consumers, on both stores: no_ack means the message is gone once handed over, and
one ``drain_events`` call hands over one message (``Mailbox._collect(limit=n)``
calls it n times)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

import tq_kombu  # noqa: F401  (registers tq+)
from tq_kombu.store.base import QueueCounts

from .kombu_helpers import counts, publish

QUEUE = Queue("semantics", routing_key="semantics")


@pytest.fixture
def connection(store_url: str) -> Iterator[Connection]:
    with Connection(f"tq+{store_url}", transport_options={"lease_seconds": 1}) as conn:
        yield conn


def test_each_drain_events_call_hands_over_one_message(connection: Connection) -> None:
    # Given two messages waiting
    publish(connection, QUEUE, {"n": 0}, {"n": 1})
    got: list[Any] = []
    consumer = Consumer(
        connection.channel(), [QUEUE], callbacks=[lambda body, m: got.append(body)], no_ack=True
    )
    with consumer:
        # When drain_events is called once
        connection.drain_events(timeout=5)
        # Then one message was handed over, and the next call returns the other at once
        assert got == [{"n": 0}]
        started = time.monotonic()
        connection.drain_events(timeout=5)
        assert got == [{"n": 0}, {"n": 1}]
        assert time.monotonic() - started < 1


def test_a_message_consumed_without_ack_is_gone_from_the_store(
    connection: Connection, store_url: str
) -> None:
    publish(connection, QUEUE, {"n": 0})
    got: list[Any] = []
    consumer = Consumer(
        connection.channel(), [QUEUE], callbacks=[lambda body, m: got.append(body)], no_ack=True
    )
    with consumer:
        connection.drain_events(timeout=5)
    assert got == [{"n": 0}]
    assert counts(store_url, QUEUE) == QueueCounts()


def test_a_message_got_without_ack_is_gone_from_the_store(
    connection: Connection, store_url: str
) -> None:
    publish(connection, QUEUE, {"n": 0})
    simple = connection.SimpleQueue(QUEUE, no_ack=True)
    try:
        assert simple.get(timeout=5).payload == {"n": 0}
    finally:
        simple.close()
    assert counts(store_url, QUEUE) == QueueCounts()
