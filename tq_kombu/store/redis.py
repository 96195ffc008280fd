"""RedisStore: the production store, for many workers on many machines.

Every key of one queue shares the hash tag ``{<prefix>:<queue>}`` so that a queue's
scripts touch one cluster slot. Atomic operations are Lua scripts in ``lua/``.
"""

from __future__ import annotations

import base64
import json
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from ..errors import ConfigurationError, StoreError, StoreUnavailable
from .base import (
    Binding,
    DeadLetter,
    Delivery,
    FetchResult,
    Lease,
    MessageInfo,
    NewMessage,
    QueueCounts,
    RetentionPolicy,
    State,
    Store,
    WorkerBeat,
)
from .retention import retention_from_options

#: Ready scores are (255 - priority) * SEQ_SPAN + sequence (see enqueue.lua).
SEQ_SPAN = 2**44
# The order of a queue's keys, as the Lua scripts expect them (see fetch.lua).
QUEUE_KEYS = ("ready", "delayed", "inflight", "dead", "waiting", "meta", "bodies", "seq", "marker")
STATE_KEYS = {
    State.READY: "ready",
    State.DELAYED: "delayed",
    State.INFLIGHT: "inflight",
    State.DEAD: "dead",
    State.WAITING: "waiting",
}
REDIS_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
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


def _load_script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


@contextmanager
def _translated() -> Iterator[None]:
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


class RedisStore(Store):
    """Messages in per-queue sorted sets and hashes; see ``lua/*.lua`` for the layout."""

    driver_type = "redis"

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str = "tq",
        retention: RetentionPolicy | None = None,
    ) -> None:
        #: redis-py types replies as bytes | str; with decode_responses off they are bytes.
        self.client: Any = client
        self.retention = retention or RetentionPolicy()
        self.key_prefix = key_prefix
        self._scripts: dict[str, Script] = {}
        self._key_cache: dict[str, dict[str, str]] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Open ``redis://[user:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        Recognised options: ``key_prefix`` and the redis-py connection options
        listed in ``REDIS_OPTIONS``; others are ignored (they belong to the transport).
        """
        kwargs = {k: v for k, v in options.items() if k in REDIS_OPTIONS and v is not None}
        try:
            client = redis.Redis.from_url(url, health_check_interval=10, **kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"cannot use Redis URL {url!r}: {exc}") from exc
        return cls(
            client,
            key_prefix=str(options.get("key_prefix") or "tq"),
            retention=retention_from_options(options),
        )

    # -- keys and scripts --------------------------------------------------
    def keys_of(self, queue: str) -> dict[str, str]:
        """The key names of one queue, all under one hash tag."""
        keys = self._key_cache.get(queue)
        if keys is None:
            tag = "{" + f"{self.key_prefix}:{queue}" + "}"
            keys = {name: f"{tag}:{name}" for name in QUEUE_KEYS}
            self._key_cache[queue] = keys
        return keys

    def _keys(self, queue: str, *names: str) -> list[str]:
        keys = self.keys_of(queue)
        return [keys[name] for name in names]

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self.client.register_script(_load_script(name))
            self._scripts[name] = script
        return script

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with _translated():
            return self._script(name)(keys=keys, args=args)

    # -- connection --------------------------------------------------------
    def ping(self) -> None:
        with _translated():
            self.client.ping()

    def close(self) -> None:
        self.client.connection_pool.disconnect()

    # -- publish -----------------------------------------------------------
    def enqueue(self, queue: str, message: NewMessage) -> None:
        keys = self._keys(queue, "ready", "delayed", "waiting", "meta", "bodies", "seq", "marker")
        args = [
            message.message_id,
            message.payload,
            message.priority,
            _ms_or_empty(message.eta),
            "waiting" if message.waiting else "auto",
            message.task_name,
            message.task_id,
        ]
        self._run("enqueue", keys, args)

    def bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        from ..priority import normalize_priority

        keys = self._keys(
            queue, "ready", "delayed", "waiting", "inflight", "dead", "meta", "bodies"
        )
        policy = self.retention
        args = [
            message.message_id,
            message.payload,
            normalize_priority(message.priority),
            _ms_or_empty(message.eta),
            message.task_name,
            message.task_id,
            *_dead_args(dead),
            "" if dead.delivery_count is None else int(dead.delivery_count),
            _ms_or_empty(dead.first_seen),
            int((time.time() - policy.ttl_seconds) * 1000),
            policy.max_per_queue,
        ]
        before = self._run("bury_message", keys, args).decode()
        return None if before == "stored" else State(before)

    # -- consume -----------------------------------------------------------
    def fetch(
        self,
        queues: Sequence[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: Collection[str] = (),
    ) -> FetchResult:
        queues = list(dict.fromkeys(queues))
        keys: list[str] = []
        for queue in queues:
            keys.extend(self.keys_of(queue).values())
        args = [max_count, consumer_id, int(lease_seconds * 1000), max_deliveries, *skip_task_names]
        reply = self._run("fetch", keys, args)
        deliveries = []
        if int(reply[2]):
            for queue in queues:
                self.trim_dead(queue, self.retention)
        for i in range(3, len(reply), 7):
            index, message_id, payload, priority, count, token, created_ms = reply[i : i + 7]
            lease = Lease(queues[int(index)], message_id.decode(), token.decode())
            created = int(created_ms) / 1000 if int(created_ms) else None
            deliveries.append(Delivery(lease, payload, int(priority), int(count), created))
        next_due = None if int(reply[1]) < 0 else int(reply[1]) / 1000
        return FetchResult(deliveries, bool(reply[0]), next_due)

    def marker_keys(self, queues: Sequence[str]) -> list[str]:
        """The keys a consumer blocks on (BZPOPMIN) to learn that ``queues`` changed."""
        return [self.keys_of(queue)["marker"] for queue in queues]

    def wait(self, queues: Sequence[str], timeout_seconds: float) -> None:
        if not queues or timeout_seconds <= 0:
            return
        with _translated():
            self.client.bzpopmin(self.marker_keys(queues), timeout=timeout_seconds)

    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> list[Lease]:
        by_queue: dict[str, list[Lease]] = defaultdict(list)
        for lease in leases:
            by_queue[lease.queue].append(lease)
        lost: list[Lease] = []
        for queue, held in by_queue.items():
            args: list[Any] = [int(lease_seconds * 1000)]
            for lease in held:
                args += [lease.message_id, lease.token]
            keys = self._keys(queue, "inflight", "meta")
            positions = self._run("renew", keys, args)
            lost += [held[int(position) - 1] for position in positions]
        return lost

    def _settle(self, action: str, lease: Lease, dead: DeadLetter | None = None) -> bool:
        keys = self._keys(
            lease.queue, "ready", "inflight", "dead", "meta", "bodies", "seq", "marker"
        )
        args = [action, lease.message_id, lease.token, *_dead_args(dead)]
        return bool(self._run("settle", keys, args))

    def ack(self, lease: Lease) -> bool:
        return self._settle("ack", lease)

    def release(self, lease: Lease) -> bool:
        return self._settle("release", lease)

    def requeue(self, lease: Lease) -> bool:
        return self._settle("requeue", lease)

    def bury(self, lease: Lease, dead: DeadLetter) -> bool:
        buried = self._settle("bury", lease, dead)
        if buried:
            self.trim_dead(lease.queue, self.retention)
        return buried

    def replay(
        self, queue: str, message_id: str, to_queue: str | None = None, priority: int | None = None
    ) -> bool:
        from ..priority import normalize_priority

        source = self._keys(queue, "dead", "meta", "bodies")
        target = self._keys(to_queue or queue, "ready", "meta", "bodies", "seq", "marker")
        new_priority = "" if priority is None else normalize_priority(priority)
        return bool(self._run("replay", source + target, [message_id, new_priority]))

    def replay_many(
        self,
        queue: str,
        message_ids: Iterable[str],
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """One replay.lua call per message, sent in pipelined batches of 500."""
        from ..priority import normalize_priority

        keys = self._keys(queue, "dead", "meta", "bodies")
        keys += self._keys(to_queue or queue, "ready", "meta", "bodies", "seq", "marker")
        new_priority = "" if priority is None else normalize_priority(priority)
        script = self._script("replay")
        ids = list(message_ids)
        replayed = 0
        for start in range(0, len(ids), 500):
            with _translated(), self.client.pipeline(transaction=False) as pipe:
                for message_id in ids[start : start + 500]:
                    script(keys=keys, args=[message_id, new_priority], client=pipe)
                replayed += sum(int(done) for done in pipe.execute())
        return replayed

    def trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        cutoff_ms = int((time.time() - policy.ttl_seconds) * 1000)
        keys = self._keys(queue, "dead", "meta", "bodies")
        return int(self._run("trim_dead", keys, [cutoff_ms, policy.max_per_queue]))

    def dead_failure(self, queue: str, message_id: str) -> bytes:
        with _translated():
            raw = self.client.hget(self.keys_of(queue)["meta"], message_id)
        sealed = json.loads(raw).get("f") if raw else None
        return base64.b64decode(sealed) if sealed else b""

    def ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        """Counts from the ready scores; arrival times from every ready message's
        metadata, read in pages (an administrative call, not a hot path)."""
        keys = self.keys_of(queue)
        with _translated():
            scored = self.client.zrange(keys["ready"], 0, -1, withscores=True)
        counts: dict[int, int] = {}
        oldest: dict[int, float] = {}
        for start in range(0, len(scored), 1000):
            page = scored[start : start + 1000]
            with _translated():
                metas = self.client.hmget(keys["meta"], [member for member, _ in page])
            for (_, score), raw in zip(page, metas, strict=True):
                priority = 255 - int(score) // SEQ_SPAN
                counts[priority] = counts.get(priority, 0) + 1
                created = json.loads(raw).get("c") if raw else None
                if created is not None:
                    oldest[priority] = min(oldest.get(priority, created), created)
        return {p: (n, oldest[p] / 1000 if p in oldest else None) for p, n in counts.items()}

    # -- inspect and administer ---------------------------------------------
    def queues(self) -> list[str]:
        """Queues with a metadata hash (Redis deletes a hash with its last field), found
        with SCAN: an administrative call, not a hot path."""
        head = "{" + f"{self.key_prefix}:"
        tail = "}:meta"
        pattern = _glob_escape(head) + "*" + _glob_escape(tail)
        found = set()
        with _translated():
            for key in self.client.scan_iter(match=pattern, count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                if name.startswith(head) and name.endswith(tail):
                    found.add(name[len(head) : -len(tail)])
        return sorted(found)

    def counts(self, queue: str) -> QueueCounts:
        keys = self.keys_of(queue)
        with _translated(), self.client.pipeline(transaction=False) as pipe:
            for state in State:
                pipe.zcard(keys[STATE_KEYS[state]])
            sizes = dict(zip(State, pipe.execute(), strict=True))
        return QueueCounts(
            ready=sizes[State.READY],
            delayed=sizes[State.DELAYED],
            inflight=sizes[State.INFLIGHT],
            dead=sizes[State.DEAD],
            waiting=sizes[State.WAITING],
        )

    def _state_of(self, queue: str, message_id: str) -> State | None:
        keys = self.keys_of(queue)
        with _translated(), self.client.pipeline(transaction=False) as pipe:
            for state in State:
                pipe.zscore(keys[STATE_KEYS[state]], message_id)
            scores = pipe.execute()
        for state, score in zip(State, scores, strict=True):
            if score is not None:
                return state
        return None

    def _describe(
        self, queue: str, message_id: str, state: State, raw: bytes | None
    ) -> MessageInfo:
        meta = json.loads(raw) if raw else {}
        eta = meta.get("e")
        return MessageInfo(
            queue=queue,
            message_id=message_id,
            state=state,
            priority=int(meta.get("p", 0)),
            delivery_count=int(meta.get("n", 0)),
            task_name=meta.get("t", ""),
            task_id=meta.get("i", ""),
            eta=None if eta is None else eta / 1000,
            dead_reason=meta.get("r"),
            dead_detail=meta.get("x"),
            created_at=meta["c"] / 1000 if "c" in meta else None,
            dead_at=meta["d"] / 1000 if "d" in meta else None,
            hostname=meta.get("h") or None,
            attempts=None if meta.get("a") is None else int(meta["a"]),
        )

    def info(self, queue: str, message_id: str) -> MessageInfo | None:
        state = self._state_of(queue, message_id)
        if state is None:
            return None
        with _translated():
            raw = self.client.hget(self.keys_of(queue)["meta"], message_id)
        return self._describe(queue, message_id, state, raw)

    def list_messages(
        self, queue: str, state: State, offset: int = 0, limit: int = 100
    ) -> list[MessageInfo]:
        keys = self.keys_of(queue)
        with _translated():
            ids = [
                raw.decode()
                for raw in self.client.zrange(keys[STATE_KEYS[state]], offset, offset + limit - 1)
            ]
            metas = self.client.hmget(keys["meta"], ids) if ids else []
        return [self._describe(queue, mid, state, raw) for mid, raw in zip(ids, metas, strict=True)]

    def payload(self, queue: str, message_id: str) -> bytes | None:
        with _translated():
            value = self.client.hget(self.keys_of(queue)["bodies"], message_id)
        return value if isinstance(value, bytes) else None

    def cancel(self, queue: str, message_id: str) -> bool:
        keys = self._keys(queue, "ready", "delayed", "waiting", "meta", "bodies")
        return bool(self._run("cancel", keys, [message_id]))

    def set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        from ..priority import normalize_priority

        keys = self._keys(queue, "ready", "delayed", "waiting", "meta")
        return bool(self._run("set_priority", keys, [message_id, normalize_priority(priority)]))

    def release_waiting(self, queue: str, message_id: str) -> bool:
        keys = self._keys(queue, "waiting", "delayed", "ready", "meta", "seq", "marker")
        return bool(self._run("release_waiting", keys, [message_id]))

    def purge(self, queue: str, state: State = State.READY) -> int:
        keys = self.keys_of(queue)
        return int(self._run("purge", [keys[STATE_KEYS[state]], keys["meta"], keys["bodies"]], []))

    def delete_queue(self, queue: str) -> None:
        with _translated():
            self.client.delete(*self.keys_of(queue).values())

    # -- bindings ----------------------------------------------------------
    def _bindings_key(self, exchange: str) -> str:
        return f"{self.key_prefix}:bindings:{exchange}"

    @staticmethod
    def _binding_field(binding: Binding) -> str:
        return json.dumps([binding.routing_key, binding.pattern, binding.queue])

    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        expires_at = 0 if expires_seconds is None else time.time() + expires_seconds
        with _translated():
            self.client.hset(
                self._bindings_key(binding.exchange), self._binding_field(binding), expires_at
            )

    def unbind(self, binding: Binding) -> None:
        with _translated():
            self.client.hdel(self._bindings_key(binding.exchange), self._binding_field(binding))

    def bindings(self, exchange: str) -> list[Binding]:
        key = self._bindings_key(exchange)
        with _translated():
            entries = self.client.hgetall(key)
        now = time.time()
        live, expired = [], []
        for field, expires_at in entries.items():
            if 0 < float(expires_at) < now:
                expired.append(field)
                continue
            routing_key, pattern, queue = json.loads(field)
            live.append(Binding(exchange, routing_key, pattern, queue))
        if expired:
            with _translated():
                self.client.hdel(key, *expired)
        return live

    # -- workers -----------------------------------------------------------
    def heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        now = time.time()
        beat = json.dumps({"seen": now, "expires": now + ttl_seconds, "info": info})
        with _translated():
            self.client.hset(f"{self.key_prefix}:workers", worker, beat)

    def workers(self) -> list[WorkerBeat]:
        key = f"{self.key_prefix}:workers"
        with _translated():
            entries = self.client.hgetall(key)
        now = time.time()
        alive, gone = [], []
        for name, raw in entries.items():
            beat = json.loads(raw)
            if beat["expires"] < now:
                gone.append(name)
            else:
                alive.append(WorkerBeat(name.decode(), beat["seen"], beat["info"]))
        if gone:
            with _translated():
                self.client.hdel(key, *gone)
        return alive

    # -- event-loop support (used by the transport) --------------------------
    def new_connection(self) -> redis.connection.Connection:
        """A dedicated connection for a consumer's blocking wait in an event loop."""
        pool = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def send_wait(
        self, connection: redis.connection.Connection, queues: Sequence[str], timeout_seconds: float
    ) -> None:
        """Send BZPOPMIN on ``connection`` without reading the reply (see :meth:`read_wait`)."""
        with _translated():
            connection.send_command("BZPOPMIN", *self.marker_keys(queues), f"{timeout_seconds:.3f}")

    @staticmethod
    def read_wait(connection: redis.connection.Connection) -> None:
        with _translated():
            connection.read_response()


def _dead_args(dead: DeadLetter | None) -> list[str]:
    """The reason, detail, sealed failure (base64), hostname and attempts arguments of the
    scripts (see settle.lua and bury_message.lua)."""
    if dead is None:
        return ["", "", "", "", ""]
    return [
        str(dead.reason),
        dead.detail,
        base64.b64encode(dead.failure).decode(),
        dead.hostname,
        "" if dead.attempts is None else str(int(dead.attempts)),
    ]


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms_or_empty(timestamp: float | None) -> str:
    """A Unix time in whole milliseconds for the scripts, or "" for none."""
    return "" if timestamp is None else str(int(timestamp * 1000))


__all__ = ["RedisStore", "QUEUE_KEYS"]
