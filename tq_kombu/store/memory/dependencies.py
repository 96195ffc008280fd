"""The memory store's Dependencies (see :mod:`tq_kombu.store.contract.dependencies`).

Each message published with ``depends_on`` carries its :class:`~.records.Waits` (the
parents it still waits on, those whose failure set it aside); ``_edges`` maps a parent
task id to those messages, checked against their Waits whenever read, so an edge to a
message that has gone (cancelled, purged, trimmed) or was released is simply skipped
and dropped. Completion records live ``dependency_record_ttl_seconds``.

Every message that dies with a task id is journalled by ``_kill``; the operation that
killed it then calls :meth:`_settle_deaths`, which records each as failed and cascades
to its dependents, whose own deaths are journalled in turn (transitively).
"""

from __future__ import annotations

from ..contract import PROMOTE_LIMIT
from ..contract.dependencies import failed_detail, timeout_detail
from ..lane_ids import lane_of, tags_of
from ..model import (
    Completion,
    DeadLetter,
    DeadReason,
    DependencyInfo,
    DependencyLink,
    MessageInfo,
    NewMessage,
    ParentState,
    State,
)
from .records import MemoryState, Record, Waits


class MemoryDependencies(MemoryState):
    """Storing messages (with their parents), completions, cascades and deadlines."""

    # -- storing a message (the hot path's enqueue and enqueue_many) --------------
    def _store_message(self, queue: str, message: NewMessage, now: float) -> None:
        """Store ``message`` as waiting, delayed, ready, or dead at once (a parent failed)."""
        records = self._queue(queue)
        if message.message_id in records:
            return
        failed, pending = self._outcomes(message, now) if message.depends_on else ([], [])
        state = State.READY
        if message.waiting or pending or failed:
            state = State.WAITING
        elif message.eta is not None and message.eta > now:
            state = State.DELAYED
        limits = tuple(sorted(set(message.limits), key=lambda t: (t.name, t.kind, t.key)))
        info = MessageInfo(
            queue, message.message_id, state, message.priority, 0, message.task_name,
            message.task_id, eta=message.eta, created_at=now,
            limits=tags_of(lane_of(message.limits)),
        )  # fmt: skip
        record = Record(info, message.payload, next(self._seq))
        record.limits = limits
        ttls = [] if message.ttl_seconds is None else [message.ttl_seconds]
        lifetime = self._lifetimes.get(queue)
        if lifetime is not None and lifetime[0].message_ttl_seconds is not None:
            ttls.append(lifetime[0].message_ttl_seconds)
        record.expires_at = now + min(ttls) if ttls else None
        records[message.message_id] = record
        if message.depends_on:
            self._dependencies_used = True
            self._attach(queue, record, message, set(pending), failed, now)
        self._changed.notify_all()

    def _outcomes(self, message: NewMessage, now: float) -> tuple[list[str], list[str]]:
        """The parents whose failure kills ``message``, and those with no completion yet."""
        failed, pending = [], []
        for parent in message.depends_on:
            done = self._completion(parent, now)
            if done is None:
                pending.append(parent)
            elif not done[0] and message.on_parent_failure == "dead":
                failed.append(parent)
        return failed, pending

    def _attach(
        self,
        queue: str,
        record: Record,
        message: NewMessage,
        pending: set[str],
        failed: list[str],
        now: float,
    ) -> None:
        self._purge_records(now)
        key = (queue, message.message_id)
        deadline = message.dependency_deadline
        deps = Waits(message.depends_on, message.on_parent_failure, deadline, pending)
        record.deps = deps
        deps.attached = bool(pending or failed)  # else stored as a plain message
        for parent in pending:
            self._edges.setdefault(parent, set()).add(key)
        for parent in failed:
            deps.failed.add(parent)
            self._edges.setdefault(parent, set()).add(key)
        if failed:
            dead = DeadLetter(DeadReason.DEPENDENCY_FAILED, failed_detail(failed[0]))
            self._kill(queue, record, dead, now)
        elif pending and deps.deadline is not None:
            self._deadlines[key] = deps.deadline

    # -- the hooks ------------------------------------------------------------------
    def _enqueue_many(self, items: list[tuple[str, NewMessage]]) -> None:
        with self._changed:  # checked already: nothing below can fail half-way
            now = self.clock()
            for queue, message in items:
                self._store_message(queue, message, now)
            self._settle_deaths(now)

    def _dependencies_in_use(self) -> bool:
        return self._dependencies_used

    def _complete(self, task_id: str, succeeded: bool, detail: str) -> Completion:
        with self._changed:
            now = self.clock()
            self._purge_records(now)
            if not succeeded:
                self._deaths.append((task_id, detail))
                return self._settle_deaths(now)
            self._completions[task_id] = (True, now + self.dependency_record_ttl_seconds, detail)
            released = 0
            for key in self._children(task_id):
                record = self._record(*key)
                assert record is not None and record.deps is not None
                if task_id not in record.deps.pending:
                    continue
                record.deps.pending.discard(task_id)
                if record.state == State.WAITING and not record.deps.pending:
                    self._release_dependent(key, record, now)
                    released += 1
            return Completion(released=released)

    def _dependency_info(self, task_id: str) -> DependencyInfo | None:
        with self._changed:
            now = self.clock()
            done = self._completion(task_id, now)
            own = self._own_record(task_id)
            children = [self._record(*key) for key in sorted(self._children(task_id))]
            if done is None and own is None and not children:
                return None
            links = [
                DependencyLink(r.info.task_id, _child_state(r), r.info.queue, r.info.message_id)
                for r in children
                if r is not None
            ]
            info = DependencyInfo(task_id, _outcome(done), children=links)
            if own is None or own.deps is None:
                return info
            parents = [
                DependencyLink(p, self._parent_state(p, own.deps, now), *self._where(p))
                for p in own.deps.parents
            ]
            return DependencyInfo(
                task_id, info.state, parents, links, own.deps.on_parent_failure,
                own.deps.deadline,
            )  # fmt: skip

    # -- deaths, releases, deadlines, replays (called by the other slices) -----------
    def _settle_deaths(self, now: float) -> Completion:
        """Record each journalled death as a failure and cascade to its dependents."""
        released = failed = 0
        if self._deaths:
            self._purge_records(now)  # every death writes a record: keep them bounded
        while self._deaths:
            batch: dict[str, str] = {}
            for task_id, detail in self._deaths:
                batch.setdefault(task_id, detail)
            self._deaths.clear()
            for task_id in sorted(batch):  # in batches by task id, as SQLite's journal
                freed, died = self._fail_children(task_id, batch[task_id], now)
                released += freed
                failed += died
        return Completion(released, failed)

    def _fail_children(self, task_id: str, detail: str, now: float) -> tuple[int, int]:
        """Record ``task_id`` as failed; release or set aside what waits on it."""
        released = failed = 0
        self._completions[task_id] = (False, now + self.dependency_record_ttl_seconds, detail)
        for key in self._children(task_id):
            record = self._record(*key)
            if record is None or record.deps is None or task_id not in record.deps.pending:
                continue  # trimmed by a death just before, or set aside already
            deps = record.deps
            deps.pending.discard(task_id)
            if deps.on_parent_failure == "run":
                if record.state == State.WAITING and not deps.pending:
                    self._release_dependent(key, record, now)
                    released += 1
                continue
            deps.failed.add(task_id)
            if record.state == State.WAITING:
                dead = DeadLetter(DeadReason.DEPENDENCY_FAILED, failed_detail(task_id))
                self._kill(key[0], record, dead, now)
                failed += 1
        return released, failed

    def _release_dependent(self, key: tuple[str, str], record: Record, now: float) -> None:
        """A waiting message to delayed (ETA ahead) or ready, out of the graph."""
        self._detach(key, record)
        if record.info.eta is not None and record.info.eta > now:
            self._set(record, state=State.DELAYED)
            record.seq = next(self._seq)
            self._changed.notify_all()
        else:
            self._to_ready(record)

    def _detach(self, key: tuple[str, str], record: Record) -> None:
        """Take a message out of its parents' children (released, replayed, cancelled)."""
        self._deadlines.pop(key, None)
        if record.deps is None:
            return
        record.deps.attached = False
        for parent in record.deps.parents:
            self._edges.get(parent, set()).discard(key)

    def _revive(self, task_id: str) -> None:
        """A replayed task: forget its failure; the messages its failure set aside wait
        again (transitively), so its success releases them."""
        stack = [task_id]
        while stack:
            parent = stack.pop()
            done = self._completions.get(parent)
            if done is not None and not done[0]:
                del self._completions[parent]
            for key in self._children(parent):
                record = self._record(*key)
                assert record is not None and record.deps is not None
                deps = record.deps
                if parent not in deps.failed:
                    continue
                deps.failed.discard(parent)
                deps.pending.add(parent)
                reason = record.info.dead_reason
                if record.state != State.DEAD or reason != DeadReason.DEPENDENCY_FAILED:
                    continue
                if deps.failed:
                    continue  # another parent's failure still holds it
                self._set(
                    record, state=State.WAITING, dead_reason=None, dead_detail=None,
                    dead_at=None, hostname=None, attempts=None,
                )  # fmt: skip
                record.failure = b""
                record.seq = next(self._seq)
                if deps.deadline is not None:
                    self._deadlines[key] = deps.deadline
                if record.info.task_id:
                    stack.append(record.info.task_id)

    def _sweep_deadlines(self, queues: list[str], now: float) -> None:
        """Messages of ``queues`` still waiting past their deadline go dead as
        ``dependency_timeout`` (up to PROMOTE_LIMIT per queue)."""
        if not self._deadlines:
            return
        for queue in queues:
            due = sorted(
                (deadline, key)
                for key, deadline in self._deadlines.items()
                if key[0] == queue and deadline <= now
            )[:PROMOTE_LIMIT]
            for _, key in due:
                del self._deadlines[key]
                record = self._record(*key)
                if record is None or record.deps is None or record.state != State.WAITING:
                    continue
                detail = timeout_detail(sorted(record.deps.pending))
                self._kill(queue, record, DeadLetter(DeadReason.DEPENDENCY_TIMEOUT, detail), now)

    def _next_deadline(self, queues: list[str]) -> float | None:
        times = [deadline for key, deadline in self._deadlines.items() if key[0] in queues]
        return min(times) if times else None

    # -- reading -------------------------------------------------------------------
    def _completion(self, task_id: str, now: float) -> tuple[bool, float, str] | None:
        done = self._completions.get(task_id)
        return None if done is None or done[1] <= now else done

    def _children(self, parent: str) -> list[tuple[str, str]]:
        """The messages waiting on ``parent`` or set aside by its failure; stale edges go."""
        keys = self._edges.get(parent)
        if not keys:
            return []
        for key in list(keys):
            record = self._record(*key)
            deps = None if record is None else record.deps
            if deps is None or not deps.attached or parent not in deps.pending | deps.failed:
                keys.discard(key)
        if not keys:
            del self._edges[parent]
        return sorted(keys)

    def _own_record(self, task_id: str) -> Record | None:
        """The latest message of ``task_id`` published with parents."""
        found = [
            r
            for records in self._messages.values()
            for r in records.values()
            if r.info.task_id == task_id and r.deps is not None
        ]
        return max(found, key=lambda r: r.seq) if found else None

    def _where(self, task_id: str) -> tuple[str | None, str | None]:
        """Where the latest message of ``task_id`` is held, if anywhere."""
        found = [
            r for records in self._messages.values() for r in records.values()
            if r.info.task_id == task_id
        ]  # fmt: skip
        if not found:
            return None, None
        latest = max(found, key=lambda r: r.seq)
        return latest.info.queue, latest.info.message_id

    def _parent_state(self, parent: str, deps: Waits, now: float) -> ParentState:
        done = self._completion(parent, now)
        if done is not None:
            return _outcome(done)
        if not deps.attached or parent in deps.pending:
            return ParentState.PENDING  # no record, and no longer in the graph or waited on
        return ParentState.FAILED if parent in deps.failed else ParentState.SUCCEEDED

    def _purge_records(self, now: float) -> None:
        """Now and then: drop expired completion records, stale edges and deadlines."""
        if now < self._next_purge:
            return
        self._next_purge = now + min(self.dependency_record_ttl_seconds, 60.0)
        for task_id in [t for t, done in self._completions.items() if done[1] <= now]:
            del self._completions[task_id]
        for parent in list(self._edges):
            self._children(parent)
        for key in list(self._deadlines):
            record = self._record(*key)
            if record is None or record.state != State.WAITING:
                del self._deadlines[key]


def _outcome(done: tuple[bool, float, str] | None) -> ParentState:
    if done is None:
        return ParentState.PENDING
    return ParentState.SUCCEEDED if done[0] else ParentState.FAILED


def _child_state(record: Record) -> ParentState:
    return ParentState.FAILED if record.state == State.DEAD else ParentState.PENDING
