"""Worker heartbeats on Redis: one hash of JSON beats, expired ones dropped on read."""

from __future__ import annotations

import json
import time
from typing import Any

from ..contract import Workers
from ..model import WorkerBeat
from .client import RedisShared, translated

__all__ = ["RedisWorkers"]


class RedisWorkers(RedisShared, Workers):
    """Heartbeats with an expiry."""

    def _heartbeat(self, worker: str, ttl_seconds: float, info: dict[str, Any]) -> None:
        now = time.time()
        beat = json.dumps({"seen": now, "expires": now + ttl_seconds, "info": info})
        with translated():
            self.client.hset(self.keys.workers, worker, beat)

    def _workers(self) -> list[WorkerBeat]:
        key = self.keys.workers
        with translated():
            entries = self.client.hgetall(key)
        now = time.time()
        alive, gone = [], []
        for name, raw in entries.items():
            beat = json.loads(raw)
            if beat["expires"] < now:
                gone.append(name)
            else:
                alive.append(WorkerBeat(name.decode(), beat["seen"], beat["info"]))
        if gone:
            with translated():
                self.client.hdel(key, *gone)
        return sorted(alive, key=lambda beat: beat.worker)
