"""Dependencies: messages held back until the tasks they depend on have succeeded.

A message enqueued with ``depends_on`` (Celery task ids) is stored as WAITING until
every parent's success is recorded with :meth:`Dependencies.complete`; then it becomes
delayed (ETA still ahead) or ready, at the priority it was published with. Nothing
polls for it meanwhile. The store keeps one completion record per finished task
(``succeeded`` or ``failed``) for :attr:`dependency_record_ttl_seconds`, so a child
published after its parent finished is released (or failed) at once.

- **Atomic release.** ``complete`` releases each dependent exactly once, whatever
  other completions run at the same instant, in one atomic step per call (one round
  trip, whatever the number of children).
- **Failure cascades.** A parent recorded as failed (``complete(..., succeeded=False)``),
  cancelled, or set aside as dead by any path (rejected, too many deliveries, expired,
  corrupt) makes each waiting dependent with ``on_parent_failure="dead"`` go dead as
  ``dependency_failed`` (the detail names the parent), transitively; dependents with
  ``on_parent_failure="run"`` count that parent as done. A parent that is retrying has
  no completion yet: its children keep waiting.
  Each dependent set aside is recorded as failed in turn (its own dependents, even
  those published later, fail too); a message that dies while waiting (its deadline,
  its time to live, a cancel) cascades the same way.
- **Deadlines.** A message still waiting when its ``dependency_deadline`` passes goes
  dead as ``dependency_timeout`` (found by the next fetch of its queue, as delayed
  messages are promoted, at most PROMOTE_LIMIT per queue); the detail names the parents
  it still waited on. A fetch's ``next_due`` includes the earliest deadline.
- **Replay.** Replaying a dead parent forgets its failure and returns the dependents
  that its failure set aside (``dependency_failed`` naming it, transitively) to waiting,
  unless another parent's failure still holds them; its success then releases them.
  A replayed dependent itself runs at once, out of the graph.
- **Operators.** ``release_waiting`` of a dependent takes it out of the graph (its
  parents no longer matter); ``cancel`` of a dependent removes it from its parents'
  children, and ``cancel`` of a task counts as its failure.
- **Graphs.** :meth:`enqueue_many` stores many messages across queues in one atomic
  step (all or nothing); parents inside the same batch are simply not done yet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..model import Completion, DependencyInfo, NewMessage
from .checks import checked_message, checked_queue, checked_seconds

#: How long a finished task's completion record is kept by default (7 days).
DEPENDENCY_RECORD_TTL_SECONDS = 7 * 24 * 3600.0
#: Most pending parents the detail of a ``dependency_timeout`` names.
NAMED_PARENTS = 3


def failed_detail(parent: str) -> str:
    """The detail of a message set aside as ``dependency_failed`` by ``parent``."""
    return f"parent {parent} failed"


def timeout_detail(pending: list[str]) -> str:
    """The detail of a message set aside as ``dependency_timeout`` (its pending parents)."""
    named = ", ".join(pending[:NAMED_PARENTS])
    more = " and more" if len(pending) > NAMED_PARENTS else ""
    return f"still waiting on {named or 'no parent'}{more} when its dependency deadline passed"


class Dependencies(ABC):
    """Store messages that wait on other tasks; release or fail them as those finish."""

    #: How long completion records are kept (applied when one is written).
    dependency_record_ttl_seconds: float = DEPENDENCY_RECORD_TTL_SECONDS

    def enqueue_many(self, items: Sequence[tuple[str, NewMessage]]) -> None:
        """Store every ``(queue, message)`` as :meth:`enqueue` would, in one atomic step:
        after a crash or an error either all of them are stored or none is."""
        checked = [(checked_queue(queue), checked_message(message)) for queue, message in items]
        if checked:
            self._enqueue_many(checked)

    def complete(self, task_id: str, succeeded: bool, detail: str = "") -> Completion:
        """Record that task ``task_id`` succeeded, or failed for good; release or fail
        the messages waiting on it. Recording the same outcome again changes nothing;
        a success after a failure (a replayed task) replaces it."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
        return self._complete(task_id, bool(succeeded), str(detail))

    def dependencies_in_use(self) -> bool:
        """True once a message with parents was stored here (it stays so): until then
        no task's outcome matters to another, and workers need not record them."""
        return self._dependencies_in_use()

    def complete_many(self, outcomes: Sequence[tuple[str, bool, str]]) -> Completion:
        """Record many ``(task_id, succeeded, detail)`` outcomes, in order, each as
        :meth:`complete` does (each atomic on its own, the lot in as few round trips as
        the store allows); what they did, summed."""
        checked = []
        for task_id, succeeded, detail in outcomes:
            if not isinstance(task_id, str) or not task_id:
                raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
            checked.append((task_id, bool(succeeded), str(detail)))
        return self._complete_many(checked) if checked else Completion()

    def dependency_info(self, task_id: str) -> DependencyInfo | None:
        """The graph around ``task_id``: its own recorded outcome; its parents, in the
        order of ``depends_on``, each with its completion record's outcome (else, while
        this task waits, what its wait says: pending, satisfied, failed; else pending)
        and where its latest message is held; its children that still wait on it or
        that its failure set aside, by queue and message id. None when the store has no
        completion record of it, no message of it published with parents and no child."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
        return self._dependency_info(task_id)

    def set_dependency_record_ttl(self, seconds: float) -> None:
        """Keep completion records ``seconds`` (the ``dependency_record_ttl_seconds`` option)."""
        self.dependency_record_ttl_seconds = checked_seconds(
            seconds, "dependency_record_ttl_seconds"
        )

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _enqueue_many(self, items: list[tuple[str, NewMessage]]) -> None: ...

    @abstractmethod
    def _dependencies_in_use(self) -> bool: ...

    @abstractmethod
    def _complete(self, task_id: str, succeeded: bool, detail: str) -> Completion: ...

    def _complete_many(self, outcomes: list[tuple[str, bool, str]]) -> Completion:
        """One :meth:`_complete` after the other (stores with batches override it)."""
        done = [self._complete(*outcome) for outcome in outcomes]
        return Completion(sum(c.released for c in done), sum(c.failed for c in done))

    @abstractmethod
    def _dependency_info(self, task_id: str) -> DependencyInfo | None: ...
