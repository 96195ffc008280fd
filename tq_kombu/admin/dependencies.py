"""Administration of task dependencies: the graph around a task, cascading cancels.

Mixed into :class:`~tq_kombu.admin.Admin`::

    admin.dependencies(task_id)             # parents (with outcomes) and children
    admin.dependency_graph(task_id, depth)  # every task within ``depth`` edges
    admin.cancel_cascade(None, task_id)     # the task and every waiting dependent
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MessageNotFound
from ..store.model import DependencyInfo, MessageInfo, ParentState, State

if TYPE_CHECKING:
    from ..store import Store
    from . import QueueScope


QUEUED = (State.READY, State.DELAYED, State.WAITING)


@dataclass
class GraphNode:
    """One task of a dependency graph: its outcome and, when held, its message."""

    task_id: str
    outcome: str
    task_name: str = ""
    queue: str | None = None
    state: str | None = None
    dead_reason: str | None = None


@dataclass
class DependencyGraph:
    """Tasks around one task and the edges ``(parent, child)`` between them."""

    root: str
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "nodes": [vars(node) for node in self.nodes.values()],
            "edges": [list(edge) for edge in self.edges],
        }


def parents_first(nodes: set[str], edges: list[tuple[str, str]]) -> list[str]:
    """``nodes`` ordered so that every parent comes before its children (ties by id)."""
    parents: dict[str, set[str]] = {node: set() for node in nodes}
    for parent, child in edges:
        parents[child].add(parent)
    ordered: list[str] = []
    while parents:
        free = sorted(node for node, waiting in parents.items() if not waiting) or sorted(parents)
        for node in free:
            del parents[node]
            ordered.append(node)
        for waiting in parents.values():
            waiting.difference_update(free)
    return ordered


class DependencyAdmin:
    """The dependency operations of Admin (it provides ``store`` and ``find``)."""

    store: Store

    def find(self, message_or_task_id: str, queues: QueueScope = None) -> MessageInfo:
        raise NotImplementedError  # Admin.find

    def cancel(self, queue: QueueScope, message_id: str) -> MessageInfo:
        raise NotImplementedError  # Admin.cancel

    def dependencies(self, task_id: str) -> DependencyInfo | None:
        """Parents (with their outcomes) and children of a task; None if it has neither."""
        return self.store.dependency_info(task_id)

    def dependency_summary(self, task_id: str) -> dict[str, Any] | None:
        """:meth:`dependencies` as plain fields, each link with its message's state."""
        info = self.dependencies(task_id)
        if info is None:
            return None
        return {
            "outcome": info.state.value,
            "on_parent_failure": info.on_parent_failure,
            "dependency_deadline": info.dependency_deadline,
            "parents": [vars(self._node(link.task_id, link.state)) for link in info.parents],
            "children": [vars(self._node(link.task_id, link.state)) for link in info.children],
        }

    def _node(self, task_id: str, outcome: ParentState) -> GraphNode:
        node = GraphNode(task_id, outcome.value)
        message = self._message_of(task_id)
        if message is not None:
            node.task_name = message.task_name
            node.queue = message.queue
            node.state = message.state.value
            node.dead_reason = message.dead_reason
        return node

    def _message_of(self, task_id: str) -> MessageInfo | None:
        try:
            return self.find(task_id)
        except MessageNotFound:
            return None

    def dependency_graph(self, task_id: str, depth: int = 2) -> DependencyGraph:
        """Every task within ``depth`` edges of ``task_id`` (up and down), and the edges."""
        root = self.dependencies(task_id)
        if root is None and self._message_of(task_id) is None:
            raise MessageNotFound(f"no task {task_id!r} in the store, as a message or a parent")
        graph = DependencyGraph(task_id)
        edges: set[tuple[str, str]] = set()
        frontier = [task_id]
        seen = {task_id}
        outcomes = {task_id: root.state if root else ParentState.PENDING}
        for _ in range(max(depth, 0)):
            following = []
            for current in frontier:
                info = self.dependencies(current)
                if info is None:
                    continue
                links = [(link, (link.task_id, current)) for link in info.parents]
                links += [(link, (current, link.task_id)) for link in info.children]
                for link, edge in links:
                    edges.add(edge)
                    outcomes.setdefault(link.task_id, link.state)
                    if link.task_id not in seen:
                        seen.add(link.task_id)
                        following.append(link.task_id)
            frontier = following
        graph.edges = sorted(edges)
        for tid in parents_first(seen, graph.edges):
            graph.nodes[tid] = self._node(tid, outcomes[tid])
        return graph

    def cancel_cascade(self, queue: QueueScope, message_id: str) -> list[MessageInfo]:
        """Cancel a queued task and every dependent still queued (dependents first, so
        none goes dead on the way); return what was cancelled, the task last."""
        root = self.find(message_id, queue)
        if root.state not in QUEUED:
            raise MessageNotFound(
                f"message {message_id!r} is {root.state.value}, not queued: it cannot be cancelled"
            )
        order: list[str] = []
        self._descendants(root.task_id, order, set())
        cancelled = []
        for task_id in order:
            message = self._message_of(task_id)
            if message is not None and self.store.cancel(message.queue, message.message_id):
                cancelled.append(message)
        cancelled.append(self.cancel(root.queue, root.message_id))
        return cancelled

    def _descendants(self, task_id: str, order: list[str], seen: set[str]) -> None:
        """Dependents of ``task_id``, each after its own dependents (post-order)."""
        info = self.dependencies(task_id) if task_id else None
        for child in info.children if info else []:
            if child.task_id not in seen:
                seen.add(child.task_id)
                self._descendants(child.task_id, order, seen)
                order.append(child.task_id)
