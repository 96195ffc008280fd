"""Dependencies on Redis: ``enqueue_many.lua``, ``complete.lua``; the edges and
completion records live in their own keyspace (``<prefix>{deps}:...``, see
``lua/includes/cascade.lua``), and every script where a message dies cascades."""

from __future__ import annotations

from typing import Any

from ..contract import Dependencies
from ..model import Completion, DependencyInfo, DependencyLink, NewMessage, ParentState
from .client import translated
from .codec import dependency_args, message_args, read_meta
from .inspection import RedisInspection
from .keys import DEPENDENCY_KEYS, EDGE_SEPARATOR, IN_USE_FLAG

#: Outcomes recorded per complete.lua call by ``complete_many``.
COMPLETE_BATCH = 500

__all__ = ["RedisDependencies"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(outcome: Any) -> ParentState:
    """A done record as a :class:`ParentState` (no record: pending)."""
    return ParentState(_text(outcome)) if outcome else ParentState.PENDING


def _edge(member: Any) -> tuple[str, str]:
    queue, _, message_id = _text(member).partition(EDGE_SEPARATOR)
    return queue, message_id


class RedisDependencies(RedisInspection, Dependencies):
    """Messages stored in one step across queues, completions, the graph around a task
    (where a task is held: the Inspection slice's queues and task indexes)."""

    def _enqueue_many(self, items: list[tuple[str, NewMessage]]) -> None:
        """One enqueue_many.lua call: every queue's group in KEYS, then the messages."""
        groups: dict[str, int] = {}
        keys: list[str] = []
        args: list[Any] = [self._record_ttl_ms(), len(items)]
        for queue, message in items:
            if queue not in groups:
                groups[queue] = len(groups) + 1
                keys += self.keys.group(queue)
            policy, deadline, *parents = dependency_args(message)
            args += [groups[queue], *message_args(message), policy, deadline, len(parents)]
            args += parents
        self._run("enqueue_many", keys, args)

    def _dependencies_in_use(self) -> bool:
        with translated():
            return bool(self.client.exists(self.keys.dependency(*IN_USE_FLAG)))

    def _complete(self, task_id: str, succeeded: bool, detail: str) -> Completion:
        return self._complete_many([(task_id, succeeded, detail)])

    def _complete_many(self, outcomes: list[tuple[str, bool, str]]) -> Completion:
        """One complete.lua call per batch of outcomes, whatever the number of children
        (``detail`` is not kept: the children's dead detail names the parent)."""
        released = failed = 0
        for start in range(0, len(outcomes), COMPLETE_BATCH):
            keys: list[str] = []
            args: list[Any] = [self.keys.prefix, self._record_ttl_ms(), *self._retention_args()]
            for task_id, succeeded, _ in outcomes[start : start + COMPLETE_BATCH]:
                keys += [self.keys.dependency(kind, task_id) for kind in DEPENDENCY_KEYS]
                args += [task_id, 1 if succeeded else 0]
            one_released, one_failed = self._run("complete", keys, args)
            released, failed = released + int(one_released), failed + int(one_failed)
        return Completion(released=released, failed=failed)

    def _dependency_info(self, task_id: str) -> DependencyInfo | None:
        """Read without a script (an administrative view, not one atomic snapshot): the
        task's record and edges, its own latest message, then where each task is held."""
        with translated(), self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.dependency("done", task_id))
            pipe.smembers(self.keys.dependency("children", task_id))
            pipe.smembers(self.keys.dependency("settled", task_id))
            outcome, pending, settled = pipe.execute()
        queues = self._queues()
        own = self._locate(queues, [task_id]).get(task_id)
        meta = self._metas([own])[0] if own else {}
        parents = [str(p) for p in meta["dp"]] if isinstance(meta.get("dp"), list) else []
        children = self._children(task_id, pending, settled)
        if not (outcome or children or parents):
            return None
        where = self._locate(queues, parents)
        parent_states = self._parent_states(own, meta, parents)
        deadline = meta.get("dl")
        return DependencyInfo(
            task_id=task_id,
            state=_state(outcome),
            parents=[
                DependencyLink(p, parent_states[p], *(where.get(p) or (None, None)))
                for p in parents
            ],
            children=children,
            on_parent_failure="run" if meta.get("pf") == "run" else "dead",
            dependency_deadline=deadline / 1000 if isinstance(deadline, int | float) else None,
        )

    def _children(self, task_id: str, pending: set[Any], settled: set[Any]) -> list[DependencyLink]:
        """The messages in the graph that still count ``task_id`` pending (waiting, or
        dead for another reason) or that its failure holds dead, by queue and message
        id; failed when dead."""
        waiting = {_edge(member) for member in pending}
        edges = sorted(waiting | {_edge(member) for member in settled})
        links = []
        for (queue, message_id), meta in zip(edges, self._metas(edges), strict=True):
            if not meta or meta.get("dt") or not isinstance(meta.get("dp"), list):
                continue
            held = isinstance(meta.get("ff"), list) and task_id in meta["ff"]
            if (queue, message_id) in waiting or held:
                state = ParentState.FAILED if meta.get("r") else ParentState.PENDING
                links.append(DependencyLink(str(meta.get("i") or ""), state, queue, message_id))
        return links

    def _parent_states(
        self, own: tuple[str, str] | None, meta: dict[str, Any], parents: list[str]
    ) -> dict[str, ParentState]:
        """Each parent's completion record; without one, what the task's wait says:
        pending while it counts it so (or when out of the graph), failed when that
        parent's failure holds it dead, else succeeded."""
        if not parents or own is None:
            return {}
        queue, message_id = own
        member = f"{queue}{EDGE_SEPARATOR}{message_id}"
        with translated(), self.client.pipeline(transaction=False) as pipe:
            pipe.mget([self.keys.dependency("done", p) for p in parents])
            for p in parents:
                pipe.sismember(self.keys.dependency("children", p), member)
            outcomes, *edges = pipe.execute()
        holding: list[Any] = meta["ff"] if isinstance(meta.get("ff"), list) else []
        states = {}
        for parent, outcome, pending in zip(parents, outcomes, edges, strict=True):
            if outcome:
                states[parent] = _state(outcome)
            elif meta.get("dt") or pending:
                states[parent] = ParentState.PENDING
            elif parent in holding:
                states[parent] = ParentState.FAILED
            else:
                states[parent] = ParentState.SUCCEEDED
        return states

    def _locate(self, queues: list[str], task_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Where the newest message of each task is held (queue, message id), from the
        queues' task indexes (the first queue in name order when several hold one)."""
        if not queues or not task_ids:
            return {}
        with translated(), self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                for queue in queues:
                    pipe.hget(self.keys.queue(queue)["tasks"], task_id)
            found = iter(pipe.execute())
        where: dict[str, tuple[str, str]] = {}
        for task_id in task_ids:
            for queue in queues:
                message_id = next(found)
                if message_id and task_id not in where:
                    where[task_id] = (queue, _text(message_id))
        return where

    def _metas(self, held: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The metadata records of messages by (queue, message id); {} when unreadable."""
        if not held:
            return []
        with translated(), self.client.pipeline(transaction=False) as pipe:
            for queue, message_id in held:
                pipe.hget(self.keys.queue(queue)["meta"], message_id)
            return [read_meta(raw) for raw in pipe.execute()]
