"""The leases a process holds in one store, kept apart from any one connection.

kombu throws a Transport and its channels away when the connection drops, while the
worker goes on running the tasks those channels delivered; their acks arrive later
through the old, closed channel. So the leases live here, one registry per store
(URL and options) per process, shared by every transport on that store:

- every lease a fetch takes is held (and renewed by the companion renewer process)
  from the fetch to its settle, delivered to the worker yet or not;
- a settle goes through whichever store connection is alive, by lease token; when the
  store is unreachable it is retried in the background while the lease holds, and a
  lease found gone is logged once;
- when a connection is lost, the messages its channel delivered stay held for as long as
  the worker still references them (a running task acks later); one the worker dropped
  is released for another consumer as soon as it is garbage.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any

from .errors import StoreError
from .renewer import Renewer
from .store.contract import Store
from .store.model import DeadLetter, DeadReason, Lease, State

logger = logging.getLogger(__name__)
HOSTNAME = socket.gethostname()
#: Seconds between retries of settles that failed because the store was unreachable.
RETRY_INTERVAL_SECONDS = 0.5
#: At most how long a process exiting waits for the store to take its pending settles.
EXIT_FLUSH_SECONDS = 5.0


class HeldLeases:
    """The leases one process holds in one store, by kombu delivery tag."""

    def __init__(self, url: str, options: dict[str, Any], store: Store) -> None:
        #: The store settles go through: the one of the newest transport.
        self.store = store
        self.renewer = Renewer(url, options, store)
        self._by_tag: dict[str, Lease] = {}
        #: Settles to make from the retry thread: tag -> (lease, action, failed before).
        self._pending: dict[str, tuple[Lease, str, bool]] = {}
        #: Messages of lost connections the worker may still settle: tag -> weak reference.
        self._orphans: dict[str, weakref.ref[Any]] = {}
        self._lock = threading.RLock()
        self._retrying: threading.Thread | None = None

    # -- holding ------------------------------------------------------------
    def hold(self, lease: Lease, lease_seconds: float, tag: str | None = None) -> None:
        """Hold (and renew) ``lease``; with ``tag``, settle it by that delivery tag later."""
        with self._lock:
            if tag is not None:
                self._by_tag[tag] = lease
        self.renewer.hold(lease, lease_seconds)

    def hold_batch(self, leases: list[Lease], lease_seconds: float) -> None:
        """Hold (and renew) every lease of a fetched batch, in one word to the renewer."""
        self.renewer.hold_many(leases, lease_seconds)

    def held(self) -> list[tuple[str, Lease]]:
        """Every (delivery tag, lease) held now, for reports (SIGUSR1)."""
        with self._lock:
            return list(self._by_tag.items())

    def forget(self, lease: Lease) -> None:
        """Stop renewing a lease settled elsewhere (e.g. set aside as unreadable)."""
        self.renewer.drop(lease)

    def take(self, tag: str) -> Lease | None:
        """Stop holding the delivery ``tag`` (its caller settles it); its lease, if held."""
        with self._lock:
            lease = self._by_tag.pop(tag, None)
            self._orphans.pop(tag, None)
        if lease is not None:
            self.renewer.drop(lease)
        return lease

    # -- settling -----------------------------------------------------------
    def settle(self, tag: str, action: str) -> None:
        """Finish a delivery: ack, requeue, reject (dead) or release. A store that cannot
        be reached does not fail the caller: the settle is retried while the lease holds."""
        with self._lock:
            lease = self._by_tag.pop(tag, None)
            self._orphans.pop(tag, None)
        if lease is None:
            return
        self.renewer.settling(lease)
        self._attempt(tag, lease, action, first=True)

    def _attempt(
        self, tag: str, lease: Lease, action: str, first: bool, retry: bool = False
    ) -> bool:
        try:
            settled = self._apply(lease, action)
        except StoreError as exc:
            if first:
                logger.warning(
                    "tq: could not %s message %s in queue %r now (%s); retrying while its "
                    "lease holds",
                    action,
                    lease.message_id,
                    lease.queue,
                    exc,
                )
            with self._lock:
                self._pending[tag] = (lease, action, True)
            self._retry_soon()
            return False
        except Exception:  # noqa: BLE001 - never leave a message held with nobody to settle it
            logger.exception(
                "tq: could not %s message %s in queue %r; it is no longer renewed and returns "
                "to its queue when its lease runs out",
                action,
                lease.message_id,
                lease.queue,
            )
            self.renewer.drop(lease)
            return False
        self.renewer.drop(lease)
        if retry:
            logger.info("tq: %s of message %s went through after a retry", action, lease.message_id)
        if not settled and action not in ("release", "give_back"):
            self._report_lost(lease, action)
        return True

    def _apply(self, lease: Lease, action: str) -> bool:
        if action == "ack":
            return self.store.ack(lease)
        if action == "requeue":
            return self.store.requeue(lease)
        if action == "give_back":
            return self.store.give_back(lease)
        if action == "reject":
            dead = DeadLetter(DeadReason.REJECTED, "rejected by the consumer", hostname=HOSTNAME)
            return self.store.bury(lease, dead)
        return self.store.release(lease)

    def _report_lost(self, lease: Lease, action: str) -> None:
        try:
            info = self.store.info(lease.queue, lease.message_id)
        except StoreError:
            info = None
        if info is not None and info.state == State.DEAD:
            # set aside by the extension while held (a task that failed for good)
            logger.debug(
                "tq: message %s was set aside as dead before its %s", lease.message_id, action
            )
            return
        logger.warning(
            "tq: could not %s message %s in queue %r: its lease had expired and it was "
            "handed out again (raise lease_seconds if workers stall)",
            action,
            lease.message_id,
            lease.queue,
        )

    # -- connections lost ----------------------------------------------------
    def orphan(self, tag: str, message: Any) -> None:
        """The channel of ``message`` closed with its connection: keep its lease while the
        worker references the message (it may still ack it), release it once it is garbage."""
        with self._lock:
            if tag not in self._by_tag:
                return
            self._orphans[tag] = weakref.ref(message, functools.partial(self._abandoned, tag))

    def _abandoned(self, tag: str, _ref: object = None) -> None:
        # Called by the garbage collector, possibly inside a store call: only note it.
        with self._lock:
            if self._orphans.pop(tag, None) is None:
                return
            lease = self._by_tag.pop(tag, None)
            if lease is not None:
                self._pending[tag] = (lease, "release", False)
        self._retry_soon()

    def release_unsettled(self, leases: list[Lease]) -> None:
        """Release leases taken by a fetch but never delivered (delivery failed)."""
        for lease in leases:
            tag = f"undelivered:{lease.message_id}:{lease.token}"
            self.renewer.settling(lease)
            self._attempt(tag, lease, "release", first=True)

    # -- retrying -------------------------------------------------------------
    def _retry_soon(self) -> None:
        if sys.is_finalizing():  # no new threads at exit: the leases just expire
            return
        with self._lock:
            if self._retrying is not None and self._retrying.is_alive():
                return
            thread = threading.Thread(
                target=self._retry_pending, name="tq-settle-retry", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: the exit flush retries
                return
            self._retrying = thread

    def _retry_pending(self) -> None:
        wake = threading.Event()
        while True:
            with self._lock:
                pending = list(self._pending.items())
                self._pending.clear()
                if not pending:
                    self._retrying = None
                    return
            for tag, (lease, action, failed) in pending:
                try:
                    self._attempt(tag, lease, action, first=not failed, retry=failed)
                except Exception:  # noqa: BLE001 - a thread of our own: report, go on
                    logger.exception("tq: could not %s message %s", action, lease.message_id)
            wake.wait(RETRY_INTERVAL_SECONDS)

    def flush(self, deadline: float) -> None:
        """Retry pending settles until none is left or ``deadline`` (monotonic) passes."""
        while time.monotonic() < deadline:
            with self._lock:
                pending = list(self._pending.items())
                self._pending.clear()
            if not pending:
                return
            for tag, (lease, action, failed) in pending:
                self._attempt(tag, lease, action, first=not failed, retry=failed)
            time.sleep(RETRY_INTERVAL_SECONDS)
        with self._lock:
            if self._pending:
                logger.warning(
                    "tq: exiting with %d settles the store did not take; their messages "
                    "return to their queues when their leases expire",
                    len(self._pending),
                )

    def retire_if_idle(self) -> None:
        """Stop the companion renewer when nothing is held (a transport closed)."""
        with self._lock:
            idle = not (self._by_tag or self._pending or self._orphans)
        if idle:
            self.renewer.close()

    def after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._by_tag.clear()
        self._pending.clear()
        self._orphans.clear()
        self._retrying = None


_REGISTRIES: dict[str, HeldLeases] = {}
_REGISTRIES_LOCK = threading.Lock()


def held_leases(url: str, options: dict[str, Any], store: Store) -> HeldLeases:
    """The process's registry for the store at ``url`` with ``options``, now settling
    through ``store`` (the newest transport's)."""
    key = f"{url}|{sorted((k, repr(v)) for k, v in options.items())}"
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = _REGISTRIES[key] = HeldLeases(url, options, store)
        registry.store = store
        return registry


def registries() -> list[HeldLeases]:
    """Every registry of this process (one per store it consumes from)."""
    with _REGISTRIES_LOCK:
        return list(_REGISTRIES.values())


def _after_fork_in_child() -> None:
    global _REGISTRIES_LOCK
    _REGISTRIES_LOCK = threading.Lock()
    for registry in _REGISTRIES.values():
        registry.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    """An ack that waits for the store should not be lost to a clean exit: give it a
    few seconds."""
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for registry in list(_REGISTRIES.values()):
        registry.flush(deadline)
