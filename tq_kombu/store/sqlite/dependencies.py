"""Dependencies on SQLite (semantics: :mod:`tq_kombu.store.contract.dependencies`).

Each operation is one ``BEGIN IMMEDIATE`` transaction, so completions from threads and
processes at the same instant release each dependent exactly once. The graph, the
completion records and the journal of deaths are tables of their own (see
:mod:`.schema`); the steps over them are in :mod:`.cascade`, storing a message in
:mod:`.publishing`. Other slices call :func:`.cascade.drain_deaths` wherever a message
may die, so a parent that dies by any path fails its dependents in the same step.
"""

from __future__ import annotations

import json
import sqlite3
import time

from ..contract import Dependencies
from ..model import (
    Completion,
    DependencyInfo,
    DependencyLink,
    NewMessage,
    ParentState,
    RetentionPolicy,
)
from .cascade import (
    FAILED,
    PENDING,
    SATISFIED,
    drain_deaths,
    journal_death,
    outcomes,
    purge_completions,
    record_completion,
    release_children,
)
from .db import UsesDatabase
from .publishing import store_message

_CHILD_STATE = {"waiting": ParentState.PENDING, "dead": ParentState.FAILED}
_EDGE_STATE = {
    PENDING: ParentState.PENDING,
    SATISFIED: ParentState.SUCCEEDED,
    FAILED: ParentState.FAILED,
}


class SQLiteDependencies(UsesDatabase, Dependencies):
    """Graphs stored at once, completions, and the graph around a task."""

    retention: RetentionPolicy

    def _enqueue_many(self, items: list[tuple[str, NewMessage]]) -> None:
        now = time.time()
        with self.db.write("enqueue_many") as conn:
            for queue, message in items:
                store_message(conn, queue, message, now)
            drain_deaths(conn, now, self.dependency_record_ttl_seconds, self.retention)

    def _dependencies_in_use(self) -> bool:
        with self.db.read("dependencies_in_use") as conn:
            found = conn.execute("SELECT 1 FROM counters WHERE name = 'dependencies'")
            return found.fetchone() is not None

    def _complete(self, task_id: str, succeeded: bool, detail: str) -> Completion:
        return self._complete_many([(task_id, succeeded, detail)])

    def _complete_many(self, outcomes: list[tuple[str, bool, str]]) -> Completion:
        """Every outcome in one transaction."""
        now = time.time()
        released = failed = 0
        with self.db.write("complete") as conn:
            purge_completions(conn, now)
            for task_id, succeeded, detail in outcomes:
                if succeeded:
                    expires_at = now + self.dependency_record_ttl_seconds
                    record_completion(conn, task_id, True, detail, expires_at)
                    released += release_children(conn, task_id, now)
                else:
                    journal_death(conn, task_id, detail)
                    done = drain_deaths(
                        conn, now, self.dependency_record_ttl_seconds, self.retention
                    )
                    released, failed = released + done.released, failed + done.failed
        return Completion(released=released, failed=failed)

    def _dependency_info(self, task_id: str) -> DependencyInfo | None:
        now = time.time()
        with self.db.read("dependency_info") as conn:
            done = outcomes(conn, [task_id], now).get(task_id)
            queues = [str(q) for (q,) in conn.execute("SELECT DISTINCT queue FROM message_counts")]
            children = [
                DependencyLink(str(child), _CHILD_STATE[state], str(queue), str(message_id))
                for queue, message_id, child, state in conn.execute(
                    "SELECT e.queue, e.id, m.task_id, m.state FROM dependency_edges e "
                    "JOIN messages m ON m.queue = e.queue AND m.id = e.id "
                    "WHERE e.parent = ? AND e.status != ? AND m.state IN ('waiting', 'dead') "
                    "ORDER BY e.queue, e.id",
                    (task_id, SATISFIED),
                )
            ]
            own = _latest(
                conn,
                queues,
                "queue, id, parents, on_parent_failure, dependency_deadline",
                task_id,
                "AND parents IS NOT NULL",
            )
            if done is None and own is None and not children:
                return None
            state = _outcome(done)
            if own is None:
                return DependencyInfo(task_id, state, children=children)
            queue, message_id, parents_json, policy, deadline = own
            parents = [str(parent) for parent in json.loads(str(parents_json))]
            known = outcomes(conn, parents, now)
            edges = dict(
                conn.execute(
                    "SELECT parent, status FROM dependency_edges WHERE queue = ? AND id = ?",
                    (queue, message_id),
                ).fetchall()
            )
            links = []
            for parent in parents:
                parent_state = (
                    _outcome(known[parent])
                    if parent in known
                    else _EDGE_STATE.get(edges.get(parent, PENDING), ParentState.PENDING)
                )
                where = _latest(conn, queues, "queue, id", parent, "")
                held = (None, None) if where is None else (str(where[0]), str(where[1]))
                links.append(DependencyLink(parent, parent_state, *held))
            deadline = float(deadline) if isinstance(deadline, int | float) else None
            return DependencyInfo(task_id, state, links, children, str(policy), deadline)


def _latest(
    conn: sqlite3.Connection, queues: list[str], columns: str, task_id: str, condition: str
) -> tuple[object, ...] | None:
    """``columns`` of the latest message of ``task_id`` in any of ``queues`` (one seek of
    the task index per queue), or None."""
    best: tuple[int, tuple[object, ...]] | None = None
    for queue in queues:
        row = conn.execute(
            f"SELECT seq, {columns} FROM messages WHERE queue = ? AND task_id = ? "
            f"AND task_id != '' {condition} ORDER BY seq DESC LIMIT 1",
            (queue, task_id),
        ).fetchone()
        if row is not None and (best is None or int(row[0]) > best[0]):
            best = (int(row[0]), tuple(row[1:]))
    return None if best is None else best[1]


def _outcome(succeeded: bool | None) -> ParentState:
    if succeeded is None:
        return ParentState.PENDING
    return ParentState.SUCCEEDED if succeeded else ParentState.FAILED
