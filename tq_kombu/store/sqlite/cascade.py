"""The steps of dependencies on SQLite, each inside the caller's ``BEGIN IMMEDIATE``
transaction: completion records, releasing dependents, cascading deaths, deadlines and
replay revival (semantics: :mod:`tq_kombu.store.contract.dependencies`).

The graph is ``dependency_edges`` (parent task id -> dependent message, with a status),
kept only while the dependent waits or lies dead: a trigger (see :mod:`.schema`) drops
a dependent's edges when it is deleted by any path, :func:`leave_graph` when it is
released. Another journals the task id of every message that dies, by any path, in
``dependency_deaths``. Whoever may have
killed a message calls :func:`drain_deaths` before committing: it records each death
as a failure and sets its dependents aside, whose deaths are journalled in turn.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from ..contract import PROMOTE_LIMIT
from ..contract.dependencies import NAMED_PARENTS, failed_detail, timeout_detail
from ..model import Completion, DeadReason, RetentionPolicy
from .rows import take_seqs, trim_dead

PENDING, SATISFIED, FAILED = "pending", "satisfied", "failed"


def purge_completions(conn: sqlite3.Connection, now: float) -> None:
    """Drop expired completion records (one range of their expiry index)."""
    conn.execute("DELETE FROM completions WHERE expires_at <= ?", (now,))


def record_completion(
    conn: sqlite3.Connection, task_id: str, succeeded: bool, detail: str, expires_at: float
) -> None:
    conn.execute(
        "INSERT INTO completions (task_id, succeeded, detail, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (task_id) DO UPDATE SET succeeded = excluded.succeeded, "
        "detail = excluded.detail, expires_at = excluded.expires_at",
        (task_id, int(succeeded), detail, expires_at),
    )


def outcomes(conn: sqlite3.Connection, task_ids: Iterable[str], now: float) -> dict[str, bool]:
    """The recorded (unexpired) outcome of each of ``task_ids`` that has one."""
    rows = conn.execute(
        "SELECT task_id, succeeded FROM completions "
        "WHERE task_id IN (SELECT value FROM json_each(?)) AND expires_at > ?",
        (json.dumps(list(task_ids)), now),
    ).fetchall()
    return {str(task_id): bool(succeeded) for task_id, succeeded in rows}


def release_children(conn: sqlite3.Connection, parent: str, now: float) -> int:
    """``parent`` succeeded: its pending edges are satisfied; release each dependent
    left with no pending or failed parent (by queue, then message id, as every step
    here orders its dependents, so that stores agree). Returns how many were released."""
    rows = conn.execute(
        "UPDATE dependency_edges SET status = ? WHERE parent = ? AND status = ? "
        "RETURNING queue, id",
        (SATISFIED, parent, PENDING),
    ).fetchall()
    return sum(release_if_free(conn, queue, id_, now) for queue, id_ in sorted(rows))


def release_if_free(conn: sqlite3.Connection, queue: str, message_id: str, now: float) -> int:
    """A waiting dependent with every parent satisfied goes delayed (ETA ahead) or to
    the end of ready, leaving the graph. 1 if released."""
    blocked = conn.execute(
        "SELECT 1 FROM dependency_edges WHERE queue = ? AND id = ? AND status != ? LIMIT 1",
        (queue, message_id, SATISFIED),
    ).fetchone()
    if blocked is not None:
        return 0
    seq = take_seqs(conn, 1)
    released = conn.execute(
        "UPDATE messages SET seq = ?, "
        "state = CASE WHEN eta IS NOT NULL AND eta > ? THEN 'delayed' ELSE 'ready' END "
        "WHERE queue = ? AND id = ? AND state = 'waiting' AND parents IS NOT NULL",
        (seq, now, queue, message_id),
    ).rowcount
    if released:
        leave_graph(conn, queue, message_id)
    return int(released)


def leave_graph(conn: sqlite3.Connection, queue: str, message_id: str) -> None:
    """A dependent released (by its parents, an operator, a replay) is nobody's child
    any more (one it was deleted leaves by trigger)."""
    conn.execute("DELETE FROM dependency_edges WHERE queue = ? AND id = ?", (queue, message_id))


def kill(
    conn: sqlite3.Connection, queue: str, message_id: str, reason: str, detail: str, now: float
) -> None:
    """Set one message aside as dead (its task id is journalled by the trigger)."""
    conn.execute(
        "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, dead_at = ?, "
        "lease_until = NULL, lease_token = NULL WHERE queue = ? AND id = ?",
        (reason, detail, now, queue, message_id),
    )


def journal_death(conn: sqlite3.Connection, task_id: str, detail: str) -> None:
    """A task that failed without its message dying here (cancelled, or reported)."""
    conn.execute(
        "INSERT OR IGNORE INTO dependency_deaths (task_id, detail) VALUES (?, ?)",
        (task_id, detail),
    )


def drain_deaths(
    conn: sqlite3.Connection, now: float, record_ttl_seconds: float, retention: RetentionPolicy
) -> Completion:
    """Record every journalled death as a failed completion and cascade: a waiting
    dependent with policy ``dead`` goes dead (``dependency_failed`` naming this parent),
    and is journalled in turn; one with policy ``run`` counts the parent as done."""
    released = failed = 0
    while True:
        # a read first: on the hot path (every fetch) the journal is nearly always empty
        deaths = conn.execute(
            "SELECT task_id, detail FROM dependency_deaths ORDER BY task_id"
        ).fetchall()
        if not deaths:
            return Completion(released, failed)
        conn.execute("DELETE FROM dependency_deaths")
        purge_completions(conn, now)  # every death writes one: keep the table bounded
        touched: set[str] = set()
        for task_id, detail in deaths:
            record_completion(conn, str(task_id), False, str(detail), now + record_ttl_seconds)
            freed, died = _fail_children(conn, str(task_id), now, touched)
            released += freed
            failed += died
        for queue in sorted(touched):
            trim_dead(conn, queue, retention)


def _fail_children(
    conn: sqlite3.Connection, parent: str, now: float, touched: set[str]
) -> tuple[int, int]:
    rows = conn.execute(
        "SELECT e.queue, e.id, m.on_parent_failure, m.state FROM dependency_edges e "
        "JOIN messages m ON m.queue = e.queue AND m.id = e.id "
        "WHERE e.parent = ? AND e.status = ? ORDER BY e.queue, e.id",
        (parent, PENDING),
    ).fetchall()
    released = failed = 0
    for queue, message_id, policy, state in rows:
        status = SATISFIED if policy == "run" else FAILED
        conn.execute(
            "UPDATE dependency_edges SET status = ? WHERE parent = ? AND queue = ? AND id = ?",
            (status, parent, queue, message_id),
        )
        if state != "waiting":
            continue  # dead already: the edge only says what this parent did to it
        if status == SATISFIED:
            released += release_if_free(conn, queue, message_id, now)
        else:
            reason = DeadReason.DEPENDENCY_FAILED.value
            kill(conn, queue, message_id, reason, failed_detail(parent), now)
            touched.add(queue)
            failed += 1
    return released, failed


def revive(conn: sqlite3.Connection, task_id: str) -> None:
    """A replayed task: forget its failure; the dependents its failure set aside (and,
    transitively, theirs) wait again, unless another parent's failure still holds them."""
    stack = [task_id]
    while stack:
        parent = stack.pop()
        conn.execute("DELETE FROM completions WHERE task_id = ? AND succeeded = 0", (parent,))
        rows = conn.execute(
            "UPDATE dependency_edges SET status = ? WHERE parent = ? AND status = ? "
            "RETURNING queue, id",
            (PENDING, parent, FAILED),
        ).fetchall()
        for queue, message_id in sorted(rows):
            held = conn.execute(
                "SELECT 1 FROM dependency_edges WHERE queue = ? AND id = ? AND status = ?",
                (queue, message_id, FAILED),
            ).fetchone()
            if held is not None:
                continue
            seq = take_seqs(conn, 1)
            row = conn.execute(
                "UPDATE messages SET state = 'waiting', seq = ?, dead_reason = NULL, "
                "dead_detail = NULL, dead_at = NULL, hostname = NULL, failure = NULL, "
                "attempts = NULL WHERE queue = ? AND id = ? AND state = 'dead' "
                "AND dead_reason = ? RETURNING task_id",
                (seq, queue, message_id, DeadReason.DEPENDENCY_FAILED.value),
            ).fetchone()
            if row is not None and isinstance(row[0], str) and row[0]:
                stack.append(row[0])


def sweep_deadlines(
    conn: sqlite3.Connection, queues: list[str], now: float, retention: RetentionPolicy
) -> int:
    """Dependents of ``queues`` still waiting past their deadline go dead as
    ``dependency_timeout`` (up to PROMOTE_LIMIT per queue); returns how many. The
    caller runs it only once a due time has passed (see fetching.next_due)."""
    timed_out = 0
    for queue in queues:
        died = _time_out(conn, queue, now)
        if died:
            trim_dead(conn, queue, retention)
            timed_out += died
    return timed_out


def _time_out(conn: sqlite3.Connection, queue: str, now: float) -> int:
    rows = conn.execute(
        "SELECT id FROM messages WHERE queue = ? AND state = 'waiting' "
        "AND dependency_deadline IS NOT NULL AND dependency_deadline <= ? "
        "ORDER BY dependency_deadline LIMIT ?",
        (queue, now, PROMOTE_LIMIT),
    ).fetchall()
    for (message_id,) in rows:
        pending = conn.execute(
            "SELECT parent FROM dependency_edges WHERE queue = ? AND id = ? AND status = ? "
            "ORDER BY parent LIMIT ?",
            (queue, message_id, PENDING, NAMED_PARENTS + 1),
        ).fetchall()
        detail = timeout_detail([str(p) for (p,) in pending])
        kill(conn, queue, message_id, DeadReason.DEPENDENCY_TIMEOUT.value, detail, now)
    return len(rows)
