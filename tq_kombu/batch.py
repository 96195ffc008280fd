"""Publishing many messages in one atomic step: a per-thread buffer the channel fills.

While a batch is open in a thread, the channel's ``_put`` does everything a publish
does (routing, priority, ETA, sealing, dependency headers) but, instead of storing the
message, appends it here; closing the batch stores them all with one
:meth:`~tq_kombu.store.contract.Dependencies.enqueue_many` (all or nothing). An error
inside the batch, or while storing it, stores nothing. Batches nest: the outermost one
stores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import StoreError, TQError

if TYPE_CHECKING:
    from .store import Store
    from .store.model import NewMessage

_local = threading.local()


class BatchError(TQError):
    """A batch of messages could not be stored; none of them was."""


@dataclass
class Batch:
    """The messages published by one thread since the batch opened, not stored yet."""

    items: list[tuple[str, NewMessage]] = field(default_factory=list)
    store: Store | None = None

    def add(self, store: Store, queue: str, message: NewMessage) -> None:
        if self.store is None:
            self.store = store
        self.items.append((queue, message))

    def flush(self) -> int:
        """Store every buffered message in one atomic step; return how many."""
        items, self.items = self.items, []
        if not items or self.store is None:
            return 0
        try:
            self.store.enqueue_many(items)
        except (StoreError, ValueError) as exc:
            tasks = ", ".join(sorted({m.task_name or m.message_id for _, m in items})[:5])
            raise BatchError(
                f"none of the {len(items)} messages of this batch was stored ({tasks}...): {exc}"
            ) from exc
        return len(items)


def current() -> Batch | None:
    """The batch open in this thread, if any."""
    return getattr(_local, "batch", None)


@contextmanager
def batch() -> Iterator[Batch]:
    """Buffer every message this thread publishes; store them all at exit, atomically."""
    outer = current()
    if outer is not None:
        yield outer
        return
    opened = Batch()
    _local.batch = opened
    try:
        yield opened
    except BaseException:
        opened.items.clear()
        raise
    finally:
        _local.batch = None
    opened.flush()
