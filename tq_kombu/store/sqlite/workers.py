"""Worker heartbeats on SQLite: one row per worker with its expiry and how long it is
kept once lost."""

from __future__ import annotations

import json
import time
from typing import Any

from ..contract import Workers
from ..model import WorkerBeat
from .db import UsesDatabase


class SQLiteWorkers(UsesDatabase, Workers):
    """Heartbeats with an expiry, kept a while past it as lost."""

    def _heartbeat(
        self, worker: str, ttl_seconds: float, info: dict[str, Any], keep_seconds: float
    ) -> None:
        """Record ``worker`` as alive for ``ttl_seconds``; drops beats kept long enough."""
        now = time.time()
        encoded = json.dumps(info, default=str, sort_keys=True)
        expires_at = now + ttl_seconds
        with self.db.write("heartbeat") as conn:
            conn.execute("DELETE FROM workers WHERE COALESCE(kept_until, expires_at) <= ?", (now,))
            conn.execute(
                "INSERT INTO workers (worker, seen_at, expires_at, info, kept_until) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (worker) DO UPDATE SET seen_at = excluded.seen_at, "
                "expires_at = excluded.expires_at, info = excluded.info, "
                "kept_until = excluded.kept_until",
                (worker, now, expires_at, encoded, expires_at + keep_seconds),
            )

    def _workers(self, include_lost: bool) -> list[WorkerBeat]:
        now = time.time()
        until = "COALESCE(kept_until, expires_at)" if include_lost else "expires_at"
        with self.db.read("workers") as conn:
            rows = conn.execute(
                f"SELECT worker, seen_at, info, expires_at FROM workers WHERE {until} > ? "
                "ORDER BY worker",
                (now,),
            ).fetchall()
        beats = []
        for worker, seen_at, raw, expires_at in rows:
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            beats.append(
                WorkerBeat(
                    str(worker),
                    float(seen_at),
                    info if isinstance(info, dict) else {},
                    float(expires_at),
                    lost=float(expires_at) <= now,
                )
            )
        return beats

    def _forget_worker(self, worker: str) -> bool:
        with self.db.write("forget_worker") as conn:
            return conn.execute("DELETE FROM workers WHERE worker = ?", (worker,)).rowcount > 0
