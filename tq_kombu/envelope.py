"""Message <-> stored bytes.

A kombu message (a dict) is serialized to JSON and stored as the payload. The
payload starts with a version byte so that later formats (compression,
encryption) are recognised rather than guessed.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.json import dumps, loads

from .errors import TQError

PLAIN_V1 = b"\x01"


class EnvelopeError(TQError):
    """Stored bytes that cannot be turned back into a message."""


class Envelope:
    """Seals messages into payloads and opens them again."""

    def seal(self, message_id: str, message: dict[str, Any]) -> bytes:
        return PLAIN_V1 + dumps(message).encode()

    def open(self, message_id: str, payload: bytes) -> dict[str, Any]:
        if payload[:1] != PLAIN_V1:
            raise EnvelopeError(f"unknown envelope version {payload[:1]!r}")
        try:
            message = loads(payload[1:])
        except ValueError as exc:
            raise EnvelopeError(f"payload is not a valid message: {exc}") from exc
        if not isinstance(message, dict) or "properties" not in message:
            raise EnvelopeError("payload is not a kombu message")
        return message
