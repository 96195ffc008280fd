"""Message <-> stored bytes: serialize, compress when large, encrypt with AES-256-GCM.

The stored payload starts with a header a reader can trust instead of guessing::

    version (1 byte) | compression (1 byte) | key id length (1 byte) | key id | nonce (12) | sealed

Version 2 is encrypted: ``sealed`` is AES-256-GCM of the (possibly compressed)
serialized kombu message, with a fresh 96-bit nonce, and the header plus the
message id as associated data, so a payload copied under another id fails its
tag check. Version 1 (``encryption="off"``) has no key id and no nonce.

With encryption on, only version 2 under a key of the ring opens: anything else is
"not sealed" and never reaches a consumer. Messages are bounded by
``max_message_bytes`` (serialized, before compression): publishing a larger one is a
:class:`~tq_kombu.errors.MessageTooLarge` error, and decompression stops there.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kombu.utils.json import dumps, loads

from .errors import ConfigurationError, MessageTooLarge, TQError
from .keyring import KeyRing, keyring_from_options
from .message_check import MalformedMessage, check_message
from .store.model import DeadReason

PLAIN = 1
ENCRYPTED = 2
NONCE_BYTES = 12
#: Appended to the message id in the associated data of records kept beside a message.
RECORD_SUFFIX = "#record"

COMPRESSION_CODES = {"none": 0, "zlib": 1, "zstd": 2}
#: Default bound of a message, serialized and decompressed (64 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: The dead-letter detail of anything that opens without a key of the ring.
NOT_SEALED = "not sealed"


class EnvelopeError(TQError):
    """Stored bytes that cannot be turned back into a message; ``reason`` is the
    dead-letter reason a consumer records (undecryptable, malformed or too_large)."""

    def __init__(
        self,
        message: str,
        key_id: str | None = None,
        reason: DeadReason = DeadReason.UNDECRYPTABLE,
        explanation: str = "",
    ) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.reason = reason
        #: More than the dead-letter detail says, for the log.
        self.explanation = explanation


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


def decompress(code: int, data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> bytes:
    """``data`` decompressed, never past ``max_bytes`` (EnvelopeError ``too_large`` then)."""
    if code == 0:
        out = data
    elif code == 1:
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, max_bytes + 1)
        except zlib.error as exc:
            raise EnvelopeError(f"payload does not decompress: {exc}") from exc
        if len(out) <= max_bytes and not inflater.eof:
            raise EnvelopeError("payload does not decompress: the zlib stream is truncated")
    elif code == 2:
        out = _zstd_decompress(data, max_bytes)
    else:
        raise EnvelopeError(f"unknown compression code {code}")
    if len(out) > max_bytes:
        raise _too_large(f"{'more than ' if code else ''}{len(out)}", max_bytes)
    return out


def _zstd_decompress(data: bytes, max_bytes: int) -> bytes:
    try:
        import zstandard
    except ImportError as exc:
        raise EnvelopeError(
            "payload is zstd-compressed but zstandard is not installed: pip install 'tq[zstd]'"
        ) from exc
    try:
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            return bytes(reader.read(max_bytes + 1))
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"payload does not decompress: {exc}") from exc


def _too_large(size: str, max_bytes: int) -> EnvelopeError:
    return EnvelopeError(
        f"message of {size} bytes is over max_message_bytes={max_bytes}",
        reason=DeadReason.TOO_LARGE,
    )


class Envelope:
    """Seals kombu messages into stored payloads and opens them again."""

    def __init__(
        self,
        keyring: KeyRing | None,
        compress_min_bytes: int = 1024,
        compression: str = "zlib",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if int(max_message_bytes) < 1:
            raise ConfigurationError(
                f"max_message_bytes={max_message_bytes!r} must be a positive number of bytes"
            )
        self.keyring = keyring
        self.max_message_bytes = int(max_message_bytes)
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
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                f"message {message_id} is {len(data)} bytes serialized, over "
                f"max_message_bytes={self.max_message_bytes}: send a reference to the data "
                "(a file or object store key) instead, or raise the max_message_bytes "
                "transport option on every producer and worker"
            )
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
        try:
            check_message(message)
        except MalformedMessage as exc:
            raise EnvelopeError(str(exc), reason=DeadReason.MALFORMED) from exc
        return dict(message)

    def _open(self, message_id: str, payload: bytes) -> bytes:
        if len(payload) > self.max_message_bytes + 1024:
            raise _too_large(str(len(payload)), self.max_message_bytes)
        version = payload[0] if payload else None
        if self.keyring is not None and version != ENCRYPTED:
            what = "a plaintext" if version == PLAIN else f"an unknown version {version}"
            raise EnvelopeError(
                NOT_SEALED,
                explanation=f"{what} envelope while encryption is on: only messages sealed "
                "with a key of the ring are delivered",
            )
        if len(payload) < 3:
            raise EnvelopeError(f"payload of {len(payload)} bytes is too short to be a message")
        code, kid_len = payload[1], payload[2]
        if version == PLAIN:
            data = payload[3:]
        elif version == ENCRYPTED:
            data = self._decrypt(message_id, payload, code, kid_len)
        else:
            raise EnvelopeError(f"unknown envelope version {version}")
        return decompress(code, data, self.max_message_bytes)

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
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(
            f"payload is not a valid message: {exc}", reason=DeadReason.MALFORMED
        ) from exc


def envelope_from_settings(settings: Mapping[str, Any]) -> Envelope:
    """The envelope that checked transport options configure (see
    :func:`tq_kombu.options.settings`): key ring, compression and size bound."""
    return Envelope(
        keyring_from_options(settings),
        compress_min_bytes=int(settings["compress_min_bytes"]),
        compression=str(settings["compression"]),
        max_message_bytes=int(settings["max_message_bytes"]),
    )
