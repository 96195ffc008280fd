"""RedisStore: the production store, for many workers on many machines.

Every key of one queue shares the hash tag ``{<prefix>:<queue>}`` so that a queue's
scripts touch one cluster slot. Atomic operations are Lua scripts in ``lua/``.

Key names (see :func:`prefix_in_keys`): ``{<prefix>:<queue>}:<part>`` for a queue's
keys, ``<prefix>:bindings:<exchange>`` and ``<prefix>:workers``. The prefix is written
as it is when it holds only letters, digits, ``_``, ``.``, ``-`` and ``~`` (``tq``, the
default), and percent-encoded otherwise; so it never holds ``:`` and two prefixes never
share a key, whatever the queue names (``tq`` + queue ``staging:emails`` and
``tq:staging`` + queue ``emails`` are different queues).
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
from urllib.parse import quote

import redis
from redis.commands.core import Script

from ..errors import ConfigurationError, StoreError, StoreUnavailable
from ..options import OPTIONS, check_option, names
from .base import (
    Binding,
    DeadLetter,
    Delivery,
    FetchResult,
    Lease,
    MessageInfo,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    RetentionPolicy,
    State,
    Store,
    WorkerBeat,
)
from .redis_wait import SocketWaiter
from .retention import retention_from_options
from .waiting import Waiter

#: Ready scores are (255 - priority) * SEQ_SPAN + sequence (see enqueue.lua).
SEQ_SPAN = 2**44
# The order of a queue's keys, as the Lua scripts expect them (see fetch.lua).
QUEUE_KEYS = (
    "ready",
    "delayed",
    "inflight",
    "dead",
    "waiting",
    "meta",
    "bodies",
    "seq",
    "marker",
    "expiring",
    "lifetime",
)
#: Keys of a queue that fetch does not read: the exchanges it is bound to (a set).
OTHER_QUEUE_KEYS = ("exchanges",)
STATE_KEYS = {
    State.READY: "ready",
    State.DELAYED: "delayed",
    State.INFLIGHT: "inflight",
    State.DEAD: "dead",
    State.WAITING: "waiting",
}
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
        self._prefix = prefix_in_keys(key_prefix)
        self._scripts: dict[str, Script] = {}
        self._key_cache: dict[str, dict[str, str]] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Open ``redis://[user:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        Recognised options: the ``redis`` ones of :data:`tq_kombu.options.OPTIONS`
        (``key_prefix``, timeouts), the redis-py connection options listed in
        ``REDIS_OPTIONS`` and the dead-letter retention; others are ignored (they belong
        to the transport).
        """
        kwargs = {k: v for k, v in options.items() if k in REDIS_OPTIONS and v is not None}
        for name in names("redis"):
            passed_as = OPTIONS[name].passed_as
            if passed_as and options.get(name) is not None:
                kwargs[passed_as] = check_option(name, options[name])
        try:
            client = redis.Redis.from_url(url, health_check_interval=10, **kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"cannot use Redis URL {url!r}: {exc}") from exc
        return cls(
            client,
            key_prefix=check_option("key_prefix", options.get("key_prefix") or "tq"),
            retention=retention_from_options(options),
        )

    # -- keys and scripts --------------------------------------------------
    def keys_of(self, queue: str) -> dict[str, str]:
        """The key names of one queue, all under one hash tag."""
        keys = self._key_cache.get(queue)
        if keys is None:
            tag = "{" + f"{self._prefix}:{queue}" + "}"
            keys = {name: f"{tag}:{name}" for name in QUEUE_KEYS + OTHER_QUEUE_KEYS}
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
        keys = self._keys(
            queue,
            "ready",
            "delayed",
            "waiting",
            "meta",
            "bodies",
            "seq",
            "marker",
            "expiring",
            "lifetime",
        )
        args = [
            message.message_id,
            message.payload,
            message.priority,
            _ms_or_empty(message.eta),
            "waiting" if message.waiting else "auto",
            message.task_name,
            message.task_id,
            "" if message.ttl_seconds is None else max(int(message.ttl_seconds * 1000), 0),
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
        lease_ms = max(int(lease_seconds * 1000), 1)
        return self._fetch(
            queues, [max_count, consumer_id, lease_ms, max_deliveries, *skip_task_names]
        )

    def take(self, queues: Sequence[str], max_count: int) -> FetchResult:
        """fetch.lua with a lease of 0 ms: the messages are removed, not leased."""
        return self._fetch(queues, [max_count, "", 0, 1])

    def _fetch(self, queues: Sequence[str], args: list[Any]) -> FetchResult:
        queues = list(dict.fromkeys(queues))
        keys: list[str] = []
        for queue in queues:
            keys.extend(self._keys(queue, *QUEUE_KEYS))
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
        sealed = _meta(raw).get("f")
        try:
            return base64.b64decode(sealed) if isinstance(sealed, str) and sealed else b""
        except ValueError:
            return b""

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
                created = _meta(raw).get("c")
                if isinstance(created, int | float):
                    oldest[priority] = min(oldest.get(priority, created), created)
        return {p: (n, oldest[p] / 1000 if p in oldest else None) for p, n in counts.items()}

    # -- inspect and administer ---------------------------------------------
    def queues(self) -> list[str]:
        """Queues with a metadata hash (Redis deletes a hash with its last field), found
        with SCAN: an administrative call, not a hot path."""
        head = "{" + f"{self._prefix}:"
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
        meta = _meta(raw)
        if raw and not meta:
            # unreadable metadata (the next fetch sets the message aside as corrupt)
            return MessageInfo(queue, message_id, state, 0, 0, "", "", dead_detail=CORRUPT_META)

        def number(name: str, scale: float = 1) -> float | None:
            value = meta.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value / scale
            return None

        def text(name: str) -> str | None:
            value = meta.get(name)
            return value if isinstance(value, str) else None

        return MessageInfo(
            queue=queue,
            message_id=message_id,
            state=state,
            priority=int(number("p") or 0),
            delivery_count=int(number("n") or 0),
            task_name=text("t") or "",
            task_id=text("i") or "",
            eta=number("e", 1000),
            dead_reason=text("r"),
            dead_detail=text("x"),
            created_at=number("c", 1000),
            dead_at=number("d", 1000),
            hostname=text("h") or None,
            attempts=None if number("a") is None else int(number("a") or 0),
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
            self.client.zrem(self._expiring_queues_key, queue)

    # -- queue lifetime ----------------------------------------------------
    @property
    def _expiring_queues_key(self) -> str:
        return f"{self.key_prefix}:expiring-queues"

    def declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        keys = [self.keys_of(queue)["lifetime"], self._expiring_queues_key]
        args = [
            queue,
            _ms_or_empty(lifetime.expires_seconds),
            _ms_or_empty(lifetime.message_ttl_seconds),
        ]
        self._run("declare_queue", keys, args)

    def lifetime(self, queue: str) -> QueueLifetime | None:
        with _translated():
            record = self.client.hgetall(self.keys_of(queue)["lifetime"])
        if not record:
            return None
        expires, ttl = record.get(b"expires"), record.get(b"ttl")
        return QueueLifetime(
            expires_seconds=None if expires is None else int(expires) / 1000,
            message_ttl_seconds=None if ttl is None else int(ttl) / 1000,
        )

    def expire_queues(self) -> list[str]:
        """Candidates from the index, each checked and deleted by expire_queue.lua."""
        now_ms = int(time.time() * 1000)
        with _translated():
            due = self.client.zrangebyscore(self._expiring_queues_key, "-inf", now_ms)
        gone = []
        for raw in due:
            queue = raw.decode()
            keys = self.keys_of(queue)
            ordered = [self._expiring_queues_key, keys["lifetime"], keys["exchanges"]]
            ordered += [key for name, key in keys.items() if name not in ("lifetime", "exchanges")]
            exchanges = self._run("expire_queue", ordered, [queue])
            if exchanges is None:
                continue
            gone.append(queue)
            for exchange in exchanges:
                self._unbind_queue(exchange.decode(), queue)
        return gone

    def _unbind_queue(self, exchange: str, queue: str) -> None:
        key = self._bindings_key(exchange)
        with _translated():
            fields = [f for f in self.client.hkeys(key) if json.loads(f)[2] == queue]
            if fields:
                self.client.hdel(key, *fields)

    # -- bindings ----------------------------------------------------------
    def _bindings_key(self, exchange: str) -> str:
        return f"{self._prefix}:bindings:{exchange}"

    @staticmethod
    def _binding_field(binding: Binding) -> str:
        return json.dumps([binding.routing_key, binding.pattern, binding.queue])

    def bind(self, binding: Binding, expires_seconds: float | None = None) -> None:
        expires_at = 0 if expires_seconds is None else time.time() + expires_seconds
        with _translated(), self.client.pipeline(transaction=False) as pipe:
            pipe.hset(
                self._bindings_key(binding.exchange), self._binding_field(binding), expires_at
            )
            pipe.sadd(self.keys_of(binding.queue)["exchanges"], binding.exchange)
            pipe.execute()

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
            self.client.hset(f"{self._prefix}:workers", worker, beat)

    def workers(self) -> list[WorkerBeat]:
        key = f"{self._prefix}:workers"
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
    def new_waiter(self) -> Waiter:
        """BZPOPMIN on the marker keys, on a dedicated connection the loop watches."""
        return SocketWaiter(self)

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


def prefix_in_keys(key_prefix: str) -> str:
    """``key_prefix`` as key names hold it: unchanged if it has only letters, digits,
    ``_.-~``, percent-encoded otherwise (so it holds no ``:``, ``{`` or ``}``)."""
    return quote(key_prefix, safe="")


#: The dead detail shown for a message whose metadata record cannot be read.
CORRUPT_META = "its metadata record cannot be read"


def _meta(raw: bytes | None) -> dict[str, Any]:
    """A metadata record, or {} when it is missing or unreadable (never raises)."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms_or_empty(timestamp: float | None) -> str:
    """A Unix time in whole milliseconds for the scripts, or "" for none."""
    return "" if timestamp is None else str(int(timestamp * 1000))


__all__ = ["RedisStore", "QUEUE_KEYS", "OTHER_QUEUE_KEYS", "prefix_in_keys"]
