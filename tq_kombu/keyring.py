"""Encryption keys: a ring of AES-256 keys by id, one of them active for new messages.

Configured with ``broker_transport_options={"encryption_keys": {"k2": "<base64>", ...},
"encryption_key_id": "k2"}`` or the environment variable
``TQ_ENCRYPTION_KEYS="k2:<base64>,k1:<base64>"`` (the first is active). Every key in
the ring still decrypts, so keys rotate without downtime.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

ENV_VAR = "TQ_ENCRYPTION_KEYS"
KEY_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

HOW_TO_GET_A_KEY = (
    "create one with `celery -A app tq keygen` (or `python -m tq_kombu keygen`) and set "
    f"{ENV_VAR}=<that line>, or broker_transport_options "
    '{"encryption_keys": {"<id>": "<base64>"}, "encryption_key_id": "<id>"}; '
    'to store payloads in clear set broker_transport_options {"encryption": "off"}'
)

_warned_off = False


@dataclass(frozen=True)
class KeyRing:
    keys: Mapping[str, bytes]
    active_id: str

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)


def decode_key(key_id: str, encoded: str) -> bytes:
    """The 32 raw bytes of a base64 key; a clear error naming the key id otherwise."""
    if not KEY_ID.match(key_id):
        raise ConfigurationError(
            f"encryption key id {key_id!r} is not valid: use 1-64 letters, digits, '_', '.' or '-'"
        )
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(
            f"encryption key {key_id!r} is not valid base64 ({exc}); {HOW_TO_GET_A_KEY}"
        ) from exc
    if len(key) != KEY_BYTES:
        raise ConfigurationError(
            f"encryption key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
            f"bytes of base64; {HOW_TO_GET_A_KEY}"
        )
    return key


def parse_env(value: str) -> tuple[dict[str, bytes], str]:
    """Parse ``"k2:<base64>,k1:<base64>"``; the first key is the active one."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        key_id, sep, encoded = item.partition(":")
        if not sep:
            raise ConfigurationError(
                f"{ENV_VAR} entry {item[:8]!r}... has no key id: write it as <id>:<base64>"
            )
        key_id = key_id.strip()
        if key_id in keys:
            raise ConfigurationError(
                f"{ENV_VAR} holds key id {key_id!r} twice: give every key its own id "
                "(the first key is the active one)"
            )
        keys[key_id] = decode_key(key_id, encoded)
        order.append(key_id)
    if not order:
        raise ConfigurationError(f"{ENV_VAR} is set but holds no key; {HOW_TO_GET_A_KEY}")
    return keys, order[0]


def keyring_from_options(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> KeyRing | None:
    """The key ring configured for a transport, or None when encryption is explicitly off."""
    global _warned_off
    environ = os.environ if environ is None else environ
    mode = str(options.get("encryption", "on")).lower()
    if mode in ("off", "false", "0", "no", "none"):
        if not _warned_off:
            logger.warning("tq: encryption is off; task payloads are stored in clear")
            _warned_off = True
        return None
    if mode not in ("on", "true", "1", "yes", "aes-256-gcm"):
        raise ConfigurationError(f"encryption={mode!r} is not understood: use 'on' or 'off'")
    configured = options.get("encryption_keys")
    if configured:
        if not isinstance(configured, Mapping):
            raise ConfigurationError(
                "encryption_keys must be a dict of key id -> base64 key, "
                f"got {type(configured).__name__}"
            )
        keys = {str(k): decode_key(str(k), str(v)) for k, v in configured.items()}
        active = str(options.get("encryption_key_id") or next(iter(keys)))
        if active not in keys:
            raise ConfigurationError(
                f"encryption_key_id {active!r} is not among encryption_keys {sorted(keys)}"
            )
        return KeyRing(keys, active)
    if environ.get(ENV_VAR):
        keys, active = parse_env(environ[ENV_VAR])
        return KeyRing(keys, active)
    raise ConfigurationError(f"tq has no encryption key; {HOW_TO_GET_A_KEY}")


def generate_key_line(key_id: str | None = None) -> str:
    """A fresh ``<id>:<base64 of 32 random bytes>`` line for TQ_ENCRYPTION_KEYS; the
    default id is the UTC time plus 8 random hex digits, unique even within a second."""
    key_id = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
    decode_key(key_id, base64.b64encode(b"\0" * KEY_BYTES).decode())  # validates the id
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
