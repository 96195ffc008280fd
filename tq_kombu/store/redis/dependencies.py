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
from .keys import EDGE_SEPARATOR

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

    def _complete(self, task_id: str, succeeded: bool, detail: str) -> Completion:
        """One complete.lua call, whatever the number of children (``detail`` is not
        kept: the children's dead detail names the parent)."""
        keys = [self.keys.dependency(kind, task_id) for kind in ("done", "children", "settled")]
        args = [
            self.keys.prefix,
            task_id,
            1 if succeeded else 0,
            self._record_ttl_ms(),
            *self._retention_args(),
        ]
        released, failed = self._run("complete", keys, args)
        return Completion(released=int(released), failed=int(failed))

    def _dependency_info(self, task_id: str) -> DependencyInfo | None:
        """Read without a script (an administrative view, not one atomic snapshot): the
        task's record and edges, then where each task of the graph is held."""
        with translated(), self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.dependency("done", task_id))
            pipe.smembers(self.keys.dependency("children", task_id))
            pipe.smembers(self.keys.dependency("settled", task_id))
            outcome, pending, settled = pipe.execute()
        queues = self._queues()
        own = self._locate(queues, [task_id]).get(task_id)
        meta = self._metas([own])[0] if own else {}
        parents = [str(p) for p in meta.get("dp", [])] if isinstance(meta.get("dp"), list) else []
        if not (outcome or pending or settled or parents):
            return None
        edges = [_edge(member) for member in sorted(pending | settled)]
        child_ids = [_text(m.get("i", "")) for m in self._metas(edges)]
        outcomes = self._outcomes(parents + child_ids)
        where = self._locate(queues, parents)
        deadline = meta.get("dl")
        return DependencyInfo(
            task_id=task_id,
            state=_state(outcome),
            parents=[
                DependencyLink(p, outcomes[p], *(where.get(p) or (None, None))) for p in parents
            ],
            children=[
                DependencyLink(child, outcomes[child], queue, message_id)
                for child, (queue, message_id) in zip(child_ids, edges, strict=True)
            ],
            on_parent_failure="run" if meta.get("pf") == "run" else "dead",
            dependency_deadline=deadline / 1000 if isinstance(deadline, int | float) else None,
        )

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

    def _outcomes(self, task_ids: list[str]) -> dict[str, ParentState]:
        """Each task's recorded outcome (an empty id: pending)."""
        named = [task_id for task_id in task_ids if task_id]
        if not named:
            return {"": ParentState.PENDING}
        with translated():
            found = self.client.mget([self.keys.dependency("done", t) for t in named])
        return {"": ParentState.PENDING} | {t: _state(o) for t, o in zip(named, found, strict=True)}
