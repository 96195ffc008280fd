"""Inspection: read-only questions about queues and messages (admin commands, Flower,
metrics). Nothing here changes the store, and nothing scans every message where a
kept count or an index answers."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..model import MessageInfo, QueueCounts, State
from .checks import checked_queue, checked_state


class Inspection(ABC):
    """Counts, levels, one message, pages of messages, payloads."""

    def queues(self) -> list[str]:
        """Names of the queues holding at least one message (in any state), sorted."""
        return self._queues()

    def counts(self, queue: str) -> QueueCounts:
        """Count the queue's messages in each state."""
        return self._counts(checked_queue(queue))

    def ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]:
        """Ready messages per priority: ``{priority: (count, created_at of the oldest)}``."""
        return self._ready_levels(checked_queue(queue))

    def info(self, queue: str, message_id: str) -> MessageInfo | None:
        """Describe one message, or None if the queue holds no such message."""
        return self._info(checked_queue(queue), str(message_id))

    def find_task(self, queue: str, task_id: str) -> MessageInfo | None:
        """The message of Celery task ``task_id`` in ``queue`` (an index lookup), or None."""
        return self._find_task(checked_queue(queue), str(task_id)) if task_id else None

    def list_messages(
        self, queue: str, state: State, offset: int = 0, limit: int = 100
    ) -> list[MessageInfo]:
        """Messages of ``queue`` in ``state``, in the order they would be handed out
        (ready), come due (delayed), expire (in flight), died (dead) or arrived
        (waiting). Negative offsets and limits count as 0."""
        return self._list_messages(
            checked_queue(queue), checked_state(state), max(0, int(offset)), max(0, int(limit))
        )

    def payload(self, queue: str, message_id: str) -> bytes | None:
        """The stored payload of a message in any state, or None."""
        return self._payload(checked_queue(queue), str(message_id))

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _queues(self) -> list[str]: ...

    @abstractmethod
    def _counts(self, queue: str) -> QueueCounts: ...

    @abstractmethod
    def _ready_levels(self, queue: str) -> dict[int, tuple[int, float | None]]: ...

    @abstractmethod
    def _info(self, queue: str, message_id: str) -> MessageInfo | None: ...

    @abstractmethod
    def _find_task(self, queue: str, task_id: str) -> MessageInfo | None: ...

    @abstractmethod
    def _list_messages(
        self, queue: str, state: State, offset: int, limit: int
    ) -> list[MessageInfo]: ...

    @abstractmethod
    def _payload(self, queue: str, message_id: str) -> bytes | None: ...
