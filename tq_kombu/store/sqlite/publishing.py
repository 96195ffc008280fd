"""Storing one message in the caller's ``BEGIN IMMEDIATE`` transaction: ready, delayed,
held waiting by an operator, or waiting on parents with its edges (dead at once when a
parent already failed). A plain message costs one lookup of its queue's lifetime and
one INSERT, as it always did."""

from __future__ import annotations

import json
import sqlite3

from ..contract.dependencies import failed_detail
from ..model import DeadReason, NewMessage, State
from .cascade import FAILED, PENDING, SATISFIED, kill, outcomes
from .lanes import lane_of, note_lane
from .rows import NEXT_SEQ

__all__ = ["DEPENDENCIES_USED", "store_message"]

#: Marks the store as one where messages wait on parents (see dependencies_in_use).
DEPENDENCIES_USED = "INSERT OR IGNORE INTO counters (name, value) VALUES ('dependencies', 1)"


def store_message(conn: sqlite3.Connection, queue: str, message: NewMessage, now: float) -> bool:
    """Store ``message``; an id the queue holds already changes nothing (the first copy
    stands). True when it is stored dead (a parent failed): its death is journalled,
    and the caller drains the journal (see cascade.drain_deaths)."""
    if message.depends_on:
        return _store_dependent(conn, queue, message, now)
    _insert(conn, queue, message, _plain_state(message, now), now)
    return False


def _plain_state(message: NewMessage, now: float) -> State:
    if message.waiting:
        return State.WAITING
    if message.eta is not None and message.eta > now:
        return State.DELAYED
    return State.READY


def _insert(
    conn: sqlite3.Connection, queue: str, message: NewMessage, state: State, now: float
) -> bool:
    ttls = [] if message.ttl_seconds is None else [float(message.ttl_seconds)]
    row = conn.execute(
        "SELECT message_ttl_seconds FROM queue_lifetimes WHERE queue = ?", (queue,)
    ).fetchone()
    if row is not None and row[0] is not None:
        ttls.append(float(row[0]))
    dependent = bool(message.depends_on)
    lane = lane_of(message.limits)
    cursor = conn.execute(
        "INSERT OR IGNORE INTO messages (queue, id, state, priority, seq, eta, "
        "task_name, task_id, payload, created_at, expires_at, parents, on_parent_failure, "
        f"dependency_deadline, lane) VALUES (?, ?, ?, ?, {NEXT_SEQ}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            queue,
            message.message_id,
            state.value,
            message.priority,
            message.eta,
            message.task_name,
            message.task_id,
            message.payload,
            now,
            now + min(ttls) if ttls else None,
            json.dumps(list(message.depends_on)) if dependent else None,
            message.on_parent_failure if dependent else None,
            message.dependency_deadline if dependent else None,
            lane,
        ),
    )
    conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
    if lane is not None and cursor.rowcount > 0:
        note_lane(conn, queue, lane)
    return cursor.rowcount > 0


def _store_dependent(conn: sqlite3.Connection, queue: str, message: NewMessage, now: float) -> bool:
    """Waiting with an edge per parent while a parent is pending or one failed (then
    dead at once as ``dependency_failed``); else stored as a plain message would be."""
    conn.execute(DEPENDENCIES_USED)
    known = outcomes(conn, message.depends_on, now)
    statuses: dict[str, str] = {}
    for parent in message.depends_on:
        if parent not in known:
            statuses[parent] = PENDING
        elif known[parent] or message.on_parent_failure == "run":
            statuses[parent] = SATISFIED
        else:
            statuses[parent] = FAILED
    failed = next((p for p, status in statuses.items() if status == FAILED), None)
    if failed is None and PENDING not in statuses.values():
        _insert(conn, queue, message, _plain_state(message, now), now)
        return False
    if not _insert(conn, queue, message, State.WAITING, now):
        return False  # the queue holds this id already: the first copy stands
    conn.executemany(
        "INSERT OR REPLACE INTO dependency_edges (parent, queue, id, status) VALUES (?, ?, ?, ?)",
        [(parent, queue, message.message_id, status) for parent, status in statuses.items()],
    )
    if failed is not None:
        reason = DeadReason.DEPENDENCY_FAILED.value
        kill(conn, queue, message.message_id, reason, failed_detail(failed), now)
    return failed is not None
