"""The tq kombu channel: publishing into a Store and consuming from it with leases.

One channel maps kombu's virtual AMQP emulation onto the Store: ``_put`` seals and
enqueues, ``fetch_and_deliver`` leases (or, for no-ack consumers, takes) a batch,
opens each envelope and hands it to kombu, and QoS settles each delivery through the
process's held leases. Declarations keep queue lifetimes and bindings in the store.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments

from . import batch as tq_batch
from . import consumers as tq_consumers
from . import dependencies as tq_dependencies
from . import handback
from . import options as tq_options
from .envelope import Envelope, EnvelopeError
from .limit_headers import limit_tags
from .priority import DEFAULT_PRIORITY, MAX_PRIORITY, normalize_priority
from .queue_lifetime import lifetime_of, message_ttl_seconds
from .store import Store
from .store.model import (
    Binding,
    DeadLetter,
    Delivery,
    FetchResult,
    NewMessage,
    State,
)

if TYPE_CHECKING:
    from .held import HeldLeases
    from .transport import Transport

logger = logging.getLogger(__name__)
HOSTNAME = socket.gethostname()
#: The message property telling a task's request where its message lives in the store.
DELIVERY_PROPERTY = "tq_delivery"


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
        self._credit_returned()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.channel.settle(delivery_tag, "requeue" if requeue else "reject")
        self._quick_ack(delivery_tag)
        self._credit_returned()

    def _credit_returned(self) -> None:
        connection = self.channel.connection
        if connection is not None:  # None: a channel closed with its lost connection
            connection.credit_returned()

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        """Return every message held but unacknowledged (warm shutdown, close; see
        tq_kombu.handback). After a lost connection, one stays held while the worker
        references it (a running task acks it later), released once it is dropped."""
        self._flush()
        errors: list[tuple[BaseException, Any]] = []
        lost = self.channel.connection_lost
        while self._delivered:
            tag, message = self._delivered.popitem()
            if lost:
                self.channel.held.orphan(tag, message)
                continue
            try:
                self.channel.settle(tag, handback.return_action(tag))
            except BaseException as exc:  # noqa: BLE001 - reported by kombu's caller
                errors.append((exc, message))
        return errors


class Channel(virtual.Channel):
    """One kombu channel: publishes into and consumes from the transport's Store."""

    QoS = QoS
    connection: Transport

    # Defaults and checks of these options: tq_kombu.options.OPTIONS.
    #: Seconds a delivered message stays leased without renewal; renewed every third.
    lease_seconds: float = tq_options.OPTIONS["lease_seconds"].default
    #: Deliveries after which a message is set aside as dead (reason ``max_deliveries``).
    max_deliveries: int = tq_options.OPTIONS["max_deliveries"].default
    #: Most messages fetched in one round trip when prefetch is unlimited.
    fetch_batch_max: int = tq_options.OPTIONS["fetch_batch_max"].default
    #: Longest single blocking wait in seconds before fetching again anyway.
    wait_timeout_seconds: float = tq_options.OPTIONS["wait_timeout_seconds"].default
    #: Expiry of auto-delete queues declared without ``x-expires`` (see queue_lifetime).
    auto_delete_expires_seconds: float = tq_options.OPTIONS["auto_delete_expires_seconds"].default

    default_priority = DEFAULT_PRIORITY
    min_priority = 0
    max_priority = MAX_PRIORITY
    supports_fanout = True
    do_restore = True

    from_transport_options = (
        virtual.Channel.from_transport_options + tq_options.names("channel")  # type: ignore[assignment]
    )

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        # kombu copied the raw values of from_transport_options: use the checked ones
        given = getattr(connection.client, "transport_options", None) or {}
        for name in tq_options.names("channel"):
            if given.get(name) is not None:
                setattr(self, name, connection.settings[name])
        self.consumer_id = tq_consumers.track(self)
        self._tags: Iterator[int] = count(1)
        #: Queues consumed without acknowledgement: their messages are taken, not leased.
        self._no_ack_queues: set[str] = set()
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
        tq_dependencies.move_to_headers(message["headers"], message["properties"])
        return message

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        properties = message["properties"]
        headers = message.get("headers") or {}
        limits = limit_tags(headers)  # LimitKeyError: refused before anything is stored
        message_id = properties.get("delivery_tag") or uuid.uuid4().hex
        new = NewMessage(
            message_id=message_id,
            payload=self.envelope.seal(message_id, message),
            priority=normalize_priority(properties.get("priority")),
            eta=parse_eta(headers),
            task_name=str(headers.get("task") or ""),
            task_id=str(headers.get("id") or ""),
            ttl_seconds=message_ttl_seconds(properties),
            limits=limits,
            **tq_dependencies.store_fields(headers, time.time()),
        )
        batch = tq_batch.current()
        if batch is not None:
            batch.add(self.store, queue, new)
        else:
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
    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Keep a Queue's ``expires`` and ``message_ttl`` as x-expires / x-message-ttl
        (kombu's virtual channel drops them) for :meth:`_new_queue`."""
        return dict(to_rabbitmq_queue_arguments(arguments, **kwargs))

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        lifetime = lifetime_of(kwargs, self.auto_delete_expires_seconds)
        if lifetime.expires_seconds is not None or lifetime.message_ttl_seconds is not None:
            self.connection.keep_queue(queue, lifetime)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        binding = Binding(exchange, routing_key or "", pattern or "", queue)
        keeper = self.connection.queue_keeper
        self.store.bind(binding, keeper.expires_seconds(queue))
        keeper.bound(binding)

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
        self.connection.queue_keeper.forget(queue)
        self.store.delete_queue(queue)

    def _size(self, queue: str) -> int:
        return self.store.counts(queue).ready

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue, State.READY)

    # -- consume -----------------------------------------------------------
    def consumed_queues(self) -> list[str]:
        return list(dict.fromkeys(self._active_queues))

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Get one message; without ack it is taken from the store (never leased)."""
        if not no_ack:
            return super().basic_get(queue, no_ack, **kwargs)
        while True:
            deliveries = self.store.take([queue], 1).deliveries
            if not deliveries:
                return None
            message = self._open(deliveries[0])
            if message is not None:
                return self.Message(message, channel=self)

    def fetch_and_deliver(self, take_max: int | None = None) -> int:
        """Hand kombu the messages of no-ack queues (taken: up to ``take_max``, gone from
        the store) and of the other queues (leased: as many as prefetch allows)."""
        queues = self.consumed_queues()
        if not queues:
            self.maybe_more = False
            return 0
        no_ack = [queue for queue in queues if queue in self._no_ack_queues]
        acked = [queue for queue in queues if queue not in self._no_ack_queues]
        results: list[FetchResult] = []
        more = False
        if no_ack:
            results.append(self.store.take(no_ack, take_max or self.fetch_batch_max))
        if acked:
            credit = self.qos.can_consume_max_estimate()
            wanted = self.fetch_batch_max if credit is None else min(credit, self.fetch_batch_max)
            if wanted > 0:
                results.append(self._fetch(acked, wanted))
            else:
                more = self.maybe_more
        if not results:
            return 0
        self.maybe_more = more or any(result.more_ready for result in results)
        dues = [result.next_due for result in results if result.next_due is not None]
        self.next_due = min(dues) if dues else None
        delivered = 0
        undelivered = [delivery for result in results for delivery in result.deliveries]
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
            leased = [delivery.lease for delivery in undelivered if delivery.lease.token]
            if leased:  # a delivery raised: give the rest of the batch back
                self.held.release_unsettled(leased)
        return delivered

    def _fetch(self, queues: list[str], wanted: int) -> FetchResult:
        """Fetch, holding every lease taken at once: the whole batch is renewed from
        here, however long the worker takes to get to its last message."""
        result = self.store.fetch(
            queues, wanted, self.consumer_id, self.lease_seconds, self.max_deliveries
        )
        leases = [delivery.lease for delivery in result.deliveries]
        if leases:
            self.held.hold_batch(leases, self.lease_seconds)
        return result

    def _open(self, delivery: Delivery) -> dict[str, Any] | None:
        """The kombu message of a delivery, leased to this channel; None if unreadable."""
        lease = delivery.lease
        try:
            message = self.envelope.open(lease.message_id, delivery.payload)
        except EnvelopeError as exc:
            logger.error(
                "tq: message %s in queue %r cannot be consumed and was set aside as dead "
                "(%s): %s%s",
                lease.message_id,
                lease.queue,
                exc.reason,
                exc,
                f" ({exc.explanation})" if exc.explanation else "",
            )
            detail = str(exc) if exc.key_id is None else f"key {exc.key_id}: {exc}"
            dead = DeadLetter(exc.reason, detail, hostname=HOSTNAME)
            if lease.token:
                self.store.bury(lease, dead)
            else:  # taken (no-ack): the store no longer holds it
                kept = NewMessage(lease.message_id, delivery.payload, delivery.priority)
                self.store.bury_payload(lease.queue, kept, dead)
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
        redelivered = delivery.delivery_count > 1
        message["redelivered"] = redelivered
        # kombu's Message (and so Celery's request) reads delivery_info from the properties
        delivery_info = message["properties"].setdefault("delivery_info", {})
        if isinstance(delivery_info, dict):
            delivery_info["redelivered"] = redelivered
        if lease.token:  # taken messages (no-ack) have no lease to keep
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
