"""MemoryStore: the reference store, in one process's memory.

It keeps every message in one dict per queue and does each operation under one lock,
so it is the plainest statement of the Store contract: the model the property tests
compare Redis and SQLite with, and a fast broker for unit tests of code that uses tq
(``broker_url = "tq+memory://"``; stores of the same name share their messages within
a process, like kombu's own ``memory://``). Nothing survives the process.

Ordering is as on SQLite: one counter stamps a message whenever it becomes ready, and
ready messages are handed out by priority (higher first), then by that stamp, across
every queue a fetch names. The clock is injectable (``clock=``) for tests. The hooks
take values the contract's public methods have already checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ...errors import ConfigurationError
from ..contract import Store
from ..retention import retention_from_options
from .administration import MemoryRest
from .hot_path import MemoryHotPath

__all__ = ["MemoryStore"]


class MemoryStore(MemoryHotPath, MemoryRest, Store):
    """A :class:`~tq_kombu.store.contract.Store` held in this process (see the module doc)."""

    driver_type = "memory"

    _shared: dict[str, MemoryStore] = {}
    _shared_lock = threading.Lock()

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        """The process-wide store named by ``memory://[name]`` (one per name)."""
        scheme, sep, name = url.partition("://")
        if not sep or scheme.lower() != "memory":
            raise ConfigurationError(f"{url!r} is not a memory URL: use memory:// or memory://name")
        with cls._shared_lock:
            store = cls._shared.get(name)
            if store is None:
                store = cls._shared[name] = cls()
        store.retention = retention_from_options(options)
        return store

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release: the messages stay for the next user of the store."""
