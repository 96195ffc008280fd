"""The consumer ids of this process's open channels, so that a worker's heartbeat can
say which leases it holds (a lease records its consumer id, see ``fetch``).

A forked child (a prefork pool process) starts with none: its parent's channels, and
the leases they hold, are the parent's.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from typing import Any

_lock = threading.Lock()
_open: dict[str, weakref.ReferenceType[Any]] = {}


def track(channel: Any) -> str:
    """A fresh consumer id for ``channel``, listed by :func:`consumer_ids` while it is open."""
    consumer_id = uuid.uuid4().hex[:16]
    with _lock:
        _open[consumer_id] = weakref.ref(channel)
    return consumer_id


def consumer_ids() -> list[str]:
    """The consumer ids of this process's channels still open (oldest first)."""
    with _lock:
        for consumer_id, ref in list(_open.items()):
            channel = ref()
            if channel is None or getattr(channel, "closed", False):
                del _open[consumer_id]
        return list(_open)


def _forget_all() -> None:
    _open.clear()


os.register_at_fork(after_in_child=_forget_all)
