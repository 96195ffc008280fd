"""Input checks shared by every store: the contract's public methods run them once, then
call the backend's hooks with values known to be good."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ...errors import ConfigurationError
from ...priority import normalize_priority
from ..model import Lease, NewMessage, State

__all__ = [
    "checked_count",
    "checked_lease",
    "checked_message",
    "checked_priority",
    "checked_queue",
    "checked_queues",
    "checked_seconds",
    "checked_state",
]

checked_priority = normalize_priority


def checked_queue(queue: Any, what: str = "queue") -> str:
    """A queue name: a non-empty string."""
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"{what} must be a non-empty queue name, got {queue!r}")
    return queue


def checked_queues(queues: Iterable[Any]) -> list[str]:
    """Queue names, each once, in the order given."""
    if isinstance(queues, str):
        raise ConfigurationError(f"queues must be a list of queue names, got the string {queues!r}")
    return list(dict.fromkeys(checked_queue(queue) for queue in queues))


def checked_count(value: Any, name: str, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def checked_seconds(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, greater than 0 (or at least 0)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "greater than 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def checked_state(state: Any) -> State:
    try:
        return State(state)
    except ValueError:
        raise ConfigurationError(
            f"unknown message state {state!r}: use one of {', '.join(s.value for s in State)}"
        ) from None


def checked_lease(lease: Any) -> Lease:
    if not isinstance(lease, Lease):
        raise ConfigurationError(f"expected a Lease from fetch, got {type(lease).__name__}")
    return lease


def checked_leases(leases: Iterable[Any]) -> list[Lease]:
    return [checked_lease(lease) for lease in leases]


def checked_message(message: Any) -> NewMessage:
    """A message to store, its priority normalized (0..255, None means NORMAL)."""
    if not isinstance(message, NewMessage):
        raise ConfigurationError(f"expected a NewMessage, got {type(message).__name__}")
    if not isinstance(message.message_id, str) or not message.message_id:
        raise ConfigurationError(
            f"a message id must be a non-empty string, got {message.message_id!r}"
        )
    if not isinstance(message.payload, bytes | bytearray | memoryview):
        raise ConfigurationError(f"a payload must be bytes, got {type(message.payload).__name__}")
    if message.eta is not None:
        checked_seconds(message.eta, "eta (Unix time)", allow_zero=True)
    if message.ttl_seconds is not None:
        checked_seconds(message.ttl_seconds, "ttl_seconds", allow_zero=True)
    if message.depends_on or message.dependency_deadline is not None:
        checked_dependencies(message)
    if message.limits:
        from .limits import checked_tag

        if not isinstance(message.limits, tuple):
            raise ConfigurationError(f"limits must be a tuple of LimitTag, got {message.limits!r}")
        for tag in message.limits:
            checked_tag(tag)
    priority = normalize_priority(message.priority)
    if priority == message.priority and isinstance(message.payload, bytes):
        return message
    from dataclasses import replace

    return replace(message, priority=priority, payload=bytes(message.payload))


#: Most parents one message may depend on (a bigger fan-in: chain it through a join task).
MAX_PARENTS = 1000
ON_PARENT_FAILURE = ("dead", "run")


def checked_dependencies(message: NewMessage) -> None:
    """Parents: distinct non-empty task ids, at most :data:`MAX_PARENTS`, never the
    message's own task id; a known ``on_parent_failure``; a finite deadline."""
    parents = message.depends_on
    if not isinstance(parents, tuple) or not all(isinstance(p, str) and p for p in parents):
        raise ConfigurationError(
            f"depends_on must be a tuple of non-empty task ids, got {parents!r}"
        )
    if len(set(parents)) != len(parents):
        raise ConfigurationError(f"depends_on names a parent twice: {list(parents)!r}")
    if len(parents) > MAX_PARENTS:
        raise ConfigurationError(
            f"a task may depend on at most {MAX_PARENTS} parents, got {len(parents)}: "
            "join them through an intermediate task"
        )
    if message.task_id and message.task_id in parents:
        raise ConfigurationError(f"task {message.task_id} cannot depend on itself")
    if message.on_parent_failure not in ON_PARENT_FAILURE:
        raise ConfigurationError(
            f"on_parent_failure must be one of {ON_PARENT_FAILURE}, "
            f"got {message.on_parent_failure!r}"
        )
    if message.dependency_deadline is not None:
        checked_seconds(message.dependency_deadline, "dependency_deadline (Unix time)")
    if parents and message.waiting:
        raise ConfigurationError("a message waits either on parents or on an operator, not both")


def names(values: Sequence[Any]) -> list[str]:
    """Task names to skip: strings, each once."""
    return sorted({str(value) for value in values})
