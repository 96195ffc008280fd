"""A whole graph of tasks published in one atomic step.

    g = tq_celery_ext.graph(app)
    g.add("fetch", fetch.s(url))
    g.add("resize", resize.s(), parents=["fetch"])
    g.add("scan", scan.s(), parents=["fetch"])
    g.add("store", store.s(), parents=["resize", "scan"])
    results = g.publish()          # {"fetch": AsyncResult, ...}

Unknown parent names and cycles are refused (:class:`~tq_kombu.errors.DependencyError`,
naming them) before anything is published. ``publish`` gives every node a task id,
publishes each with ``depends_on`` its parents' ids, and stores every message with one
``enqueue_many`` (see :func:`tq_kombu.bulk`): after an error or a crash, either the
whole graph is stored or nothing is. A node's own ``depends_on`` option (tasks outside
the graph) is kept and added to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import uuid
from celery.canvas import Signature, _chain, chord, group
from celery.result import AsyncResult

from tq_kombu.bulk import bulk
from tq_kombu.errors import DependencyError

from .dependencies import as_task_ids


@dataclass(frozen=True)
class Node:
    signature: Signature
    parents: tuple[str, ...]


class Graph:
    """Named task signatures and the names they depend on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.nodes: dict[str, Node] = {}

    def add(self, name: str, signature: Signature, parents: Iterable[str] = ()) -> Graph:
        """Add ``signature`` as ``name``, run once every node in ``parents`` succeeded."""
        if not isinstance(name, str) or not name:
            raise DependencyError(f"a graph node needs a non-empty name, got {name!r}")
        if name in self.nodes:
            raise DependencyError(f"graph node {name!r} is added twice: give each a new name")
        if not isinstance(signature, Signature) or isinstance(signature, _chain | group | chord):
            raise DependencyError(
                f"graph node {name!r} takes one task's signature (task.s(...)), "
                f"got {type(signature).__name__}: add the tasks of a chain or group one by one"
            )
        names = (parents,) if isinstance(parents, str) else tuple(parents)
        if not all(isinstance(parent, str) for parent in names):
            raise DependencyError(f"the parents of {name!r} are node names (str), got {names!r}")
        self.nodes[name] = Node(signature, tuple(dict.fromkeys(names)))
        return self

    def order(self) -> list[str]:
        """Node names, parents before children; DependencyError naming an unknown parent
        or a cycle."""
        for name, node in self.nodes.items():
            unknown = [parent for parent in node.parents if parent not in self.nodes]
            if unknown:
                raise DependencyError(
                    f"graph node {name!r} depends on unknown node(s) {', '.join(unknown)}: "
                    "add them first, or pass outside tasks with depends_on"
                )
        done: list[str] = []
        state: dict[str, str] = {}  # name -> "open" while being visited, "done" after
        for start in self.nodes:
            self._visit(start, state, done, [])
        return done

    def _visit(self, name: str, state: dict[str, str], done: list[str], path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = path[path.index(name) :] + [name]
            raise DependencyError(
                f"the graph has a cycle: {' -> '.join(reversed(cycle))}; nothing was published"
            )
        state[name] = "open"
        path.append(name)
        for parent in self.nodes[name].parents:
            self._visit(parent, state, done, path)
        path.pop()
        state[name] = "done"
        done.append(name)

    def publish(self) -> dict[str, AsyncResult]:
        """Publish every node, all or nothing; the AsyncResult of each by name."""
        order = self.order()
        ids = {name: self.nodes[name].signature.options.get("task_id") or uuid() for name in order}
        results: dict[str, AsyncResult] = {}
        with bulk(self.app):
            for name in order:
                node = self.nodes[name]
                outside = node.signature.options.get("depends_on") or []
                outside = as_task_ids(outside if isinstance(outside, list | tuple) else [outside])
                parents = [ids[parent] for parent in node.parents] + list(outside)
                results[name] = node.signature.apply_async(
                    task_id=ids[name], depends_on=parents or None
                )
        return results


def graph(app: Any) -> Graph:
    """A new, empty graph of ``app``'s tasks."""
    return Graph(app)
