"""Payloads at rest: unreadable without the key, rotated without downtime, and
unreadable ones set aside as dead while consumption goes on."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

import tq_kombu  # noqa: F401
from tq_kombu.store import open_store
from tq_kombu.store.base import State

MARKERS = ("ARG-MARKER-7f3a", "KWARG-MARKER-91bc", "HEADER-MARKER-55de")
K1 = base64.b64encode(os.urandom(32)).decode()
K2 = base64.b64encode(os.urandom(32)).decode()


def connect(url: str, keys: dict[str, str], active: str) -> Connection:
    options = {"encryption_keys": keys, "encryption_key_id": active, "lease_seconds": 5}
    return Connection(f"tq+{url}", transport_options=options)


def publish(conn: Connection, queue: Queue, body: dict[str, Any], **kwargs: Any) -> None:
    Producer(conn.channel()).publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue], **kwargs
    )


def consume(conn: Connection, queue: Queue, count: int, deadline_seconds: float = 10) -> list[Any]:
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with Consumer(conn.channel(), [queue], callbacks=[on_message]):
        deadline = time.monotonic() + deadline_seconds
        while len(received) < count and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    return received


@pytest.fixture
def queue() -> Queue:
    return Queue("secrets", Exchange("secrets", "direct"), routing_key="secrets")


def readable_forms(marker: str) -> list[bytes]:
    """The marker as it would appear in clear or base64-encoded at any alignment."""
    forms = [marker.encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + marker.encode())
        forms.append(encoded[4 if shift else 0 : -4])
    return forms


def raw_bytes_at_rest(url: str) -> bytes:
    """Everything the store holds, as bytes: every Redis key and value, or the SQLite files."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        chunks: list[bytes] = []
        for key in client.scan_iter():
            chunks.append(key)
            kind = client.type(key)
            if kind == b"hash":
                for field, value in client.hgetall(key).items():
                    chunks += [field, value]
            elif kind == b"zset":
                chunks += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"string":
                chunks.append(client.get(key) or b"")
        return b"\n".join(chunks)
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_no_task_data_is_stored_in_clear(store_url: str, queue: Queue) -> None:
    # Given a message whose args, kwargs and headers carry marker strings
    with connect(store_url, {"k1": K1}, "k1") as conn:
        body = {"args": [MARKERS[0]], "kwargs": {"k": MARKERS[1]}}
        publish(conn, queue, body, headers={"argsrepr": MARKERS[2]})
        # When it is at rest in the store
        raw = raw_bytes_at_rest(store_url)
        # Then no marker can be read there, yet the message is consumed intact
        for marker in MARKERS:
            for form in readable_forms(marker):
                assert form not in raw, f"{marker} is readable at rest as {form!r}"
        assert consume(conn, queue, 1) == [body]


def test_keys_rotate_without_downtime_and_a_dropped_key_makes_old_messages_dead(
    store_url: str, queue: Queue
) -> None:
    # Given messages published under k1, then more after rotating to k2
    with connect(store_url, {"k1": K1}, "k1") as conn:
        for i in range(3):
            publish(conn, queue, {"n": f"old{i}"})
    with connect(store_url, {"k2": K2, "k1": K1}, "k2") as conn:
        for i in range(3):
            publish(conn, queue, {"n": f"new{i}"})
        # Then a consumer holding both keys reads them all
        assert sorted(m["n"] for m in consume(conn, queue, 6)) == [
            "new0",
            "new1",
            "new2",
            "old0",
            "old1",
            "old2",
        ]
    # Given old messages again, and a consumer whose ring dropped k1
    with connect(store_url, {"k1": K1}, "k1") as conn:
        publish(conn, queue, {"n": "old-again"})
    with connect(store_url, {"k2": K2}, "k2") as conn:
        publish(conn, queue, {"n": "fresh"})
        # When it consumes, the old one goes dead as undecryptable and the fresh one arrives
        assert consume(conn, queue, 1) == [{"n": "fresh"}]
    store = open_store(store_url)
    dead = store.list_messages("secrets", State.DEAD)
    assert [m.dead_reason for m in dead] == ["undecryptable"]
    assert "k1" in (dead[0].dead_detail or "")
    assert store.counts("secrets").ready == 0


@pytest.mark.parametrize("damage", ["tamper", "truncate", "garbage"])
def test_a_damaged_payload_goes_dead_and_the_next_message_is_fine(
    store_url: str, queue: Queue, damage: str
) -> None:
    with connect(store_url, {"k1": K1}, "k1") as conn:
        publish(conn, queue, {"n": "victim"}, priority=9)
        publish(conn, queue, {"n": "next"}, priority=1)
        store = open_store(store_url)
        [victim] = [m for m in store.list_messages("secrets", State.READY) if m.priority == 9]
        damage_payload(store_url, "secrets", victim.message_id, damage)
        assert consume(conn, queue, 1) == [{"n": "next"}]
    [dead] = store.list_messages("secrets", State.DEAD)
    assert (dead.message_id, dead.dead_reason) == (victim.message_id, "undecryptable")


def damage_payload(url: str, queue: str, message_id: str, damage: str) -> None:
    store = open_store(url)
    payload = store.payload(queue, message_id)
    assert payload is not None
    if damage == "tamper":
        changed = bytearray(payload)
        changed[-3] ^= 0x01
        new = bytes(changed)
    elif damage == "truncate":
        new = payload[: len(payload) // 2]
    else:
        new = os.urandom(len(payload))
    if url.startswith("redis"):
        from tq_kombu.store.redis import RedisStore

        assert isinstance(store, RedisStore)
        store.client.hset(store.keys_of(queue)["bodies"], message_id, new)
    else:
        import sqlite3

        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.execute(
                "UPDATE messages SET payload=? WHERE queue=? AND id=?", (new, queue, message_id)
            )


def test_publishing_without_a_key_fails_with_advice(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQ_ENCRYPTION_KEYS", raising=False)
    with pytest.raises(tq_kombu.ConfigurationError, match="keygen"):
        Connection(f"tq+{store_url}").channel()


def test_encryption_off_stores_in_clear_when_asked(store_url: str, queue: Queue) -> None:
    with Connection(f"tq+{store_url}", transport_options={"encryption": "off"}) as conn:
        publish(conn, queue, {"args": [MARKERS[0]]}, headers={"argsrepr": MARKERS[2]})
        raw = raw_bytes_at_rest(store_url)
        assert any(form in raw for form in readable_forms(MARKERS[0]))
        assert MARKERS[2].encode() in raw
        assert consume(conn, queue, 1) == [{"args": [MARKERS[0]]}]


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
def test_every_kombu_serializer_is_wrapped_whole(
    store_url: str, queue: Queue, serializer: str
) -> None:
    # Given a message serialized by any of Celery's serializers
    body = {"args": [MARKERS[0], 42], "kwargs": {"when": "2026-11-22", "blob": "x" * 3000}}
    with connect(store_url, {"k1": K1}, "k1") as conn:
        publish(conn, queue, body, serializer=serializer)
        # Then it is unreadable at rest and arrives unchanged
        for form in readable_forms(MARKERS[0]):
            assert form not in raw_bytes_at_rest(store_url)
        received: list[Any] = []

        def on_message(got: Any, message: Any) -> None:
            received.append((got, message.content_type))
            message.ack()

        with Consumer(conn.channel(), [queue], callbacks=[on_message], accept=[serializer]):
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
    assert received and received[0][0] == body
