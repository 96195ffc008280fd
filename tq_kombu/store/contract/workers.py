"""Workers: heartbeats every worker process records, for ``tq workers`` and metrics.

A beat vouches for its worker for ``ttl_seconds``; past that the worker is *lost* (it
missed its beats: killed, frozen, or cut off from the store) and its last beat is kept
for ``keep_seconds`` more, so that ``tq workers`` can say so, then dropped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..model import WorkerBeat
from .checks import checked_seconds

#: How long a lost worker's last beat is kept by default (seconds).
KEEP_LOST_SECONDS = 3600.0


class Workers(ABC):
    """Heartbeats with an expiry, kept a while past it as lost."""

    def heartbeat(
        self,
        worker: str,
        ttl_seconds: float,
        info: dict[str, Any],
        keep_seconds: float = KEEP_LOST_SECONDS,
    ) -> None:
        """Record that ``worker`` is alive for the next ``ttl_seconds``, with ``info``;
        once expired, its beat is listed as lost for ``keep_seconds`` more."""
        keep = checked_seconds(keep_seconds, "keep_seconds", allow_zero=True)
        self._heartbeat(str(worker), checked_seconds(ttl_seconds, "ttl_seconds"), dict(info), keep)

    def workers(self, include_lost: bool = False) -> list[WorkerBeat]:
        """Workers whose last heartbeat has not expired, by name; with ``include_lost``,
        also those whose beat expired but is still kept (``lost=True``)."""
        return self._workers(bool(include_lost))

    def forget_worker(self, worker: str) -> bool:
        """Drop a worker's beat (live or lost); False when the store has none."""
        return self._forget_worker(str(worker))

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _heartbeat(
        self, worker: str, ttl_seconds: float, info: dict[str, Any], keep_seconds: float
    ) -> None: ...

    @abstractmethod
    def _workers(self, include_lost: bool) -> list[WorkerBeat]: ...

    @abstractmethod
    def _forget_worker(self, worker: str) -> bool: ...
