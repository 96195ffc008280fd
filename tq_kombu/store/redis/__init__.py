"""RedisStore: the production store, for many workers on many machines.

One module per slice of the contract (:mod:`.hot_path`, :mod:`.dead_letters`,
:mod:`.inspection`, :mod:`.administration`, :mod:`.routing`, :mod:`.workers`,
:mod:`.dependencies`, :mod:`.limits`), all over
one client (:mod:`.client`); key names in :mod:`.keys`; the blocking wait in
:mod:`.waiting`. Atomic operations are Lua commands in ``lua/`` (one per file, with its
KEYS/ARGV header) built from the snippets of ``lua/includes/`` by :mod:`.scripts`.
"""

from __future__ import annotations

from typing import Any

import redis

from ...options import check_option
from ..contract import Store
from ..model import RetentionPolicy
from ..retention import retention_from_options
from .administration import RedisAdministration
from .client import REDIS_OPTIONS, connect
from .dead_letters import RedisDeadLetters
from .dependencies import RedisDependencies
from .hot_path import RedisHotPath
from .inspection import RedisInspection
from .keys import QUEUE_KEYS, SCORE_SPAN, prefix_in_keys
from .limits import RedisLimits
from .routing import RedisRouting
from .waiting import SocketWaiter
from .workers import RedisWorkers

__all__ = [
    "QUEUE_KEYS",
    "REDIS_OPTIONS",
    "SCORE_SPAN",
    "RedisStore",
    "SocketWaiter",
    "prefix_in_keys",
]


class RedisStore(
    RedisHotPath,
    RedisDeadLetters,
    RedisDependencies,  # before the Inspection slice it builds on
    RedisInspection,
    RedisAdministration,
    RedisRouting,
    RedisWorkers,
    RedisLimits,
    Store,
):
    """Messages in per-queue sorted sets and hashes (see :data:`.keys.QUEUE_KEYS`)."""

    driver_type = "redis"

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str = "tq",
        retention: RetentionPolicy | None = None,
    ) -> None:
        self._setup(client, key_prefix, retention or RetentionPolicy())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Open ``redis://[user:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        Recognised options: the ``redis`` ones of :data:`tq_kombu.options.OPTIONS`
        (``key_prefix``, timeouts), the redis-py connection options listed in
        :data:`REDIS_OPTIONS` and the dead-letter retention; others are ignored (they
        belong to the transport).
        """
        return cls(
            connect(url, options),
            key_prefix=check_option("key_prefix", options.get("key_prefix") or "tq"),
            retention=retention_from_options(options),
        )
