"""LeaseKeeper: periodic work from a thread of its own (keeping queues alive), and the
fallback renewal of leases where the companion renewer process cannot run (see
:mod:`tq_kombu.renewer`: a thread is starved by a task that holds the GIL).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .store.contract import HotPath
from .store.model import Lease

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds leases and renews them every ``lease_seconds / 3`` until released."""

    def __init__(self, store: HotPath, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.interval_seconds = max(lease_seconds / 3, 0.05)
        self._held: dict[Lease, None] = {}
        #: Held leases being settled: losing one races an ack and is not worth a warning.
        self._settling: set[Lease] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: Extra work to do on every renewal round (e.g. refreshing bindings).
        self.periodic: list[Callable[[], None]] = []

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease] = None
        if self._thread is None:
            self.start()

    def settling(self, lease: Lease) -> None:
        with self._lock:
            if lease in self._held:
                self._settling.add(lease)

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease, None)
            self._settling.discard(lease)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held)

    def tighten(self, interval_seconds: float) -> None:
        """Run at least every ``interval_seconds`` (for periodic work that needs it)."""
        self.interval_seconds = max(min(self.interval_seconds, interval_seconds), 0.05)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="tq-lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def renew_now(self) -> None:
        """Renew every held lease once; log (and forget) the ones that were lost."""
        leases = self.held()
        if leases:
            for lease in self.store.renew(leases, self.lease_seconds):
                with self._lock:
                    quiet = lease not in self._held or lease in self._settling
                if quiet:  # acknowledged (or being settled) while the renewal was in flight
                    self.drop(lease)
                    continue
                logger.warning(
                    "tq: lost the lease of message %s in queue %r (it expired and was handed "
                    "to another consumer); raise lease_seconds if the worker was stalled",
                    lease.message_id,
                    lease.queue,
                )
                self.drop(lease)
        for work in self.periodic:
            work()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_seconds):
            try:
                self.renew_now()
            except Exception:  # the store may be down for a while: keep trying
                logger.warning("tq: could not renew leases; retrying", exc_info=True)
