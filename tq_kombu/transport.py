"""The tq kombu transport: kombu's virtual AMQP emulation mapped onto a Store.

Select it with ``broker_url = "tq+redis://..."`` / ``"tq+sqlite:///path.db"`` (after
``import tq_kombu``), or with ``broker_transport = "tq_kombu.transport:Transport"``
and a plain ``redis://`` or ``sqlite:///`` URL.
"""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any

from kombu.transport import virtual

from . import options as tq_options
from .channel import DELIVERY_PROPERTY, HOSTNAME, Channel, QoS, parse_eta
from .envelope import Envelope, envelope_from_settings
from .errors import StoreError, StoreUnavailable
from .eventloop import DrainWait, EventLoopConsumer
from .held import HeldLeases, held_leases
from .lease import LeaseKeeper
from .queue_lifetime import QueueKeeper
from .store import open_store
from .store.model import DeadLetter, DeadReason, Lease, QueueLifetime
from .urls import broker_url_of
from .urls import store_url as checked_store_url

logger = logging.getLogger(__name__)

__all__ = [
    "DELIVERY_PROPERTY",
    "HOSTNAME",
    "STORE_OPTIONS",
    "Channel",
    "QoS",
    "Transport",
    "parse_eta",
]

#: Transport options the store reads (the others configure the channel and the envelope).
STORE_OPTIONS = tq_options.names(*tq_options.STORE_LAYERS)


TQChannel = Channel  # the name Channel is taken inside Transport by kombu's convention


class Transport(virtual.Transport):
    """kombu transport over a tq Store (Redis or SQLite)."""

    Channel = Channel

    #: No sleep between polls: waits block in the store instead.
    polling_interval = None  # type: ignore[assignment]
    driver_name = "tq"
    #: kombu hands over the whole URL as the hostname instead of parsing it (and filling
    #: in localhost:6379 where a part is missing): see :mod:`tq_kombu.urls`.
    can_parse_url = True

    # Every store offers a waiter (tq_kombu.store.waiting): consume in the event loop.
    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
    )
    connection_errors = virtual.Transport.connection_errors + (StoreUnavailable,)  # type: ignore[assignment]
    channel_errors = virtual.Transport.channel_errors + (StoreError,)  # type: ignore[assignment]

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        url = self.store_url(client)
        #: Every tq option, checked, defaults filled in (see tq_kombu.options).
        self.settings = tq_options.settings(client.transport_options)
        self.envelope: Envelope = envelope_from_settings(self.settings)
        store_options = self._store_options(client, self.settings)
        self.store = open_store(url, **store_options)
        self.store.set_dependency_record_ttl(self.settings["dependency_record_ttl_seconds"])
        #: The leases this process holds in the store, shared with the transports that
        #: replace this one after a lost connection (see tq_kombu.held).
        self.held: HeldLeases = held_leases(url, store_options, self.store)
        self.lease_seconds = float(self.settings["lease_seconds"])
        self.driver_type = self.store.driver_type
        self.lease_keeper = LeaseKeeper(self.store, float(self.settings["lease_seconds"]))
        self.queue_keeper = QueueKeeper(
            self.store,
            self._consumed_queues,
            float(self.settings["queue_sweep_interval_seconds"]),
        )
        self.lease_keeper.periodic.append(self.queue_keeper.refresh)
        self._event_loop: EventLoopConsumer[TQChannel] | None = None
        self._drain_wait: DrainWait[TQChannel] | None = None

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # no default hostname or port: a URL without a host is an error, never localhost
        return {}

    @staticmethod
    def store_url(client: Any) -> str:
        """The store URL of a kombu Connection, checked: ``tq+redis://...`` (kombu hands
        over ``redis://...`` with ``uri_prefix="tq"``) or, in the settings-only form, the
        plain ``redis://``, ``rediss://`` or ``sqlite:///`` URL."""
        return checked_store_url(broker_url_of(client))

    @staticmethod
    def _store_options(client: Any, settings: dict[str, Any]) -> dict[str, Any]:
        selected = {k: v for k, v in settings.items() if k in STORE_OPTIONS}
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
        if self._drain_wait is not None:
            self._drain_wait.close()
            self._drain_wait = None
        self.store.close()
        self.held.retire_if_idle()

    def _collect(self, connection: Any) -> None:
        """kombu's clean-up after a lost connection (Celery then reconnects): close the
        channels without giving back what the worker is still running."""
        for channel in [*self._avail_channels, *self.channels]:
            channel.connection_lost = True
        self.close_connection(connection)

    # -- delivery --------------------------------------------------------------
    def _deliver(self, message: Any, queue: str) -> None:
        """Hand a message to its consumer. One that makes kombu or Celery raise (a shape
        the checks in :mod:`.message_check` did not foresee) is set aside as dead
        (``malformed``) instead of taking the worker down; store errors propagate."""
        try:
            super()._deliver(message, queue)
        except (*self.connection_errors, *self.channel_errors):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is the message's fault
            self._bury_undeliverable(message, queue, exc)

    def _bury_undeliverable(self, message: Any, queue: str, exc: Exception) -> None:
        tag = str(message["properties"]["delivery_tag"])
        for channel in self.channels:
            if tag in channel.qos._delivered:
                channel.qos._quick_ack(tag)  # its prefetch credit is free again
        lease = self.unhold(tag)
        detail = f"the consumer failed on it: {type(exc).__name__}: {exc}"[:1000]
        logger.error(
            "tq: message in queue %r could not be consumed (%s)%s",
            queue,
            detail,
            "; set aside as dead" if lease else "",
            exc_info=True,
        )
        if lease is not None:
            self.store.bury(lease, DeadLetter(DeadReason.MALFORMED, detail, hostname=HOSTNAME))

    # -- leases of delivered messages ----------------------------------------
    def hold(self, delivery_tag: str, lease: Lease) -> None:
        self.held.hold(lease, self.lease_seconds, delivery_tag)

    def unhold(self, delivery_tag: str) -> Lease | None:
        """Stop holding a delivery, to settle it here; its lease, if it was held."""
        return self.held.take(delivery_tag)

    # -- queues with a lifetime, kept (with their bindings) while consumed ----
    def keep_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        self.queue_keeper.declare(queue, lifetime)
        if lifetime.expires_seconds is not None:
            self.lease_keeper.tighten(lifetime.expires_seconds / 3)
            self.lease_keeper.start()

    def _consumed_queues(self) -> list[str]:
        return [q for ch in list(self.channels) if not ch.closed for q in list(ch._active_queues)]

    # -- consuming without an event loop -----------------------------------
    def _consuming_channels(self) -> list[TQChannel]:
        return [ch for ch in self.channels if ch._active_queues and not ch.closed]

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            channels = self._consuming_channels()
            for channel in channels:
                # one no-ack message per call: kombu callers (pidbox's _collect with a
                # limit) count calls, and a taken message cannot be given back
                if channel.qos.can_consume() and channel.fetch_and_deliver(take_max=1):
                    return
            remaining = self.wait_timeout(channels)
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise TimeoutError()
                remaining = min(remaining, left)
            if channels:
                self._wait_for_work(channels, remaining)
            else:
                # nothing to consume: let the caller's loop run
                from time import sleep

                sleep(min(remaining, 0.05))

    def _wait_for_work(self, channels: list[TQChannel], timeout_seconds: float) -> None:
        """Block until a consumed queue may have work, an ack from another thread
        returns prefetch credit, or the timeout passes."""
        if self._drain_wait is None:
            self._drain_wait = DrainWait(self.store.new_waiter)
        self._drain_wait.wait(channels, timeout_seconds, self.store.wait)

    def credit_returned(self) -> None:
        """An ack or reject freed prefetch credit: a waiting consumer fetches at once."""
        if self._event_loop is not None:
            self._event_loop.credit_returned()
        if self._drain_wait is not None:
            self._drain_wait.credit_returned()

    def wait_timeout(self, channels: list[TQChannel]) -> float:
        """How long to block: until the next delayed message or lease is due, at most a second."""
        longest = min(
            (ch.wait_timeout_seconds for ch in channels), default=Channel.wait_timeout_seconds
        )
        dues = [ch.next_due for ch in channels if ch.next_due is not None]
        if dues:
            return max(min(longest, min(dues) - time()), 0.001)
        return longest

    # -- consuming in the worker's event loop --------------------------------
    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self._leave_event_loop()
        self._event_loop = EventLoopConsumer(
            loop, self._consuming_channels, self.store.new_waiter, self.wait_timeout
        )
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
        if self._drain_wait is not None:
            self._drain_wait.forget(channel)
        super().close_channel(channel)
