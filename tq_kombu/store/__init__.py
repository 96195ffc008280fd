"""Storage backends behind the tq transport, chosen by the broker URL's scheme."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .contract import Store

__all__ = ["Store", "open_store"]


def open_store(url: str, **options: Any) -> Store:
    """Open the store a URL names: ``redis://``, ``rediss://``, ``sqlite:///path`` or
    ``memory://[name]`` (this process only: tests), checked first (see :mod:`tq_kombu.urls`)."""
    from ..urls import check_store_url

    check_store_url(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        return RedisStore.from_url(url, **options)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url, **options)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore.from_url(url, **options)
    raise ConfigurationError(
        f"tq cannot store on {url!r}: use redis://host:port/db, rediss://... "
        "or sqlite:///path/to/queue.db (with the tq+ prefix in broker_url)"
    )
