"""Routing on SQLite: bindings (so fanout and topic exchanges span processes) and queue
lifetimes (AMQP ``x-expires``, ``auto_delete``, ``x-message-ttl``)."""

from __future__ import annotations

import time

from ..contract import Routing
from ..model import Binding, QueueLifetime
from .db import UsesDatabase


class SQLiteRouting(UsesDatabase, Routing):
    """Bindings and queue lifetimes."""

    def _bind(self, binding: Binding, expires_seconds: float | None) -> None:
        """Record or refresh a binding (None: it never expires); drops expired ones."""
        now = time.time()
        expires_at = None if expires_seconds is None else now + expires_seconds
        with self.db.write("bind") as conn:
            conn.execute(
                "DELETE FROM bindings WHERE exchange = ? AND expires_at <= ?",
                (binding.exchange, now),
            )
            conn.execute(
                "INSERT INTO bindings (exchange, routing_key, pattern, queue, expires_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (exchange, routing_key, pattern, queue) "
                "DO UPDATE SET expires_at = excluded.expires_at",
                (binding.exchange, binding.routing_key, binding.pattern, binding.queue, expires_at),
            )

    def _unbind(self, binding: Binding) -> None:
        with self.db.write("unbind") as conn:
            conn.execute(
                "DELETE FROM bindings "
                "WHERE exchange = ? AND routing_key = ? AND pattern = ? AND queue = ?",
                (binding.exchange, binding.routing_key, binding.pattern, binding.queue),
            )

    def _bindings(self, exchange: str) -> list[Binding]:
        with self.db.read("bindings") as conn:
            rows = conn.execute(
                "SELECT exchange, routing_key, pattern, queue FROM bindings "
                "WHERE exchange = ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY queue, routing_key, pattern",
                (exchange, time.time()),
            ).fetchall()
        return [Binding(str(e), str(k), str(p), str(q)) for e, k, p, q in rows]

    def _declare_queue(self, queue: str, lifetime: QueueLifetime) -> None:
        """Record or refresh the queue's lifetime (neither limit: forget it)."""
        expires, ttl = lifetime.expires_seconds, lifetime.message_ttl_seconds
        with self.db.write("declare_queue") as conn:
            if expires is None and ttl is None:
                conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))
                return
            deadline = None if expires is None else time.time() + float(expires)
            conn.execute(
                "INSERT INTO queue_lifetimes (queue, expires_seconds, message_ttl_seconds, "
                "deadline) VALUES (?, ?, ?, ?) ON CONFLICT (queue) DO UPDATE SET "
                "expires_seconds = excluded.expires_seconds, "
                "message_ttl_seconds = excluded.message_ttl_seconds, deadline = excluded.deadline",
                (queue, expires, ttl, deadline),
            )

    def _lifetime(self, queue: str) -> QueueLifetime | None:
        with self.db.read("lifetime") as conn:
            row = conn.execute(
                "SELECT expires_seconds, message_ttl_seconds FROM queue_lifetimes WHERE queue = ?",
                (queue,),
            ).fetchone()
        if row is None:
            return None
        return QueueLifetime(
            None if row[0] is None else float(row[0]), None if row[1] is None else float(row[1])
        )

    def _expire_queues(self) -> list[str]:
        """Delete the queues past their deadline with their messages and bindings (a
        read first, so that the usual case takes no write lock)."""
        now = time.time()
        with self.db.read("expire_queues") as conn:
            if not conn.execute(
                "SELECT 1 FROM queue_lifetimes WHERE deadline <= ? LIMIT 1", (now,)
            ).fetchone():
                return []
        with self.db.write("expire_queues") as conn:
            gone = [
                str(row[0])
                for row in conn.execute(
                    "SELECT queue FROM queue_lifetimes WHERE deadline <= ? ORDER BY queue", (now,)
                ).fetchall()
            ]
            for queue in gone:
                conn.execute("DELETE FROM messages WHERE queue = ?", (queue,))
                conn.execute("DELETE FROM bindings WHERE queue = ?", (queue,))
                conn.execute("DELETE FROM queue_lifetimes WHERE queue = ?", (queue,))
        return gone
