"""The Store contract, in slices by audience; a backend implements every slice.

=================  ===========================================  =======================
slice              operations                                   used by
=================  ===========================================  =======================
HotPath            enqueue, fetch, take, wait, renew, settle    the transport
DeadLetters        bury by id, replay, retention, failures      extension, admin
Inspection         counts, levels, info, find by task, lists    admin, CLI, metrics
Administration     cancel, set priority, release, purge         admin, CLI
Routing            bindings, queue lifetimes                    the transport
Workers            heartbeats, lost workers, forget_worker      extension, CLI
Dependencies       enqueue many, complete, dependency info      extension, admin
Limits             define, set, remove, status of limits        extension, admin, CLI
=================  ===========================================  =======================

Each public method checks its input once, for every store (priority 0..255,
``lease_seconds > 0``, ``max_deliveries >= 1``, known states, queue names), then calls
the backend's hook of the same name with a leading underscore. A store is safe to share
between the threads of one process and between processes on the same data.
"""

from __future__ import annotations

from abc import abstractmethod

from .administration import Administration
from .dead_letters import DeadLetters
from .dependencies import Dependencies
from .hot_path import PROMOTE_LIMIT, SKIP_SCAN_LIMIT, HotPath
from .inspection import Inspection
from .limits import Limits
from .routing import Routing
from .workers import Workers

__all__ = [
    "PROMOTE_LIMIT",
    "SKIP_SCAN_LIMIT",
    "Administration",
    "DeadLetters",
    "Dependencies",
    "HotPath",
    "Inspection",
    "Limits",
    "Routing",
    "Store",
    "Workers",
]


class Store(
    HotPath, DeadLetters, Inspection, Administration, Routing, Workers, Dependencies, Limits
):
    """Storage behind the tq transport: every slice of the contract."""

    #: kombu ``driver_type`` reported by transports on this store.
    driver_type: str = "tq"

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~tq_kombu.errors.StoreError` if the store cannot be reached."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store may be used again afterwards (it reconnects)."""
