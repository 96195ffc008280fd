"""Task dependencies as they travel in a message: publish options -> headers -> store fields.

Celery hands ``apply_async`` options it does not know to kombu as message properties.
:func:`move_to_headers` (called by the channel's ``prepare_message``) takes them out of
the properties, checks them and keeps them as headers, sealed in the payload with the
rest of the message:

- ``depends_on`` -> header ``tq_depends_on`` (task ids) -> ``NewMessage.depends_on``
- ``on_parent_failure`` -> ``tq_on_parent_failure`` -> ``NewMessage.on_parent_failure``
- ``dependency_timeout_seconds`` -> ``tq_dependency_timeout_seconds`` ->
  ``NewMessage.dependency_deadline`` (publish time + timeout)

Bad input raises :class:`~tq_kombu.errors.DependencyError` from ``apply_async``.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import DependencyError
from .store.contract.checks import MAX_PARENTS, ON_PARENT_FAILURE

PARENTS_HEADER = "tq_depends_on"
POLICY_HEADER = "tq_on_parent_failure"
TIMEOUT_HEADER = "tq_dependency_timeout_seconds"
#: Publish option -> header.
HEADERS = {
    "depends_on": PARENTS_HEADER,
    "on_parent_failure": POLICY_HEADER,
    "dependency_timeout_seconds": TIMEOUT_HEADER,
}
#: How long a child waits for a parent never seen, unless told otherwise (24 h).
DEFAULT_TIMEOUT_SECONDS = 24 * 3600.0


def parent_id(parent: Any) -> str:
    """The task id of one parent: a task id string, or an object with a string ``id``
    that stands for one task (Celery's AsyncResult; not a GroupResult)."""
    if isinstance(parent, str) and parent:
        return parent
    task_id = getattr(parent, "id", None)
    if isinstance(task_id, str) and task_id and not hasattr(parent, "results"):
        return task_id
    raise DependencyError(
        f"depends_on takes task ids (str) or AsyncResult objects, got {parent!r} "
        f"({type(parent).__name__}): pass the result of apply_async, or its id"
    )


def parent_ids(value: Any, task_id: str = "") -> list[str]:
    """The distinct parent ids of a ``depends_on`` value (one parent or a list), checked."""
    parents = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    ids = list(dict.fromkeys(parent_id(parent) for parent in parents))
    if task_id and task_id in ids:
        raise DependencyError(f"task {task_id} cannot depend on itself")
    if len(ids) > MAX_PARENTS:
        raise DependencyError(
            f"a task may depend on at most {MAX_PARENTS} parents, got {len(ids)}: "
            "join them through an intermediate task"
        )
    return ids


def checked_policy(value: Any) -> str:
    if value not in ON_PARENT_FAILURE:
        raise DependencyError(
            f"on_parent_failure must be one of {', '.join(map(repr, ON_PARENT_FAILURE))}, "
            f"got {value!r}"
        )
    return str(value)


def checked_timeout(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (seconds > 0 and math.isfinite(seconds)):
        raise DependencyError(
            f"dependency_timeout_seconds must be a number of seconds > 0, got {value!r}"
        )
    return seconds


def move_to_headers(headers: dict[str, Any], properties: dict[str, Any]) -> None:
    """Take the dependency options out of ``properties`` into ``headers``, checked."""
    for option, header in HEADERS.items():
        if option in properties:
            value = properties.pop(option)
            if value is not None:
                headers[header] = value
    if headers.get(PARENTS_HEADER) is None:
        for header in HEADERS.values():
            headers.pop(header, None)
        return
    ids = parent_ids(headers[PARENTS_HEADER], str(headers.get("id") or ""))
    if not ids:
        for header in HEADERS.values():
            headers.pop(header, None)
        return
    headers[PARENTS_HEADER] = ids
    headers[POLICY_HEADER] = checked_policy(headers.get(POLICY_HEADER, "dead"))
    headers[TIMEOUT_HEADER] = checked_timeout(headers.get(TIMEOUT_HEADER, DEFAULT_TIMEOUT_SECONDS))


def store_fields(headers: dict[str, Any], now: float) -> dict[str, Any]:
    """The NewMessage fields of a message's dependency headers (none: no fields)."""
    parents = headers.get(PARENTS_HEADER)
    if not parents:
        return {}
    timeout = headers.get(TIMEOUT_HEADER) or DEFAULT_TIMEOUT_SECONDS
    return {
        "depends_on": tuple(parents),
        "on_parent_failure": headers.get(POLICY_HEADER) or "dead",
        "dependency_deadline": now + float(timeout),
    }
