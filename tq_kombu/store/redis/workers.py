"""Worker heartbeats on Redis: one hash of JSON beats; beats kept past their expiry
(lost workers) until their keep time, then dropped on read."""

from __future__ import annotations

import json
import time
from typing import Any

from ..contract import Workers
from ..model import WorkerBeat
from .client import RedisShared, translated

__all__ = ["RedisWorkers"]


class RedisWorkers(RedisShared, Workers):
    """Heartbeats with an expiry, kept a while past it as lost."""

    def _heartbeat(
        self, worker: str, ttl_seconds: float, info: dict[str, Any], keep_seconds: float
    ) -> None:
        now = time.time()
        expires = now + ttl_seconds
        beat = json.dumps(
            {"seen": now, "expires": expires, "kept": expires + keep_seconds, "info": info},
            default=str,
        )
        with translated():
            self.client.hset(self.keys.workers, worker, beat)

    def _workers(self, include_lost: bool) -> list[WorkerBeat]:
        key = self.keys.workers
        with translated():
            entries = self.client.hgetall(key)
        now = time.time()
        listed, gone = [], []
        for name, raw in entries.items():
            try:
                beat = json.loads(raw)
                seen, expires = float(beat["seen"]), float(beat["expires"])
                kept = float(beat.get("kept", expires))
                info = beat.get("info")
            except (ValueError, TypeError, KeyError):  # unreadable: dropped like a stale one
                gone.append(name)
                continue
            if kept <= now:
                gone.append(name)
            elif expires > now or include_lost:
                info = info if isinstance(info, dict) else {}
                listed.append(WorkerBeat(name.decode(), seen, info, expires, expires <= now))
        if gone:
            with translated():
                self.client.hdel(key, *gone)
        return sorted(listed, key=lambda beat: beat.worker)

    def _forget_worker(self, worker: str) -> bool:
        with translated():
            return bool(self.client.hdel(self.keys.workers, worker))
