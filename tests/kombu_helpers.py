"""What the kombu-level tests share: publishing JSON bodies to a queue through a real
kombu Connection, and counting the queue's messages in the store behind it."""

from __future__ import annotations

from typing import Any

from kombu import Connection, Producer, Queue

from tq_kombu.store import open_store
from tq_kombu.store.model import QueueCounts


def publish(conn: Connection, queue: Queue, *bodies: Any) -> None:
    """Declare ``queue`` and publish each body to it (JSON)."""
    channel = conn.channel()
    queue(channel).declare()
    producer = Producer(channel, routing_key=queue.routing_key)
    for body in bodies:
        producer.publish(body, serializer="json")


def counts(store_url: str, queue: Queue) -> QueueCounts:
    """The queue's messages per state, read from a store of its own."""
    store = open_store(store_url)
    try:
        return store.counts(queue.name)
    finally:
        store.close()
