"""Routing on Redis: bindings in one hash per exchange, queue lifetimes in each queue's
``lifetime`` hash with an index of self-expiring queues (``declare_queue.lua``,
``expire_queue.lua``)."""

from __future__ import annotations

import json
import time

from ..contract import Routing
from ..model import Binding, QueueLifetime
from .client import RedisShared, translated
from .codec import ms_or_empty

__all__ = ["RedisRouting"]


def _binding_field(binding: Binding) -> str:
    return json.dumps([binding.routing_key, binding.pattern, binding.queue])


class RedisRouting(RedisShared, Routing):
    """Bindings and queue lifetimes."""

    def _bind(self, binding: Binding, expires_seconds: float | None) -> None:
        expires_at = 0 if expires_seconds is None else time.time() + expires_seconds
        with translated(), self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.bindings(binding.exchange), _binding_field(binding), expires_at)
            pipe.sadd(self.keys.queue(binding.queue)["exchanges"], binding.exchange)
            pipe.execute()

    def _unbind(self, binding: Binding) -> None:
        with translated():
            self.client.hdel(self.keys.bindings(binding.exchange), _binding_field(binding))

    def _bindings(self, exchange: str) -> list[Binding]:
        key = self.keys.bindings(exchange)
        with translated():
            entries = self.client.hgetall(key)
        now = time.time()
        live, expired = [], []
        for field, expires_at in entries.items():
            if 0 < float(expires_at) < now:
                expired.append(field)
                continue
            routing_key, pattern, queue = json.loads(field)
            live.append(Binding(exchange, routing_key, pattern, queue))
        if expired:
            with translated():
                self.client.hdel(key, *expired)
        return sorted(live, key=lambda b: (b.queue, b.routing_key, b.pattern))

    def _declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        keys = [self.keys.queue(queue)["lifetime"], self.keys.expiring_queues]
        args = [
            queue,
            ms_or_empty(lifetime.expires_seconds),
            ms_or_empty(lifetime.message_ttl_seconds),
        ]
        self._run("declare_queue", keys, args)

    def _lifetime(self, queue: str) -> QueueLifetime | None:
        with translated():
            record = self.client.hgetall(self.keys.queue(queue)["lifetime"])
        if not record:
            return None
        expires, ttl = record.get(b"expires"), record.get(b"ttl")
        return QueueLifetime(
            expires_seconds=None if expires is None else int(expires) / 1000,
            message_ttl_seconds=None if ttl is None else int(ttl) / 1000,
        )

    def _expire_queues(self) -> list[str]:
        """Candidates from the index, each checked and deleted by expire_queue.lua."""
        now_ms = int(time.time() * 1000)
        with translated():
            due = self.client.zrangebyscore(self.keys.expiring_queues, "-inf", now_ms)
        gone = []
        for raw in due:
            queue = raw.decode()
            keys = [*self.keys.group(queue), self.keys.expiring_queues]
            exchanges = self._run("expire_queue", keys, [queue])
            if exchanges is None:
                continue
            gone.append(queue)
            for exchange in exchanges:
                self._unbind_queue(exchange.decode(), queue)
        return gone

    def _unbind_queue(self, exchange: str, queue: str) -> None:
        key = self.keys.bindings(exchange)
        with translated():
            fields = [f for f in self.client.hkeys(key) if json.loads(f)[2] == queue]
            if fields:
                self.client.hdel(key, *fields)
