"""Inspection on Redis: state sizes are sorted-set cardinalities, ready levels come
from the kept counts and ages (``ready_levels.lua``), a task from the task index
(``find_task.lua``); nothing here scans every message of a queue."""

from __future__ import annotations

from ..contract import Inspection
from ..model import MessageInfo, QueueCounts, State
from .client import RedisShared, translated
from .codec import describe
from .keys import STATE_KEYS

__all__ = ["RedisInspection"]


class RedisInspection(RedisShared, Inspection):
    """Counts, levels, one message, pages of messages, payloads."""

    def _queues(self) -> list[str]:
        """Queues with a metadata hash (Redis deletes a hash with its last field), found
        with SCAN: an administrative call, not a hot path."""
        found = set()
        with translated():
            for key in self.client.scan_iter(match=self.keys.meta_pattern(), count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                queue = self.keys.queue_of_meta_key(name)
                if queue is not None:
                    found.add(queue)
        return sorted(found)

    def _counts(self, queue: str) -> QueueCounts:
        keys = self.keys.queue(queue)
        with translated(), self.client.pipeline(transaction=False) as pipe:
            for state in State:
                pipe.zcard(keys[STATE_KEYS[state]])
            sizes = dict(zip(State, pipe.execute(), strict=True))
        return QueueCounts(
            ready=sizes[State.READY],
            delayed=sizes[State.DELAYED],
            inflight=sizes[State.INFLIGHT],
            dead=sizes[State.DEAD],
            waiting=sizes[State.WAITING],
        )

    def _ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        reply = self._run("ready_levels", self.keys.group(queue), [])
        levels: dict[int, tuple[int, float | None]] = {}
        for i in range(0, len(reply), 3):
            priority, count, oldest_ms = (int(value) for value in reply[i : i + 3])
            levels[priority] = (count, None if oldest_ms < 0 else oldest_ms / 1000)
        return levels

    def _state_of(self, queue: str, message_id: str) -> State | None:
        keys = self.keys.queue(queue)
        with translated(), self.client.pipeline(transaction=False) as pipe:
            for state in State:
                pipe.zscore(keys[STATE_KEYS[state]], message_id)
            scores = pipe.execute()
        for state, score in zip(State, scores, strict=True):
            if score is not None:
                return state
        return None

    def _info(self, queue: str, message_id: str) -> MessageInfo | None:
        state = self._state_of(queue, message_id)
        if state is None:
            return None
        with translated():
            raw = self.client.hget(self.keys.queue(queue)["meta"], message_id)
        return describe(queue, message_id, state, raw)

    def _find_task(self, queue: str, task_id: str) -> MessageInfo | None:
        found = self._run("find_task", self.keys.group(queue), [task_id])
        if not found:
            return None
        info = self._info(queue, found.decode())
        # the index names a task's newest message; one whose record says otherwise is stale
        return info if info is not None and info.task_id in (task_id, "") else None

    def _list_messages(
        self, queue: str, state: State, offset: int, limit: int
    ) -> list[MessageInfo]:
        if limit <= 0:
            return []
        keys = self.keys.queue(queue)
        with translated():
            found = self.client.zrange(keys[STATE_KEYS[state]], offset, offset + limit - 1)
            ids = [raw.decode() for raw in found]
            metas = self.client.hmget(keys["meta"], ids) if ids else []
        return [describe(queue, mid, state, raw) for mid, raw in zip(ids, metas, strict=True)]

    def _payload(self, queue: str, message_id: str) -> bytes | None:
        with translated():
            value = self.client.hget(self.keys.queue(queue)["bodies"], message_id)
        return value if isinstance(value, bytes) else None
