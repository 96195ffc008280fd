"""Message priorities: integers 0..255, higher is more urgent (the AMQP convention)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from .errors import PriorityError

MIN_PRIORITY = 0
MAX_PRIORITY = 255


class Priority(IntEnum):
    """Named priority levels; any integer in 0..255 is valid too."""

    LOW = 1
    NORMAL = 5
    HIGH = 10
    URGENT = 15


DEFAULT_PRIORITY = int(Priority.NORMAL)


def normalize_priority(value: Any) -> int:
    """Return ``value`` as a priority; ``None`` means NORMAL; anything else invalid raises."""
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, bool) or not isinstance(value, int):
        raise PriorityError(
            f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY} "
            f"(or a tq_kombu.Priority level), got {value!r}"
        )
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise PriorityError(
            f"priority {value} is out of range: use {MIN_PRIORITY}..{MAX_PRIORITY}, "
            "higher is more urgent (tq_kombu.Priority.LOW=1, NORMAL=5, HIGH=10, URGENT=15)"
        )
    return int(value)
