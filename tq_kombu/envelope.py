"""Message <-> stored bytes: serialize, compress when large, encrypt with AES-256-GCM.

The stored payload starts with a header a reader can trust instead of guessing::

    version (1 byte) | compression (1 byte) | key id length (1 byte) | key id | nonce (12) | sealed

Version 2 is encrypted: ``sealed`` is AES-256-GCM of the (possibly compressed)
serialized kombu message, with a fresh 96-bit nonce, and the header plus the
message id as associated data, so a payload copied under another id fails its
tag check. Version 1 (``encryption="off"``) has no key id and no nonce.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kombu.utils.json import dumps, loads

from .errors import ConfigurationError, TQError
from .keyring import KeyRing, keyring_from_options

PLAIN = 1
ENCRYPTED = 2
NONCE_BYTES = 12
#: Appended to the message id in the associated data of records kept beside a message.
RECORD_SUFFIX = "#record"

COMPRESSION_CODES = {"none": 0, "zlib": 1, "zstd": 2}


class EnvelopeError(TQError):
    """Stored bytes that cannot be turned back into a message."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class Compressor:
    """zlib (built in) or zstd (the ``zstd`` extra)."""

    def __init__(self, name: str) -> None:
        if name not in COMPRESSION_CODES or name == "none":
            raise ConfigurationError(
                f"compression={name!r} is not supported: use 'zlib' (default) or 'zstd'"
            )
        self.name = name
        self.code = COMPRESSION_CODES[name]
        if name == "zstd":
            try:
                import zstandard
            except ImportError as exc:
                raise ConfigurationError(
                    "compression='zstd' needs the zstd extra: pip install 'tq[zstd]'"
                ) from exc
            self._zstd_c = zstandard.ZstdCompressor(level=3)

    def compress(self, data: bytes) -> bytes:
        if self.name == "zstd":
            return bytes(self._zstd_c.compress(data))
        return zlib.compress(data, 6)


def decompress(code: int, data: bytes) -> bytes:
    if code == 0:
        return data
    if code == 1:
        return zlib.decompress(data)
    if code == 2:
        try:
            import zstandard
        except ImportError as exc:
            raise EnvelopeError(
                "payload is zstd-compressed but zstandard is not installed: pip install 'tq[zstd]'"
            ) from exc
        return bytes(zstandard.ZstdDecompressor().decompress(data))
    raise EnvelopeError(f"unknown compression code {code}")


class Envelope:
    """Seals kombu messages into stored payloads and opens them again."""

    def __init__(
        self,
        keyring: KeyRing | None,
        compress_min_bytes: int = 1024,
        compression: str = "zlib",
    ) -> None:
        self.keyring = keyring
        self.compress_min_bytes = compress_min_bytes
        self.compressor = Compressor(compression)
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            assert self.keyring is not None
            key = self.keyring.get(key_id)
            if key is None:
                raise EnvelopeError(f"key id {key_id!r} is not in the key ring", key_id)
            cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher

    def seal(self, message_id: str, message: dict[str, Any]) -> bytes:
        return self._seal(message_id, dumps(message).encode())

    def seal_record(self, message_id: str, record: dict[str, Any]) -> bytes:
        """Seal a record kept beside a message (e.g. a failure), bound to that message."""
        return self._seal(message_id + RECORD_SUFFIX, dumps(record).encode())

    def open_record(self, message_id: str, sealed: bytes) -> dict[str, Any]:
        record = _json(self._open(message_id + RECORD_SUFFIX, sealed))
        if not isinstance(record, dict):
            raise EnvelopeError("sealed record is not a mapping")
        return record

    def _seal(self, message_id: str, data: bytes) -> bytes:
        code = 0
        if len(data) >= self.compress_min_bytes:
            packed = self.compressor.compress(data)
            if len(packed) < len(data):
                data, code = packed, self.compressor.code
        if self.keyring is None:
            return bytes((PLAIN, code, 0)) + data
        key_id = self.keyring.active_id
        kid = key_id.encode()
        header = bytes((ENCRYPTED, code, len(kid))) + kid
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(key_id).encrypt(nonce, data, header + message_id.encode())
        return header + nonce + sealed

    def open(self, message_id: str, payload: bytes) -> dict[str, Any]:
        """The message sealed in ``payload``; :class:`EnvelopeError` if it cannot be read."""
        message = _json(self._open(message_id, payload))
        if not isinstance(message, dict) or "properties" not in message:
            raise EnvelopeError("payload is not a kombu message")
        return message

    def _open(self, message_id: str, payload: bytes) -> bytes:
        if len(payload) < 3:
            raise EnvelopeError(f"payload of {len(payload)} bytes is too short to be a message")
        version, code, kid_len = payload[0], payload[1], payload[2]
        if version == PLAIN:
            data = payload[3:]
        elif version == ENCRYPTED:
            data = self._decrypt(message_id, payload, code, kid_len)
        else:
            raise EnvelopeError(f"unknown envelope version {version}")
        try:
            return decompress(code, data)
        except zlib.error as exc:
            raise EnvelopeError(f"payload does not decompress: {exc}") from exc

    def _decrypt(self, message_id: str, payload: bytes, code: int, kid_len: int) -> bytes:
        header_end = 3 + kid_len
        header = payload[:header_end]
        try:
            key_id = header[3:].decode()
        except UnicodeDecodeError as exc:
            raise EnvelopeError("payload header holds an unreadable key id") from exc
        if self.keyring is None:
            raise EnvelopeError(
                f"payload is encrypted with key {key_id!r} but encryption is off", key_id
            )
        nonce = payload[header_end : header_end + NONCE_BYTES]
        sealed = payload[header_end + NONCE_BYTES :]
        if len(nonce) < NONCE_BYTES or len(sealed) < 16:
            raise EnvelopeError("payload is truncated", key_id)
        try:
            return self._cipher(key_id).decrypt(nonce, sealed, header + message_id.encode())
        except InvalidTag as exc:
            raise EnvelopeError(
                f"payload failed its integrity check under key {key_id!r} "
                "(tampered, truncated, or stored under another message id)",
                key_id,
            ) from exc


def _json(data: bytes) -> Any:
    try:
        return loads(data)
    except ValueError as exc:
        raise EnvelopeError(f"payload is not a valid message: {exc}") from exc


def envelope_from_settings(settings: Mapping[str, Any]) -> Envelope:
    """The envelope that checked transport options configure (see
    :func:`tq_kombu.options.settings`): key ring and compression."""
    return Envelope(
        keyring_from_options(settings),
        compress_min_bytes=int(settings["compress_min_bytes"]),
        compression=str(settings["compression"]),
    )
