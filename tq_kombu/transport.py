"""The tq kombu transport: kombu's virtual AMQP emulation mapped onto a Store.

Select it with ``broker_url = "tq+redis://..."`` / ``"tq+sqlite:///path.db"`` (after
``import tq_kombu``), or with ``broker_transport = "tq_kombu.transport:Transport"``
and a plain ``redis://`` or ``sqlite:///`` URL.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from time import monotonic, time
from typing import Any

from kombu.transport import virtual

from .envelope import Envelope, EnvelopeError
from .errors import StoreError, StoreUnavailable
from .held import HeldLeases, held_leases
from .keyring import keyring_from_options
from .lease import LeaseKeeper
from .priority import DEFAULT_PRIORITY, MAX_PRIORITY, normalize_priority
from .store import Store, open_store
from .store.base import (
    Binding,
    DeadLetter,
    DeadReason,
    Delivery,
    FetchResult,
    Lease,
    NewMessage,
    State,
)

logger = logging.getLogger(__name__)
HOSTNAME = socket.gethostname()
#: The message property telling a task's request where its message lives in the store.
DELIVERY_PROPERTY = "tq_delivery"

#: Transport options the store reads (the others configure the channel).
STORE_OPTIONS = (
    "key_prefix",
    "poll_interval_seconds",
    "busy_timeout_seconds",
    "dead_letter_ttl_seconds",
    "dead_letter_max_per_queue",
)


def parse_eta(headers: dict[str, Any]) -> float | None:
    """The Unix time of a Celery ETA header (ISO 8601; naive means UTC), or None."""
    eta = headers.get("eta")
    if not eta:
        return None
    try:
        moment = datetime.fromisoformat(str(eta))
    except ValueError:
        logger.warning("tq: ignoring unreadable eta header %r (expected ISO 8601)", eta)
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class QoS(virtual.QoS):
    """Prefetch accounting; ack and reject settle the message's lease in the store."""

    channel: Channel

    def ack(self, delivery_tag: str) -> None:
        self.channel.settle(delivery_tag, "ack")
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.channel.settle(delivery_tag, "requeue" if requeue else "reject")
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        """Give back every message held but not acknowledged (warm shutdown, close).
        After a lost connection, a message stays held while the worker references it
        (a running task acks it later) and is released once the worker drops it."""
        self._flush()
        errors: list[tuple[BaseException, Any]] = []
        lost = self.channel.connection_lost
        while self._delivered:
            tag, message = self._delivered.popitem()
            if lost:
                self.channel.held.orphan(tag, message)
                continue
            try:
                self.channel.settle(tag, "release")
            except BaseException as exc:  # noqa: BLE001 - reported by kombu's caller
                errors.append((exc, message))
        return errors


class Channel(virtual.Channel):
    """One kombu channel: publishes into and consumes from the transport's Store."""

    QoS = QoS
    connection: Transport

    #: Seconds a delivered message stays leased without renewal; renewed every third.
    lease_seconds: float = 30.0
    #: Deliveries after which a message is set aside as dead (reason ``max_deliveries``).
    max_deliveries: int = 5
    #: Most messages fetched in one round trip when prefetch is unlimited.
    fetch_batch_max: int = 100
    #: Longest single blocking wait in seconds before fetching again anyway.
    wait_timeout_seconds: float = 1.0

    default_priority = DEFAULT_PRIORITY
    min_priority = 0
    max_priority = MAX_PRIORITY
    supports_fanout = True
    do_restore = True

    from_transport_options = virtual.Channel.from_transport_options + (  # type: ignore[assignment]
        "lease_seconds",
        "max_deliveries",
        "fetch_batch_max",
        "wait_timeout_seconds",
    )

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.consumer_id = uuid.uuid4().hex[:16]
        self._tags: Iterator[int] = count(1)
        self._expires_seconds: dict[str, float] = {}
        #: Ready messages may remain: fetch again as soon as there is credit.
        self.maybe_more = True
        #: When a delayed message comes due or a lease expires (Unix time).
        self.next_due: float | None = None
        #: The process's leases in this store: settles work after the connection is gone.
        self.held: HeldLeases = connection.held
        #: Set when kombu collects the connection after losing it (see Transport._collect).
        self.connection_lost = False

    @property
    def store(self) -> Store:
        return self.connection.store

    @property
    def envelope(self) -> Envelope:
        return self.connection.envelope

    # -- publish -----------------------------------------------------------
    def prepare_message(
        self,
        body: Any,
        priority: Any = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Build the message, checking its priority (0..255, None means NORMAL)."""
        checked = normalize_priority(priority)
        message: dict[str, Any] = super().prepare_message(
            body, checked, content_type, content_encoding, headers, properties
        )
        message["properties"]["priority"] = checked
        return message

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        properties = message["properties"]
        headers = message.get("headers") or {}
        message_id = properties.get("delivery_tag") or uuid.uuid4().hex
        new = NewMessage(
            message_id=message_id,
            payload=self.envelope.seal(message_id, message),
            priority=normalize_priority(properties.get("priority")),
            eta=parse_eta(headers),
            task_name=str(headers.get("task") or ""),
            task_id=str(headers.get("id") or ""),
        )
        self.store.enqueue(queue, new)

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any
    ) -> None:
        for queue in self._lookup(exchange, routing_key):
            self._put(queue, message)

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """Queues bound to ``exchange`` for ``routing_key``: this process's direct
        bindings first, then the bindings every process shares in the store."""
        if not exchange:
            return [routing_key or default or ""]
        exchange_type = self.typeof(exchange)
        if exchange_type.type == "direct":
            local = self.state.exchanges.get(exchange, {}).get("table") or []
            queues = [queue for key, _, queue in local if key == routing_key]
            if queues:
                return queues
        table = [(b.routing_key, b.pattern, b.queue) for b in self.store.bindings(exchange)]
        return sorted(exchange_type.lookup(table, exchange, routing_key, None))

    # -- declarations --------------------------------------------------------
    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        expires_ms = (kwargs.get("arguments") or {}).get("x-expires")
        if expires_ms:
            self._expires_seconds[queue] = float(expires_ms) / 1000

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        binding = Binding(exchange, routing_key or "", pattern or "", queue)
        expires = self._expires_seconds.get(queue)
        self.store.bind(binding, expires)
        if expires:
            self.connection.keep_binding(binding, expires)

    def _delete(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        pattern: str | None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        binding = Binding(exchange, routing_key or "", pattern or "", queue)
        self.store.unbind(binding)
        self.connection.forget_binding(binding)
        self.store.delete_queue(queue)

    def _size(self, queue: str) -> int:
        return self.store.counts(queue).ready

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue, State.READY)

    # -- consume -----------------------------------------------------------
    def consumed_queues(self) -> list[str]:
        return list(dict.fromkeys(self._active_queues))

    def fetch_and_deliver(self) -> int:
        """Lease as many messages as prefetch allows and hand them to kombu."""
        queues = self.consumed_queues()
        if not queues:
            self.maybe_more = False
            return 0
        credit = self.qos.can_consume_max_estimate()
        wanted = self.fetch_batch_max if credit is None else min(credit, self.fetch_batch_max)
        if wanted <= 0:
            return 0
        result = self._fetch(queues, wanted)
        self.maybe_more = result.more_ready
        self.next_due = result.next_due
        delivered = 0
        undelivered = list(result.deliveries)
        try:
            while undelivered:
                delivery = undelivered.pop(0)
                message = self._open(delivery)
                if message is None:
                    self.held.forget(delivery.lease)
                    continue
                self.connection._deliver(message, delivery.lease.queue)
                delivered += 1
        finally:
            if undelivered:  # a delivery raised: give the rest of the batch back
                self.held.release_unsettled([d.lease for d in undelivered])
        return delivered

    def _fetch(self, queues: list[str], wanted: int) -> FetchResult:
        """Fetch, holding every lease taken at once: the whole batch is renewed from
        here, however long the worker takes to get to its last message."""
        result = self.store.fetch(
            queues, wanted, self.consumer_id, self.lease_seconds, self.max_deliveries
        )
        for delivery in result.deliveries:
            self.held.hold(delivery.lease, self.lease_seconds)
        return result

    def _open(self, delivery: Delivery) -> dict[str, Any] | None:
        """The kombu message of a delivery, leased to this channel; None if unreadable."""
        lease = delivery.lease
        try:
            message = self.envelope.open(lease.message_id, delivery.payload)
        except EnvelopeError as exc:
            logger.error(
                "tq: message %s in queue %r cannot be read and was set aside as dead: %s",
                lease.message_id,
                lease.queue,
                exc,
            )
            detail = str(exc) if exc.key_id is None else f"key {exc.key_id}: {exc}"
            self.store.bury(lease, DeadLetter(DeadReason.UNDECRYPTABLE, detail, hostname=HOSTNAME))
            return None
        tag = f"{self.consumer_id}.{next(self._tags)}"
        message["properties"]["delivery_tag"] = tag
        message["properties"]["priority"] = delivery.priority
        # Where the message lives in the store, for the extension's dead letters (Celery
        # hands the properties to the task's request, in pool processes too).
        message["properties"][DELIVERY_PROPERTY] = {
            "queue": lease.queue,
            "message_id": lease.message_id,
            "delivery_count": delivery.delivery_count,
            "first_seen": delivery.created_at,
        }
        message["redelivered"] = delivery.delivery_count > 1
        self.connection.hold(tag, lease)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        from queue import Empty

        result = self._fetch([queue], 1)
        for delivery in result.deliveries:
            message = self._open(delivery)
            if message is not None:
                return message
            self.held.forget(delivery.lease)
        raise Empty()

    def settle(self, delivery_tag: str, action: str) -> None:
        """Finish a delivery in the store: ack, requeue, reject (dead) or release. Works
        on a channel whose connection is gone (by lease token, through a live store) and
        never fails because the store is unreachable (retried while the lease holds)."""
        self.held.settle(delivery_tag, action)


TQChannel = Channel  # the name Channel is taken inside Transport by kombu's convention


class Transport(virtual.Transport):
    """kombu transport over a tq Store (Redis or SQLite)."""

    Channel = Channel

    #: No sleep between polls: waits block in the store instead.
    polling_interval = None  # type: ignore[assignment]
    default_port = 6379  # type: ignore[assignment]
    driver_name = "tq"

    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
    )
    connection_errors = virtual.Transport.connection_errors + (StoreUnavailable,)  # type: ignore[assignment]
    channel_errors = virtual.Transport.channel_errors + (StoreError,)  # type: ignore[assignment]

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options or {}
        self.envelope = Envelope(
            keyring_from_options(options),
            compress_min_bytes=int(options.get("compress_min_bytes", 1024)),
            compression=str(options.get("compression", "zlib")),
        )
        url, store_options = self.store_url(client), self._store_options(client, options)
        self.store = open_store(url, **store_options)
        self.held = held_leases(url, store_options, self.store)
        self.lease_seconds = float(options.get("lease_seconds", Channel.lease_seconds))
        self.driver_type = self.store.driver_type
        self.implements = self.implements.extend(asynchronous=self.store.driver_type == "redis")
        self.lease_keeper = LeaseKeeper(
            self.store, float(options.get("lease_seconds", Channel.lease_seconds))
        )
        self.lease_keeper.periodic.append(self._refresh_bindings)
        self._kept_bindings: dict[Binding, float] = {}
        self._event_loop: Any = None

    @staticmethod
    def store_url(client: Any) -> str:
        """The store URL: kombu hands ``tq+redis://...`` over whole as the hostname,
        and splits a plain ``redis://`` or ``sqlite:///`` URL into its parts."""
        hostname = client.hostname or ""
        if "://" in hostname:
            return str(hostname)
        if hostname:
            scheme = "rediss" if client.ssl else "redis"
            auth = ""
            if client.password:
                auth = f"{client.userid or ''}:{client.password}@"
            vhost = str(client.virtual_host or "0").strip("/") or "0"
            return f"{scheme}://{auth}{hostname}:{client.port or 6379}/{vhost}"
        path = client.virtual_host
        if not path or path == "/":
            path = "tq.sqlite3"
        return f"sqlite:///{path}"

    @staticmethod
    def _store_options(client: Any, options: dict[str, Any]) -> dict[str, Any]:
        selected = {k: v for k, v in options.items() if k in STORE_OPTIONS}
        if isinstance(client.ssl, dict):
            selected.update(client.ssl)
        return selected

    def driver_version(self) -> str:
        return "1"

    def establish_connection(self) -> Any:
        self.store.ping()
        return super().establish_connection()

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)
        self.lease_keeper.stop()
        self._leave_event_loop()
        self.store.close()
        self.held.retire_if_idle()

    def _collect(self, connection: Any) -> None:
        """kombu's clean-up after a lost connection (Celery then reconnects): close the
        channels without giving back what the worker is still running."""
        for channel in [*self._avail_channels, *self.channels]:
            channel.connection_lost = True
        self.close_connection(connection)

    # -- leases of delivered messages ----------------------------------------
    def hold(self, delivery_tag: str, lease: Lease) -> None:
        self.held.hold(lease, self.lease_seconds, delivery_tag)

    # -- bindings with an expiry, refreshed while this process lives -------
    def keep_binding(self, binding: Binding, expires_seconds: float) -> None:
        self._kept_bindings[binding] = expires_seconds
        self.lease_keeper.tighten(expires_seconds / 3)
        self.lease_keeper.start()

    def forget_binding(self, binding: Binding) -> None:
        self._kept_bindings.pop(binding, None)

    def _refresh_bindings(self) -> None:
        for binding, expires in list(self._kept_bindings.items()):
            self.store.bind(binding, expires)

    # -- consuming without an event loop -----------------------------------
    def _consuming_channels(self) -> list[TQChannel]:
        return [ch for ch in self.channels if ch._active_queues and not ch.closed]

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            channels = self._consuming_channels()
            for channel in channels:
                if channel.qos.can_consume() and channel.fetch_and_deliver():
                    return
            remaining = self.wait_timeout(channels)
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise TimeoutError()
                remaining = min(remaining, left)
            queues = [q for ch in channels if ch.qos.can_consume() for q in ch.consumed_queues()]
            if queues:
                self.store.wait(list(dict.fromkeys(queues)), remaining)
            else:
                # nothing to consume (or no credit): let the caller's loop run
                from time import sleep

                sleep(min(remaining, 0.05))

    def wait_timeout(self, channels: list[TQChannel]) -> float:
        """How long to block: until the next delayed message or lease is due, at most a second."""
        longest = min(
            (ch.wait_timeout_seconds for ch in channels), default=Channel.wait_timeout_seconds
        )
        dues = [ch.next_due for ch in channels if ch.next_due is not None]
        if dues:
            return max(min(longest, min(dues) - time()), 0.001)
        return longest

    # -- consuming in the worker's event loop (Redis store) ----------------
    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        from .eventloop import EventLoopConsumer

        self._leave_event_loop()
        self._event_loop = EventLoopConsumer(self, loop)
        loop.on_tick.add(self._event_loop.on_tick)

    def _leave_event_loop(self) -> None:
        if self._event_loop is not None:
            self._event_loop.loop.on_tick.discard(self._event_loop.on_tick)
            self._event_loop.close()
            self._event_loop = None

    def on_readable(self, fileno: int) -> None:
        if self._event_loop is not None:
            self._event_loop.on_readable(fileno)

    def close_channel(self, channel: Any) -> None:
        if self._event_loop is not None:
            self._event_loop.forget(channel)
        super().close_channel(channel)
