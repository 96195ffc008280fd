"""The Redis connection every slice of the store shares, and error translation.

Fork safety comes from redis-py: a connection pool used in a child process (a prefork
pool worker) notices the new process id and opens its own connections, so a store may
be opened before Celery forks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from ...errors import ConfigurationError, StoreError, StoreUnavailable
from ...options import OPTIONS, check_option, names
from ..model import RetentionPolicy
from .caller import ScriptCaller
from .keys import KeyNames
from .scripts import Scripts

__all__ = ["REDIS_OPTIONS", "RedisShared", "connect", "translated"]

#: redis-py options taken as they are: TLS ones come from Celery's broker_use_ssl.
REDIS_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "password",
    "username",
)

#: Error replies of a server that is restarting, failing over or busy: worth a retry.
TRANSIENT_REPLIES = frozenset(
    ["LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"]
)


@contextmanager
def translated() -> Iterator[None]:
    """Turn redis-py errors into the tq error tree."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis.RedisError as exc:
        if str(exc).split(" ", 1)[0].upper() in TRANSIENT_REPLIES:
            # a restart, failover or slow script: the worker reconnects and tries again
            raise StoreUnavailable(f"Redis is not serving right now: {exc}") from exc
        raise StoreError(f"Redis refused a tq operation: {exc}") from exc


def connect(url: str, options: dict[str, Any]) -> redis.Redis:
    """A redis-py client for ``redis://...`` or ``rediss://...`` with the recognised
    options: the ``redis`` ones of :data:`tq_kombu.options.OPTIONS` (timeouts) and the
    redis-py connection options of :data:`REDIS_OPTIONS`; others are not for it."""
    kwargs = {k: v for k, v in options.items() if k in REDIS_OPTIONS and v is not None}
    for name in names("redis"):
        passed_as = OPTIONS[name].passed_as
        if passed_as and options.get(name) is not None:
            kwargs[passed_as] = check_option(name, options[name])
    try:
        return redis.Redis.from_url(url, health_check_interval=10, **kwargs)
    except ValueError as exc:
        raise ConfigurationError(f"cannot use Redis URL {url!r}: {exc}") from exc


class RedisShared:
    """What every slice of the Redis store works with: one client, the key names, the
    registered scripts and the dead-letter retention policy."""

    #: redis-py types replies as bytes | str; with decode_responses off they are bytes.
    client: Any
    keys: KeyNames
    scripts: Scripts
    caller: ScriptCaller
    retention: RetentionPolicy
    #: How long completion records live (the Dependencies slice's option).
    dependency_record_ttl_seconds: float
    #: Queues seen holding limited messages: their fetches pass the limits key.
    limited_queues: set[str]

    def _setup(self, client: redis.Redis, key_prefix: str, retention: RetentionPolicy) -> None:
        self.client = client
        self.keys = KeyNames(key_prefix)
        self.scripts = Scripts(client)
        self.caller = ScriptCaller(client)
        self.retention = retention
        self.limited_queues = set()

    @property
    def key_prefix(self) -> str:
        return self.keys.key_prefix

    def keys_of(self, queue: str) -> dict[str, str]:
        """The key names of one queue by part, all under one hash tag."""
        return self.keys.queue(queue)

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script ``name`` (see ``lua/``), errors translated."""
        with translated():
            return self.caller(self.scripts.get(name), keys, args)

    def _retention_args(self) -> list[int]:
        """The retention ARGV of the scripts that set messages aside: kept ms, most kept."""
        policy = self.retention
        return [max(int(policy.ttl_seconds * 1000), 0), int(policy.max_per_queue)]

    def _record_ttl_ms(self) -> int:
        """The completion record TTL argument of the scripts where messages may die."""
        return max(int(self.dependency_record_ttl_seconds * 1000), 1)

    def ping(self) -> None:
        with translated():
            self.client.ping()

    def close(self) -> None:
        self.caller.close()
        self.client.connection_pool.disconnect()
