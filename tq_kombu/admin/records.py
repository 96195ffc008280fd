"""Reading what the store keeps, for people: message fields, states and reasons given on
a command line, envelope headers, decoded bodies, failure records."""

from __future__ import annotations

import base64
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

from ..errors import ConfigurationError
from ..store.model import DeadReason, MessageInfo, State


def message_fields(info: MessageInfo) -> dict[str, Any]:
    """A message's metadata as plain JSON-ready fields (the names of MessageInfo)."""
    fields = asdict(info)
    fields["state"] = info.state.value
    return fields


def parse_state(state: State | str) -> State:
    try:
        return State(state)
    except ValueError:
        choices = ", ".join(s.value for s in State)
        raise ConfigurationError(f"unknown state {state!r}: use one of {choices}") from None


def parse_reason(reason: str) -> str:
    """A dead-letter reason tq records (a bad filter raises ConfigurationError)."""
    try:
        return DeadReason(reason).value
    except ValueError:
        choices = ", ".join(r.value for r in DeadReason)
        raise ConfigurationError(f"unknown reason {reason!r}: use one of {choices}") from None


def envelope_header(payload: bytes) -> dict[str, Any]:
    """What the stored envelope says in clear: version, compression, key id, size."""
    if len(payload) < 3:
        return {"bytes": len(payload), "readable": False}
    compression = {0: "none", 1: "zlib", 2: "zstd"}.get(payload[1], f"unknown ({payload[1]})")
    header: dict[str, Any] = {
        "version": payload[0],
        "encrypted": payload[0] == 2,
        "compression": compression,
        "bytes": len(payload),
    }
    if payload[0] == 2:
        header["key_id"] = payload[3 : 3 + payload[2]].decode(errors="replace")
    return header


def decode_body(message: Mapping[str, Any]) -> Any:
    """The task body of a kombu message, deserialized when the content type allows."""
    from kombu.serialization import loads

    body = message.get("body")
    if message.get("properties", {}).get("body_encoding") == "base64" and isinstance(body, str):
        body = base64.b64decode(body)
    try:
        return loads(
            body,
            message.get("content-type") or "application/json",
            message.get("content-encoding") or "utf-8",
            accept={"application/json", "application/x-msgpack", "application/x-yaml"},
        )
    except Exception:  # noqa: BLE001 - pickle and unknown types are shown, not run
        return repr(body)[:2000]


def failure_record(exc: BaseException, tb: Any = None) -> dict[str, Any]:
    """The record kept (sealed) for a failed task."""
    return {
        "exc_type": type(exc).__name__,
        "exc_message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)),
    }


def page_of(items: Iterator[MessageInfo], offset: int, limit: int) -> list[MessageInfo]:
    page: list[MessageInfo] = []
    for i, item in enumerate(items):
        if i >= offset + limit:
            break
        if i >= offset:
            page.append(item)
    return page
