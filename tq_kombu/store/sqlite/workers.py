"""Worker heartbeats on SQLite: one row per worker with its expiry."""

from __future__ import annotations

import json
import time
from typing import Any

from ..contract import Workers
from ..model import WorkerBeat
from .db import UsesDatabase


class SQLiteWorkers(UsesDatabase, Workers):
    """Heartbeats with an expiry."""

    def _heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        """Record ``worker`` as alive for ``ttl_seconds``; drops workers long expired."""
        now = time.time()
        encoded = json.dumps(info, default=str, sort_keys=True)
        with self.db.write("heartbeat") as conn:
            conn.execute("DELETE FROM workers WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO workers (worker, seen_at, expires_at, info) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (worker) DO UPDATE SET seen_at = excluded.seen_at, "
                "expires_at = excluded.expires_at, info = excluded.info",
                (worker, now, now + ttl_seconds, encoded),
            )

    def _workers(self) -> list[WorkerBeat]:
        with self.db.read("workers") as conn:
            rows = conn.execute(
                "SELECT worker, seen_at, info FROM workers WHERE expires_at > ? ORDER BY worker",
                (time.time(),),
            ).fetchall()
        beats = []
        for worker, seen_at, raw in rows:
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            beats.append(
                WorkerBeat(str(worker), float(seen_at), info if isinstance(info, dict) else {})
            )
        return beats
