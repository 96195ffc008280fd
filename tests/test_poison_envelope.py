"""The envelope against poison input: with encryption on only sealed messages open;
what opens must be a message kombu and Celery can consume; sizes are bounded both
at publish and while decompressing. Each failure carries the dead-letter reason a
consumer records."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from typing import Any

import pytest
from kombu import Connection

import tq_kombu
from tq_kombu.envelope import ENCRYPTED, PLAIN, Envelope, EnvelopeError
from tq_kombu.errors import ConfigurationError, MessageTooLarge, TQError
from tq_kombu.keyring import KeyRing
from tq_kombu.store.base import DeadReason

RING = KeyRing({"k1": os.urandom(32)}, "k1")
MiB = 1024 * 1024


def good_message(**changes: Any) -> dict[str, Any]:
    """A message exactly as kombu's virtual channel prepares one for a Celery task."""
    with Connection("memory://") as conn:
        message: dict[str, Any] = conn.default_channel.prepare_message(
            '[["a"], {}, {}]',
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "tasks.note", "id": "t-1", "timelimit": [None, None]},
            properties={"delivery_info": {"exchange": "", "routing_key": "celery"}},
        )
    message.update(changes)
    return message


def opened_reason(envelope: Envelope, payload: bytes) -> tuple[DeadReason, str]:
    with pytest.raises(EnvelopeError) as caught:
        envelope.open("m", payload)
    return caught.value.reason, str(caught.value)


# -- only sealed input opens when encryption is on -----------------------------------
def test_a_plaintext_envelope_never_opens_when_encryption_is_on() -> None:
    # Given a producer without a key (encryption off) and a consumer with one
    forged = Envelope(None).seal("m", good_message())
    assert forged[0] == PLAIN
    # When the consumer opens the forged payload, Then it is refused as not sealed
    assert opened_reason(Envelope(RING), forged) == (DeadReason.UNDECRYPTABLE, "not sealed")


@pytest.mark.parametrize(
    "payload", [b"", b"\x01", b"\x03\x00\x00{}", b"\x00\x00\x00", b"\xff" * 40, b'{"a": 1}']
)
def test_unknown_versions_and_garbage_are_not_sealed(payload: bytes) -> None:
    assert opened_reason(Envelope(RING), payload) == (DeadReason.UNDECRYPTABLE, "not sealed")


def test_a_sealed_message_still_opens_and_encryption_off_still_reads_plaintext() -> None:
    message = good_message()
    sealed = Envelope(RING).seal("m", message)
    assert sealed[0] == ENCRYPTED and Envelope(RING).open("m", sealed) == message
    plain = Envelope(None)
    assert plain.open("m", plain.seal("m", message)) == message


def test_a_sealed_payload_is_undecryptable_when_encryption_is_off() -> None:
    sealed = Envelope(RING).seal("m", good_message())
    reason, text = opened_reason(Envelope(None), sealed)
    assert reason is DeadReason.UNDECRYPTABLE and "encryption is off" in text


# -- what opens must be consumable --------------------------------------------------
MALFORMED: dict[str, Any] = {
    "a list instead of a message": ["properties"],
    "properties that are not a mapping": good_message(properties="x"),
    "nothing but empty properties": {"properties": {}},
    "no body": {k: v for k, v in good_message().items() if k != "body"},
    "a body that is not text": good_message(body={"args": []}),
    "headers that are not a mapping": good_message(headers=["task"]),
    "no headers": {k: v for k, v in good_message().items() if k != "headers"},
    "a content type that is a list": good_message(**{"content-type": ["json"]}),
    "a content encoding that is a number": good_message(**{"content-encoding": 8}),
    "delivery_info that is not a mapping": good_message(
        properties={"delivery_info": "x", "body_encoding": "utf-8"}
    ),
    "an unknown body encoding": good_message(properties={"body_encoding": "rot13"}),
    "a base64 body that is not base64": good_message(
        body="not base64!", properties={"body_encoding": "base64"}
    ),
    "a task name that is a list": good_message(headers={"task": ["a"], "id": "t"}),
    "a timelimit that is a number": good_message(headers={"task": "a", "timelimit": 5}),
    "an id that is a number": good_message(headers={"task": "a", "id": 7}),
    "a reply_to that is a mapping": good_message(properties={"reply_to": {"q": 1}}),
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_an_authentic_message_of_the_wrong_shape_is_malformed(shape: str) -> None:
    # Given a message sealed with a key of the ring (so not forged) but of a bad shape
    envelope = Envelope(RING)
    sealed = envelope.seal("m", MALFORMED[shape])
    # When it is opened, Then it is refused as malformed, naming what is wrong
    reason, text = opened_reason(envelope, sealed)
    assert reason is DeadReason.MALFORMED, text


def test_control_plane_messages_as_kombu_sends_them_are_well_formed() -> None:
    # Given a remote-control broadcast as kombu's Mailbox publishes it (expires is a Unix
    # time, not text) and a reply, both captured from a real in-memory Mailbox
    from kombu import pidbox

    with Connection("memory://") as conn:
        mailbox = pidbox.Mailbox("celery", type="fanout")(conn)
        channel = conn.channel()
        node = mailbox.Node("w@host", channel=channel)
        node.listen(callback=lambda body, message: None)
        mailbox._broadcast("ping", {}, destination=["w@host"], timeout=1)
        raw = channel._get("w@host.celery.pidbox")
    assert isinstance(raw["headers"]["expires"], float)
    # When it is sealed and opened, Then it opens as it was
    envelope = Envelope(RING)
    assert envelope.open("m", envelope.seal("m", raw)) == raw


def test_sealed_bytes_that_are_not_json_are_malformed() -> None:
    envelope = Envelope(RING)
    assert opened_reason(envelope, envelope._seal("m", b"\x00not json"))[0] is (
        DeadReason.MALFORMED
    )


def test_a_base64_body_as_kombu_encodes_binary_data_is_well_formed() -> None:
    with Connection("memory://") as conn:
        message = conn.default_channel.prepare_message(b"\x00\xff binary", 0, "application/data")
        message["properties"]["body_encoding"] = "base64"
        message["body"] = "AP8gYmluYXJ5"
    envelope = Envelope(RING)
    assert envelope.open("m", envelope.seal("m", message)) == message


# -- sizes are bounded ---------------------------------------------------------------
def test_publishing_over_max_message_bytes_is_a_clear_error_naming_size_and_option() -> None:
    envelope = Envelope(RING, max_message_bytes=10_000)
    with pytest.raises(MessageTooLarge) as caught:
        envelope.seal("m", good_message(body="x" * 20_000))
    assert isinstance(caught.value, TQError)
    assert "max_message_bytes=10000" in str(caught.value)
    assert str(len(tq_kombu.envelope.dumps(good_message(body="x" * 20_000)))) in str(caught.value)


def test_a_message_at_the_bound_is_published_and_opens() -> None:
    message = good_message(body="y" * 5_000)
    size = len(tq_kombu.envelope.dumps(message).encode())
    envelope = Envelope(RING, max_message_bytes=size)
    assert envelope.open("m", envelope.seal("m", message)) == message


def test_a_compressed_payload_decompressing_past_the_bound_is_too_large_in_bounded_memory() -> None:
    # Given a payload of 64 MiB of zeros, stored compressed in about 64 KB (a zip bomb)
    producer = Envelope(RING, max_message_bytes=1 << 30, compress_min_bytes=0)
    bomb = producer._seal("m", bytes(64 * MiB))
    assert len(bomb) < 100_000
    # When a consumer bounded to 1 MiB opens it
    consumer = Envelope(RING, max_message_bytes=MiB)
    tracemalloc.start()
    try:
        reason, text = opened_reason(consumer, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then it is too large, and decompression stopped near the bound
    assert reason is DeadReason.TOO_LARGE and "max_message_bytes=1048576" in text
    assert peak < 4 * MiB


def test_an_uncompressed_payload_over_the_bound_is_too_large() -> None:
    payload = Envelope(RING, max_message_bytes=1 << 30)._seal("m", b"z" * (2 * MiB))
    reason, _ = opened_reason(Envelope(RING, max_message_bytes=MiB), payload)
    assert reason is DeadReason.TOO_LARGE


def test_a_truncated_zlib_stream_is_undecryptable_not_a_crash() -> None:
    data = zlib.compress(b'{"properties": {}}' * 200)[:-10]
    reason, text = opened_reason(Envelope(None), bytes((PLAIN, 1, 0)) + data)
    assert reason is DeadReason.UNDECRYPTABLE and "decompress" in text


@pytest.mark.parametrize("bound", [0, -5])
def test_max_message_bytes_must_be_positive(bound: int) -> None:
    with pytest.raises(ConfigurationError, match="max_message_bytes"):
        Envelope(RING, max_message_bytes=bound)


def test_the_new_dead_reasons_are_recorded_names() -> None:
    assert {DeadReason.MALFORMED, DeadReason.CORRUPT, DeadReason.TOO_LARGE} == {
        "malformed",
        "corrupt",
        "too_large",
    }
