"""Reading message rows, and what to do with one that cannot be read.

SQLite keeps any value in any column, so a row damaged from outside tq (a text
priority, a text payload, an unknown state) is read as unknown, never as an error; the
next fetch that meets it sets the message aside as dead (reason ``corrupt``) in place.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..lane_ids import tags_of
from ..model import DeadReason, MessageInfo, RetentionPolicy, State, lease_holder

__all__ = [
    "INFO_COLUMNS",
    "NEXT_SEQ",
    "QUEUED",
    "UNKNOWN_STATES_SQL",
    "CorruptRow",
    "blob",
    "bury_corrupt",
    "candidate",
    "int_or",
    "is_number",
    "message_info",
    "take_seqs",
    "trim_dead",
]

#: The columns :func:`message_info` reads, in its order.
INFO_COLUMNS = (
    "queue, id, state, priority, delivery_count, task_name, task_id, eta, dead_reason, "
    "dead_detail, created_at, dead_at, hostname, attempts, lane, lease_token"
)
#: The states of a message not handed out yet.
QUEUED = "('ready', 'delayed', 'waiting')"
#: The next value of the global ready sequence (bump ``counters.seq`` in the same step).
NEXT_SEQ = "(SELECT value + 1 FROM counters WHERE name = 'seq')"


def _unknown_states_sql() -> str:
    """Rows of queue ?1 whose state is none of State's: one index range between each two
    known states (text sorts after numbers, blobs after text), never a scan of the queue."""
    known = sorted(state.value for state in State)
    ranges = [f"state < '{known[0]}'", f"state > '{known[-1]}'"]
    ranges += [f"state > '{a}' AND state < '{b}'" for a, b in zip(known, known[1:], strict=False)]
    return " UNION ALL ".join(
        f"SELECT rowid, state FROM messages WHERE queue = ?1 AND {r}" for r in ranges
    )


UNKNOWN_STATES_SQL = _unknown_states_sql()


def take_seqs(conn: sqlite3.Connection, count: int) -> int:
    """Reserve ``count`` consecutive sequence numbers; return the first."""
    row = conn.execute(
        "UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value", (count,)
    ).fetchone()
    return int(row[0]) - count + 1


def message_info(row: Sequence[Any]) -> MessageInfo:
    """A row of :data:`INFO_COLUMNS` as MessageInfo; a column holding a value of the
    wrong type reads as unknown (the next fetch of a queued one sets it aside as
    corrupt), never as an error."""
    queue, message_id, state, priority, count, task_name, task_id, eta, reason, detail = row[:10]
    created_at, dead_at, hostname, attempts, lane, lease_token = row[10:16]
    try:
        known_state = State(state)
    except ValueError:
        known_state, reason, detail = State.DEAD, DeadReason.CORRUPT.value, f"state {state!r}"
    return MessageInfo(
        queue=str(queue),
        message_id=str(message_id),
        state=known_state,
        priority=int_or(priority, 0),
        delivery_count=int_or(count, 0),
        task_name=str(task_name),
        task_id=str(task_id),
        eta=float(eta) if is_number(eta) else None,
        dead_reason=None if reason is None else str(reason),
        dead_detail=None if detail is None else str(detail),
        created_at=float(created_at) if is_number(created_at) else None,
        dead_at=float(dead_at) if is_number(dead_at) else None,
        hostname=None if hostname is None else str(hostname) or None,
        attempts=None if attempts is None else int_or(attempts, 0),
        limits=() if lane is None else tags_of(lane),
        held_by=lease_holder(lease_token) if known_state == State.INFLIGHT else None,
    )


def blob(value: Any) -> bytes:
    """A BLOB column's bytes; text (a corrupt row) as its UTF-8 bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")


class CorruptRow(ValueError):
    """A row whose columns cannot be read as a message."""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def int_or(value: Any, default: int) -> int:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return default


def candidate(queue: str, row: Sequence[Any]) -> tuple[int, int, str, str, int]:
    """The sort key and fields of a ready row (priority, seq, id, delivery_count, rowid):
    ``(-priority, seq, queue, id, delivery_count)``; raises CorruptRow."""
    for column, value in (("priority", row[0]), ("seq", row[1]), ("delivery_count", row[3])):
        if int_or(value, -1) != value or not (column != "priority" or 0 <= value <= 255):
            raise CorruptRow(f"column {column} holds {value!r}"[:300])
    if not isinstance(row[2], str):
        raise CorruptRow(f"column id holds {row[2]!r}"[:300])
    return (-int(row[0]), int(row[1]), queue, row[2], int(row[3]))


def bury_corrupt(conn: sqlite3.Connection, rowid: int, detail: str, now: float) -> None:
    """Set a message whose row cannot be read aside as dead (reason corrupt), in place."""
    conn.execute(
        "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, dead_at = ?, "
        "lease_until = NULL, lease_token = NULL WHERE rowid = ?",
        (DeadReason.CORRUPT.value, detail[:300], now, rowid),
    )


def trim_dead(conn: sqlite3.Connection, queue: str, policy: RetentionPolicy) -> int:
    """Drop dead messages past the policy's age, then the oldest beyond its count."""
    aged = conn.execute(
        "DELETE FROM messages WHERE queue = ? AND state = 'dead' AND dead_at < ?",
        (queue, time.time() - policy.ttl_seconds),
    ).rowcount
    excess = conn.execute(
        "DELETE FROM messages WHERE queue = ? AND state = 'dead' AND id IN ("
        "SELECT id FROM messages WHERE queue = ? AND state = 'dead' "
        "ORDER BY dead_at DESC, seq DESC LIMIT -1 OFFSET ?)",
        (queue, queue, policy.max_per_queue),
    ).rowcount
    return int(aged) + int(excess)
