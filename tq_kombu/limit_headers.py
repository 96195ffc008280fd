"""The headers that carry a message's limits from the publisher to the store.

The Celery side (``tq_celery_ext.limits``) computes them at publish, before the
message is sealed; the transport reads them in ``_put`` with :func:`limit_tags` and
hands them to the store as plain metadata (like the task name), so a fetch can apply
the limits without opening the envelope. A limit key is therefore stored in the clear:
it names a tenant or a resource, never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import LimitKeyError
from .store.contract.limits import KINDS, MAX_KEY_CHARS, MAX_NAME_CHARS
from .store.model import LimitTag

__all__ = [
    "KINDS",
    "LIMITS_HEADER",
    "LIMIT_ERROR_HEADER",
    "MAX_KEY_CHARS",
    "MAX_NAME_CHARS",
    "LimitTag",
    "limit_tags",
]

#: ``[{"kind": "rate" | "concurrency", "name": ..., "key": ...}, ...]``
LIMITS_HEADER = "tq_limits"
#: Why the publisher could not compute the limits (the message must not be stored).
LIMIT_ERROR_HEADER = "tq_limit_error"


def limit_tags(headers: Mapping[str, Any]) -> tuple[LimitTag, ...]:
    """The limits a message's headers name (none: no limits); :class:`LimitKeyError`
    when the publisher said they could not be computed, or they are malformed."""
    error = headers.get(LIMIT_ERROR_HEADER)
    if error:
        raise LimitKeyError(str(error))
    entries = headers.get(LIMITS_HEADER)
    if entries is None:
        return ()
    task = headers.get("task") or "?"
    if not isinstance(entries, (list, tuple)):
        raise _malformed(task, entries)
    tags = []
    for entry in entries:
        if not isinstance(entry, Mapping) or set(entry) != {"kind", "name", "key"}:
            raise _malformed(task, entries)
        kind, name, key = entry["kind"], entry["name"], entry["key"]
        if (
            kind not in KINDS
            or not isinstance(name, str)
            or not 0 < len(name) <= MAX_NAME_CHARS
            or not isinstance(key, str)
            or len(key) > MAX_KEY_CHARS
        ):
            raise _malformed(task, entries)
        tags.append(LimitTag(kind, name, key))
    return tuple(tags)


def _malformed(task: object, entries: object) -> LimitKeyError:
    return LimitKeyError(
        f"task {task!r}: the {LIMITS_HEADER} header {entries!r} is malformed; it must be a "
        "list of {'kind': 'rate' or 'concurrency', 'name': str, 'key': str} (published by "
        "tq_celery_ext.install(app): leave it to tq)"
    )
