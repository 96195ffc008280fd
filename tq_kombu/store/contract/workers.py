"""Workers: heartbeats every worker process records, for ``tq workers`` and metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..model import WorkerBeat
from .checks import checked_seconds


class Workers(ABC):
    """Heartbeats with an expiry."""

    def heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        """Record that ``worker`` is alive for the next ``ttl_seconds``, with ``info``."""
        self._heartbeat(str(worker), checked_seconds(ttl_seconds, "ttl_seconds"), dict(info))

    def workers(self) -> list[WorkerBeat]:
        """Workers whose last heartbeat has not expired, by name."""
        return self._workers()

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None: ...

    @abstractmethod
    def _workers(self) -> list[WorkerBeat]: ...
