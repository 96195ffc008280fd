"""The envelope: what is stored is compressed when large and always encrypted."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tq_kombu.envelope import Envelope, EnvelopeError
from tq_kombu.errors import ConfigurationError
from tq_kombu.keyring import KeyRing, generate_key_line, keyring_from_options, parse_env

KEY1 = os.urandom(32)
KEY2 = os.urandom(32)


def ring(active: str = "k1", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"k1": KEY1}, active)


def message(body: str, **headers: object) -> dict[str, object]:
    return {
        "body": body,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"argsrepr": "('secret-arg',)", **headers},
        "properties": {"delivery_tag": "t", "priority": 5, "delivery_info": {}},
    }


@settings(max_examples=200, deadline=None)
@given(body=st.text(max_size=3000), threshold=st.sampled_from([0, 1024, 1 << 20]))
def test_any_message_survives_a_round_trip(body: str, threshold: int) -> None:
    envelope = Envelope(ring(), compress_min_bytes=threshold)
    original = message(body)
    assert envelope.open("m1", envelope.seal("m1", original)) == original


@settings(max_examples=50, deadline=None)
@given(size=st.integers(min_value=1000, max_value=1050))
def test_sizes_around_the_compression_threshold_round_trip(size: int) -> None:
    envelope = Envelope(ring(), compress_min_bytes=1024)
    original = message("a" * size)
    assert envelope.open("m", envelope.seal("m", original)) == original


def test_nothing_readable_is_stored() -> None:
    sealed = Envelope(ring()).seal("m1", message("the-body-marker", kwargsrepr="kw-marker"))
    for marker in (b"the-body-marker", b"kw-marker", b"secret-arg"):
        assert marker not in sealed


def test_compressible_payloads_are_stored_smaller() -> None:
    original = message("x" * 20_000)
    sealed = Envelope(ring(), compress_min_bytes=1024).seal("m", original)
    assert len(sealed) < 2_000


def test_zstd_compression_round_trips() -> None:
    pytest.importorskip("zstandard")
    envelope = Envelope(ring(), compression="zstd")
    original = message("y" * 10_000)
    sealed = envelope.seal("m", original)
    assert sealed[1] == 2 and len(sealed) < 2_000
    assert envelope.open("m", sealed) == original


def test_a_payload_copied_under_another_message_id_fails() -> None:
    envelope = Envelope(ring())
    sealed = envelope.seal("m1", message("b"))
    with pytest.raises(EnvelopeError, match="integrity"):
        envelope.open("m2", sealed)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damaged_payloads_raise_envelope_error(damage: str) -> None:
    envelope = Envelope(ring())
    sealed = bytearray(envelope.seal("m", message("b")))
    if damage == "flip":
        sealed[-5] ^= 0x40
    elif damage == "truncate":
        sealed = sealed[:20]
    elif damage == "garbage":
        sealed = bytearray(os.urandom(64))
    else:
        sealed = bytearray()
    with pytest.raises(EnvelopeError):
        envelope.open("m", bytes(sealed))


def test_every_key_in_the_ring_decrypts_and_new_messages_use_the_active_one() -> None:
    old = Envelope(ring("k1", k1=KEY1))
    sealed_old = old.seal("m", message("old"))
    rotated = Envelope(ring("k2", k1=KEY1, k2=KEY2))
    sealed_new = rotated.seal("n", message("new"))
    assert rotated.open("m", sealed_old)["body"] == "old"
    assert b"k2" in sealed_new[:8]
    dropped = Envelope(ring("k2", k2=KEY2))
    with pytest.raises(EnvelopeError) as caught:
        dropped.open("m", sealed_old)
    assert caught.value.key_id == "k1"


def test_keys_come_from_the_environment_first_one_active() -> None:
    line1, line2 = generate_key_line("k1"), generate_key_line("k2")
    keyring = keyring_from_options({}, {"TQ_ENCRYPTION_KEYS": f"{line2},{line1}"})
    assert keyring is not None and keyring.active_id == "k2" and set(keyring.keys) == {"k1", "k2"}


def test_transport_options_take_a_key_ring_and_an_active_id() -> None:
    options = {
        "encryption_keys": {
            "a": base64.b64encode(KEY1).decode(),
            "b": base64.b64encode(KEY2).decode(),
        },
        "encryption_key_id": "b",
    }
    keyring = keyring_from_options(options, {})
    assert keyring is not None and keyring.active_id == "b" and keyring.get("a") == KEY1


def test_no_key_is_a_clear_error_saying_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match="keygen"):
        keyring_from_options({}, {})


def test_encryption_off_must_be_explicit() -> None:
    assert keyring_from_options({"encryption": "off"}, {}) is None


@pytest.mark.parametrize(
    "value, problem",
    [
        ("k1:" + base64.b64encode(b"short").decode(), "5 bytes"),
        ("k1:not base64!", "base64"),
        ("nokey", "no key id"),
    ],
)
def test_bad_keys_name_the_key_and_the_problem(value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_env(value)
