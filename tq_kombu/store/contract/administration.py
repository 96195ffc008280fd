"""Administration: what an operator does to queued messages (``celery -A app tq ...``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..model import State
from .checks import checked_priority, checked_queue, checked_state


class Administration(ABC):
    """Cancel, reprioritise, release waiting messages, purge, delete queues."""

    def cancel(self, queue: str, message_id: str) -> bool:
        """Delete a ready, delayed or waiting message so it never runs; False if not found there."""
        return self._cancel(checked_queue(queue), str(message_id))

    def set_priority(self, queue: str, message_id: str, priority: int) -> bool:
        """Change the priority of a queued (not in flight) message, keeping its place in
        arrival order; False if not found queued. A bad priority raises PriorityError."""
        return self._set_priority(checked_queue(queue), str(message_id), checked_priority(priority))

    def release_waiting(self, queue: str, message_id: str) -> bool:
        """Move a waiting message to delayed (ETA in the future) or to the end of ready."""
        return self._release_waiting(checked_queue(queue), str(message_id))

    def purge(self, queue: str, state: State = State.READY) -> int:
        """Delete every message of ``queue`` in ``state``; return how many."""
        return self._purge(checked_queue(queue), checked_state(state))

    def delete_queue(self, queue: str) -> None:
        """Delete a queue with everything it holds, in every state, and its lifetime
        record (bindings stay: unbind them)."""
        self._delete_queue(checked_queue(queue))

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _cancel(self, queue: str, message_id: str) -> bool: ...

    @abstractmethod
    def _set_priority(self, queue: str, message_id: str, priority: int) -> bool: ...

    @abstractmethod
    def _release_waiting(self, queue: str, message_id: str) -> bool: ...

    @abstractmethod
    def _purge(self, queue: str, state: State) -> int: ...

    @abstractmethod
    def _delete_queue(self, queue: str) -> None: ...
