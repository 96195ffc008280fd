"""Poison input through real kombu Connections, Producers and Consumers on both stores:
forged (unsealed), malformed, oversized and consumer-crashing messages are set aside as
dead with their own reason while the good ones are consumed; a consumer never sees an
error from them, and releasing never lowers a delivery count."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

import tq_kombu
from tq_kombu.envelope import Envelope
from tq_kombu.keyring import keyring_from_options
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import NewMessage, QueueCounts, State

from .kombu_helpers import publish

QUEUE = Queue("poison", routing_key="poison")
MiB = 1024 * 1024


def connect(url: str, **options: Any) -> Connection:
    return Connection(f"tq+{url}", transport_options={"lease_seconds": 4, **options})


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def consume(
    conn: Connection, count: int, seconds: float = 10, prefetch: int | None = None
) -> list[Any]:
    """Bodies of ``count`` messages (acknowledged), or fewer when ``seconds`` run out."""
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        if body == {"crash": True}:
            raise RuntimeError("the consumer cannot handle this message")
        got.append(body)
        message.ack()

    channel = conn.channel()
    if prefetch:
        channel.basic_qos(0, prefetch, False)
    with Consumer(channel, [QUEUE], callbacks=[on_message]):
        deadline = time.monotonic() + seconds
        while len(got) < count and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    return got


def sealed(message: Any, **envelope_options: Any) -> NewMessage:
    """A message sealed with the test key ring (authentic, whatever its shape)."""
    message_id = uuid.uuid4().hex
    envelope = Envelope(keyring_from_options({}), **envelope_options)
    payload = envelope._seal(message_id, tq_kombu.envelope.dumps(message).encode())
    return NewMessage(message_id, payload, 9, task_name="tasks.bad")


def dead(store: Store) -> dict[str, tuple[str | None, str | None]]:
    listed = store.list_messages(QUEUE.name, State.DEAD)
    return {m.message_id: (m.dead_reason, m.dead_detail) for m in listed}


def test_a_message_published_without_encryption_never_reaches_an_encrypted_consumer(
    store_url: str, store: Store
) -> None:
    # Given a producer with encryption off (no key) publishing into an encrypted store
    with connect(store_url, encryption="off") as forger:
        publish(forger, QUEUE, {"forged": True})
    with connect(store_url) as conn:
        publish(conn, QUEUE, {"good": 1})
        # When the encrypted consumer consumes, Then only the sealed message arrives
        assert consume(conn, 1) == [{"good": 1}]
    # And the forged one is dead as undecryptable, "not sealed"
    assert list(dead(store).values()) == [("undecryptable", "not sealed")]
    assert store.counts(QUEUE.name) == QueueCounts(dead=1)


@pytest.mark.parametrize(
    "shape",
    [{"properties": {}}, {"properties": "x", "body": "b"}, ["not", "a", "message"], "text"],
    ids=["empty-properties", "properties-not-a-mapping", "a-list", "a-string"],
)
def test_an_authentic_malformed_message_goes_dead_and_the_good_one_is_consumed(
    store_url: str, store: Store, shape: Any
) -> None:
    # Given a malformed message sealed with the right key, ahead of a good one
    store.enqueue(QUEUE.name, sealed(shape))
    with connect(store_url) as conn:
        publish(conn, QUEUE, {"good": 1})
        # When a consumer consumes, Then it gets the good one and sees no error
        assert consume(conn, 1) == [{"good": 1}]
    # And the malformed one is dead as malformed
    assert [reason for reason, _ in dead(store).values()] == ["malformed"]
    assert store.counts(QUEUE.name) == QueueCounts(dead=1)


def test_publishing_over_max_message_bytes_fails_at_publish_and_stores_nothing(
    store_url: str, store: Store
) -> None:
    with connect(store_url, max_message_bytes=MiB) as conn:
        with pytest.raises(tq_kombu.MessageTooLarge, match="max_message_bytes=1048576"):
            publish(conn, QUEUE, {"blob": "x" * (2 * MiB)})
        publish(conn, QUEUE, {"blob": "small"})
    assert store.counts(QUEUE.name) == QueueCounts(ready=1)


def test_a_message_over_the_consumers_bound_goes_dead_as_too_large(
    store_url: str, store: Store
) -> None:
    # Given a producer allowed 8 MiB, a consumer bounded to 1 MiB, and a compressible 3 MiB
    # message (stored small) ahead of a good one
    with connect(store_url, max_message_bytes=8 * MiB) as producer:
        publish(producer, QUEUE, {"blob": "z" * (3 * MiB)}, {"good": 1})
    with connect(store_url, max_message_bytes=MiB) as conn:
        # When the consumer consumes, Then the large one is dead as too_large
        assert consume(conn, 1) == [{"good": 1}]
    assert [reason for reason, _ in dead(store).values()] == ["too_large"]


def test_a_message_the_consumer_crashes_on_is_set_aside_and_frees_its_prefetch_slot(
    store_url: str, store: Store
) -> None:
    # Given a consumer with a prefetch of one, and a message it raises on, then a good one
    with connect(store_url) as conn:
        publish(conn, QUEUE, {"crash": True}, {"good": 1})
        # When it consumes, Then no error reaches it and the good one still arrives
        assert consume(conn, 1, prefetch=1) == [{"good": 1}]
    # And the crashing message is dead as malformed, naming the error
    [(reason, detail)] = dead(store).values()
    assert reason == "malformed" and "RuntimeError" in (detail or "")


def test_a_message_released_at_close_keeps_its_delivery_count(store_url: str, store: Store) -> None:
    # Given a message delivered to a consumer that closes without acknowledging it
    with connect(store_url) as conn:
        publish(conn, QUEUE, {"n": 1})
        channel = conn.channel()
        held: list[Any] = []
        with Consumer(channel, [QUEUE], callbacks=[lambda body, m: held.append(m)]):
            deadline = time.monotonic() + 10
            while not held and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
        assert held
    # When it is back in ready, Then its delivery still counts
    [info] = store.list_messages(QUEUE.name, State.READY)
    assert info.delivery_count == 1
