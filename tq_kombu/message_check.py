"""Checks that an opened message has the shape kombu's virtual channel and Celery's
consumer read without checking, so that a malformed one is set aside instead of
crashing a worker (kombu ``virtual.Message``: properties, body, body_encoding,
delivery_info; Celery's consumer and ``Request``: headers and their fields).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .errors import TQError

#: Celery (protocol 2) headers that must be text when present: the consumer looks the task
#: up by name and the request keys itself by id, outside any error handling. (Others, e.g.
#: ``eta``/``expires``, Celery checks itself; kombu's pidbox sends ``expires`` as a number.)
TEXT_HEADERS = ("task", "id")
#: Celery headers that must be text or null when present.
OPTIONAL_TEXT_HEADERS = ("shadow", "root_id", "parent_id", "group")
#: Properties that must be text or null when present.
OPTIONAL_TEXT_PROPERTIES = ("reply_to", "correlation_id", "body_encoding")


class MalformedMessage(TQError, ValueError):
    """Opened bytes that are not a message kombu and Celery can consume."""


def check_message(message: Any) -> None:
    """Raise :class:`MalformedMessage` naming the first thing wrong with ``message``."""
    if not isinstance(message, dict):
        raise MalformedMessage(f"message is {_kind(message)}, not a mapping")
    properties = message.get("properties")
    if not isinstance(properties, dict):
        raise MalformedMessage(f"properties is {_kind(properties)}, not a mapping")
    if not isinstance(properties.get("delivery_info", {}), dict):
        raise MalformedMessage("properties.delivery_info is not a mapping")
    _check_optional_text(properties, OPTIONAL_TEXT_PROPERTIES, "properties")
    if "body" not in message:
        raise MalformedMessage("message has no body")
    body = message["body"]
    if not isinstance(body, str):
        raise MalformedMessage(f"body is {_kind(body)}, not text")
    _check_body_encoding(body, properties.get("body_encoding"))
    _check_optional_text(message, ("content-type", "content-encoding"), "field")
    headers = message.get("headers")
    if not isinstance(headers, dict):
        raise MalformedMessage(f"headers is {_kind(headers)}, not a mapping")
    _check_celery_headers(headers)


def _check_body_encoding(body: str, encoding: str | None) -> None:
    if encoding is None or encoding.lower() == "utf-8":
        return
    if encoding != "base64":
        raise MalformedMessage(f"body_encoding {encoding!r} is unknown (kombu knows base64)")
    try:
        base64.b64decode(body.encode())
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"body is not valid base64: {exc}") from exc


def _check_celery_headers(headers: Mapping[str, Any]) -> None:
    for name in TEXT_HEADERS:
        if name in headers and not isinstance(headers[name], str):
            raise MalformedMessage(f"header {name!r} is {_kind(headers[name])}, not text")
    _check_optional_text(headers, OPTIONAL_TEXT_HEADERS, "header")
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(v is None or _is_number(v) for v in limits)
    ):
        raise MalformedMessage(f"header 'timelimit' is {limits!r}, not [soft, hard] seconds")


def _check_optional_text(mapping: Mapping[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        value = mapping.get(name)
        if value is not None and not isinstance(value, str):
            raise MalformedMessage(f"{where} {name!r} is {_kind(value)}, not text")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"
