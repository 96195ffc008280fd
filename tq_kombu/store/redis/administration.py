"""Administration on Redis: ``cancel.lua``, ``set_priority.lua``,
``release_waiting.lua``, ``purge.lua``; deleting a queue drops its keys."""

from __future__ import annotations

from ..contract import Administration
from ..model import State
from .client import RedisShared, translated
from .keys import STATE_KEYS

__all__ = ["RedisAdministration"]


class RedisAdministration(RedisShared, Administration):
    """Cancel, reprioritise, release waiting messages, purge, delete queues."""

    def _cancel(self, queue: str, message_id: str) -> bool:
        args = [message_id, self._record_ttl_ms()]
        return bool(self._run("cancel", self.keys.group(queue), args))

    def _set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        return bool(self._run("set_priority", self.keys.group(queue), [message_id, priority]))

    def _release_waiting(self, queue: str, message_id: str) -> bool:
        return bool(self._run("release_waiting", self.keys.group(queue), [message_id]))

    def _purge(self, queue: str, state: State) -> int:
        return int(self._run("purge", self.keys.group(queue), [STATE_KEYS[state]]))

    def _delete_queue(self, queue: str) -> None:
        with translated():
            indexes = self.keys.lanes(queue)
            lanes = {lane for index in indexes for lane in self.client.zrange(index, 0, -1)}
            lane_keys = [self.keys.lane(queue, lane.decode()) for lane in lanes]
            limited = self.keys.limited(queue)
            self.client.delete(*self.keys.group(queue), *indexes, limited, *lane_keys)
            self.client.zrem(self.keys.expiring_queues, queue)
