"""The hot path on Redis: one script call per publish, per fetched batch and per settle."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..contract import HotPath
from ..model import DeadLetter, Delivery, FetchResult, Lease, NewMessage
from ..waiting import Waiter
from .client import RedisShared, translated
from .codec import dead_args, dependency_args, message_args
from .waiting import SocketWaiter

__all__ = ["RedisHotPath"]


class RedisHotPath(RedisShared, HotPath):
    """Enqueue, fetch, take, wait, renew and settle (``enqueue.lua``, ``fetch.lua``,
    ``renew.lua``, ``ack.lua``, ``settle.lua``)."""

    def _enqueue(self, queue: str, message: NewMessage) -> None:
        args = message_args(message)
        if message.depends_on:
            args += [self._record_ttl_ms(), *dependency_args(message)]
        self._run("enqueue", self.keys.group(queue), args)

    def _fetch(
        self,
        queues: list[str],
        max_count: int,
        consumer_id: str,
        lease_seconds: float,
        max_deliveries: int,
        skip_task_names: list[str],
    ) -> FetchResult:
        lease_ms = max(int(lease_seconds * 1000), 1)
        args = [max_count, consumer_id, lease_ms, max_deliveries]
        return self._fetch_script(queues, args, skip_task_names)

    def _take(self, queues: list[str], max_count: int) -> FetchResult:
        """fetch.lua with a lease of 0 ms: the messages are removed, not leased."""
        return self._fetch_script(queues, [max_count, "", 0, 1], [])

    def _fetch_script(self, queues: list[str], args: list[Any], skip: list[str]) -> FetchResult:
        """fetch.lua, with the limits key once a queue is known to hold limited messages
        (learnt when the script stops at one and answers more_ready 2)."""
        limiting = not self.limited_queues.isdisjoint(queues)
        first, stopped = self._fetch_once(queues, args, skip, limiting)
        if not stopped:
            return first
        self.limited_queues.update(queues)
        wanted = int(args[0]) - len(first.deliveries)
        if wanted <= 0:
            return FetchResult(first.deliveries, True, first.next_due)
        again, _ = self._fetch_once(queues, [wanted, *args[1:]], skip, True)
        deliveries = [*first.deliveries, *again.deliveries]
        return FetchResult(deliveries, again.more_ready, again.next_due)

    def _fetch_once(
        self, queues: list[str], args: list[Any], skip: list[str], limiting: bool
    ) -> tuple[FetchResult, bool]:
        """One fetch.lua call, and whether it stopped at a limited message."""
        keys: list[str] = []
        for queue in queues:
            keys += self.keys.group(queue)
        if limiting:
            keys.append(self.keys.limits("defs"))
        retention = [*self._retention_args(), self._record_ttl_ms()]
        reply = self._run("fetch", keys, [*args, *retention, *skip])
        deliveries = []
        for i in range(3, len(reply), 7):
            index, message_id, payload, priority, count, token, created_ms = reply[i : i + 7]
            lease = Lease(queues[int(index)], message_id.decode(), token.decode())
            created = int(created_ms) / 1000 if int(created_ms) else None
            deliveries.append(Delivery(lease, payload, int(priority), int(count), created))
        next_due = None if int(reply[1]) < 0 else int(reply[1]) / 1000
        return FetchResult(deliveries, bool(reply[0]), next_due), int(reply[0]) == 2

    def marker_keys(self, queues: list[str]) -> list[str]:
        """The keys a consumer blocks on (BZPOPMIN) to learn that ``queues`` changed."""
        return [self.keys.queue(queue)["marker"] for queue in queues]

    def _wait(self, queues: list[str], timeout_seconds: float) -> None:
        with translated():
            self.client.bzpopmin(self.marker_keys(queues), timeout=timeout_seconds)

    def new_waiter(self) -> Waiter:
        """BZPOPMIN on the marker keys, on a dedicated connection the loop watches."""
        return SocketWaiter(self.client, self.marker_keys)

    def _renew(self, leases: list[Lease], lease_seconds: float) -> list[Lease]:
        by_queue: dict[str, list[Lease]] = defaultdict(list)
        for lease in leases:
            by_queue[lease.queue].append(lease)
        lost: list[Lease] = []
        for queue, held in by_queue.items():
            args: list[Any] = [int(lease_seconds * 1000)]
            for lease in held:
                args += [lease.message_id, lease.token]
            positions = self._run("renew", self.keys.subset(queue, "lease_keys"), args)
            lost += [held[int(position) - 1] for position in positions]
        return lost

    def _settle(self, action: str, lease: Lease, dead: DeadLetter | None = None) -> bool:
        args: list[Any] = [action, lease.message_id, lease.token]
        if action == "bury":
            args += [*dead_args(dead), *self._retention_args(), self._record_ttl_ms()]
        return bool(self._run("settle", self.keys.group(lease.queue), args))

    def _ack(self, lease: Lease) -> bool:
        """ack.lua: the settle of nearly every message, with the five keys it touches."""
        keys = self.keys.subset(lease.queue, "ack_keys")
        return bool(self._run("ack", keys, [lease.message_id, lease.token]))

    def _release(self, lease: Lease) -> bool:
        return self._settle("release", lease)

    def _requeue(self, lease: Lease) -> bool:
        return self._settle("requeue", lease)

    def _give_back(self, lease: Lease) -> bool:
        return self._settle("give_back", lease)

    def _bury(self, lease: Lease, dead: DeadLetter) -> bool:
        """Dead and trimmed to the retention policy in one settle.lua call."""
        return self._settle("bury", lease, dead)
