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


def _publishes_to_tq(app: Any) -> bool:
    conf = app.conf
    url = conf.broker_write_url or conf.broker_url or ""
    url = url[0] if isinstance(url, (list, tuple)) and url else url
    return str(url).startswith("tq") or "tq_kombu" in str(conf.broker_transport or "")


def _normal_when_unset(properties: dict[str, Any] | None = None, **_: Any) -> None:
    """Celery leaves ``priority`` out when a task has none, and kombu then sends 0 (the
    lowest level): give such tasks NORMAL instead, as tq documents (tq brokers only)."""
    if properties is None or properties.get("priority") is not None:
        return
    from celery import current_app

    if _publishes_to_tq(current_app):
        properties["priority"] = DEFAULT_PRIORITY


def connect_celery_default_priority() -> None:
    """Make tasks published to tq without a priority NORMAL (Celery's before_task_publish)."""
    try:
        from celery.signals import before_task_publish
    except ImportError:  # kombu without Celery: nothing to do
        return
    before_task_publish.connect(_normal_when_unset, weak=False, dispatch_uid="tq-default-priority")
