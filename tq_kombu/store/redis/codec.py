"""What the scripts take and what they store: arguments in, metadata records out.

A message's metadata is a JSON object in the queue's ``meta`` hash (see
``lua/includes/meta.lua`` for its fields); reading it never raises.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..lane_ids import lane_of as shared_lane_of
from ..lane_ids import tags_of
from ..model import DeadLetter, LimitTag, MessageInfo, NewMessage, State, lease_holder

__all__ = [
    "CORRUPT_META",
    "dead_args",
    "dependency_args",
    "lane_of",
    "describe",
    "message_args",
    "ms_or_empty",
    "read_meta",
]

#: The dead detail shown for a message whose metadata record cannot be read.
CORRUPT_META = "its metadata record cannot be read"


def ms_or_empty(timestamp: float | None) -> str:
    """A Unix time (or duration) in whole milliseconds for the scripts, or "" for none."""
    return "" if timestamp is None else str(int(timestamp * 1000))


def message_args(message: NewMessage) -> list[Any]:
    """What enqueue.lua (and each message of enqueue_many.lua) takes first: id, payload,
    priority, eta, target, task name, task id, own time to live, limits (lane id)."""
    return [
        message.message_id,
        message.payload,
        message.priority,
        ms_or_empty(message.eta),
        "waiting" if message.waiting else "auto",
        message.task_name,
        message.task_id,
        "" if message.ttl_seconds is None else max(int(message.ttl_seconds * 1000), 0),
        lane_of(message.limits),
    ]


def lane_of(limits: tuple[LimitTag, ...]) -> str:
    """A message's lane id as the Redis store indexes it (see :mod:`..lane_ids`), or ""
    for a message without limits."""
    return shared_lane_of(limits) or ""


def dependency_args(message: NewMessage) -> list[Any]:
    """A message's policy on parent failure, dependency deadline (ms or "") and parents."""
    return [
        message.on_parent_failure,
        ms_or_empty(message.dependency_deadline),
        *message.depends_on,
    ]


def dead_args(dead: DeadLetter | None) -> list[str]:
    """The reason, detail, sealed failure (base64), hostname and attempts arguments of
    settle.lua and bury_message.lua."""
    if dead is None:
        return ["", "", "", "", ""]
    return [
        str(dead.reason),
        dead.detail,
        base64.b64encode(dead.failure).decode(),
        dead.hostname,
        "" if dead.attempts is None else str(int(dead.attempts)),
    ]


def read_meta(raw: bytes | None) -> dict[str, Any]:
    """A metadata record, or {} when it is missing or unreadable (never raises)."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def sealed_failure(raw: bytes | None) -> bytes:
    """The sealed failure record a dead message's metadata holds (empty if none)."""
    sealed = read_meta(raw).get("f")
    try:
        return base64.b64decode(sealed) if isinstance(sealed, str) and sealed else b""
    except ValueError:
        return b""


def describe(queue: str, message_id: str, state: State, raw: bytes | None) -> MessageInfo:
    """What a metadata record says about a message in ``state``."""
    meta = read_meta(raw)
    if raw and not meta:
        # unreadable metadata (the next fetch sets the message aside as corrupt)
        return MessageInfo(queue, message_id, state, 0, 0, "", "", dead_detail=CORRUPT_META)

    def number(name: str, scale: float = 1) -> float | None:
        value = meta.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value / scale
        return None

    def text(name: str) -> str | None:
        value = meta.get(name)
        return value if isinstance(value, str) else None

    attempts = number("a")
    return MessageInfo(
        queue=queue,
        message_id=message_id,
        state=state,
        priority=int(number("p") or 0),
        delivery_count=int(number("n") or 0),
        task_name=text("t") or "",
        task_id=text("i") or "",
        eta=number("e", 1000),
        dead_reason=text("r"),
        dead_detail=text("x"),
        created_at=number("c", 1000),
        dead_at=number("d", 1000),
        hostname=text("h") or None,
        attempts=None if attempts is None else int(attempts),
        limits=tags_of(meta.get("lm")) if isinstance(meta.get("lm"), str) else (),
        held_by=lease_holder(meta.get("l")) if state == State.INFLIGHT else None,
    )
