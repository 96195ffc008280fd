"""Dead letters: messages set aside with a reason, kept, shown and replayed.

Whenever a message dies the retention policy runs in the same atomic step: dead
letters older than ``retention.ttl_seconds`` go, then the oldest beyond
``retention.max_per_queue``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from ..model import DeadLetter, NewMessage, RetentionPolicy, State
from .checks import checked_message, checked_priority, checked_queue


class DeadLetters(ABC):
    """Burial without a lease, replay, retention and failure records."""

    def bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        """Set the message ``message.message_id`` of ``queue`` aside as dead, whatever
        state it is in, without a lease (e.g. a task that failed in a pool process):

        - held ready, delayed, waiting or in flight: it moves to dead in place, keeping
          its stored payload, first-seen time and delivery count (``message`` is not
          used); a lease on it is no longer held, so a later ack or reject does nothing;
        - already dead: nothing changes;
        - not held (acknowledged already): ``message`` is stored as dead, with
          ``dead.delivery_count`` and ``dead.first_seen`` when given.

        Then applies the retention policy, in the same atomic step. Returns the state
        the message was in before, or None when it was not held."""
        return self._bury_payload(checked_queue(queue), checked_message(message), dead)

    def replay(
        self, queue: str, message_id: str, to_queue: str | None = None, priority: int | None = None
    ) -> bool:
        """Atomically move a dead message back to ready (in ``to_queue`` if given, at
        ``priority`` if given), its delivery count reset and its dead-letter record
        dropped; False (and nothing changes) if it is not dead or ``to_queue`` already
        holds a message with its id."""
        return self.replay_many(queue, [message_id], to_queue, priority) == 1

    def replay_many(
        self,
        queue: str,
        message_ids: Iterable[str],
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """:meth:`replay` each of ``message_ids`` (each atomically, in batches where the
        store can); return how many were replayed."""
        source = checked_queue(queue)
        target = source if to_queue is None else checked_queue(to_queue, "to_queue")
        level = None if priority is None else checked_priority(priority)
        ids = list(dict.fromkeys(str(message_id) for message_id in message_ids))
        return self._replay_many(source, ids, target, level) if ids else 0

    def trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        """Drop the queue's dead messages beyond the policy, oldest first; return how many."""
        return self._trim_dead(checked_queue(queue), policy)

    def dead_failure(self, queue: str, message_id: str) -> bytes:
        """The sealed failure record of a dead message (empty if none)."""
        return self._dead_failure(checked_queue(queue), str(message_id))

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None: ...

    @abstractmethod
    def _replay_many(
        self, queue: str, message_ids: list[str], to_queue: str, priority: int | None
    ) -> int: ...

    @abstractmethod
    def _trim_dead(self, queue: str, policy: RetentionPolicy) -> int: ...

    @abstractmethod
    def _dead_failure(self, queue: str, message_id: str) -> bytes: ...
