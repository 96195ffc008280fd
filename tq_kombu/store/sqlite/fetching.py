"""The steps of one fetch, each inside the fetch's ``BEGIN IMMEDIATE`` transaction:
promote what came due, expire what outlived its time to live, then lease (or take) the
best ready messages across the queues, strictly by priority then arrival (``seq``).

Bounds, as the contract states them (:mod:`tq_kombu.store.contract.hot_path`): at most
PROMOTE_LIMIT due delayed messages and, apart, as many expired leases per queue per
fetch; a fetch that skips task names looks at most SKIP_SCAN_LIMIT ready messages deep
into each queue for one it may hand out.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ..contract import PROMOTE_LIMIT, SKIP_SCAN_LIMIT
from ..model import DeadReason, Delivery, Lease, RetentionPolicy
from .lanes import LaneHead, LaneScan, lane_work
from .rows import (
    QUEUED,
    UNKNOWN_STATES_SQL,
    CorruptRow,
    bury_corrupt,
    candidate,
    int_or,
    is_number,
    take_seqs,
    trim_dead,
)

_EXPIRED_DETAIL = "its time to live ran out before it was delivered"


def promote_due(conn: sqlite3.Connection, queues: list[str], now: float) -> None:
    """Make due delayed messages and expired leases ready (up to PROMOTE_LIMIT of each
    per queue), in the order they came due; a time that is not a number can never come
    due: that message goes dead, corrupt, as does a row of no known state."""
    due: list[tuple[float, int, int]] = []
    for queue in queues:
        for state, column in (("delayed", "eta"), ("inflight", "lease_until")):
            # numbers sort before text and blobs, NULL before both (indexed ranges)
            due.extend(
                (float(row[0]), int_or(row[1], 0), int(row[2]))
                for row in conn.execute(
                    f"SELECT {column}, seq, rowid FROM messages "
                    f"WHERE queue = ? AND state = '{state}' AND {column} <= ? "
                    f"ORDER BY {column}, seq LIMIT ?",
                    (queue, now, PROMOTE_LIMIT),
                )
            )
            never_due = " UNION ALL ".join(
                f"SELECT rowid, {column} FROM messages "
                f"WHERE queue = ?1 AND state = '{state}' AND {column} {test}"
                for test in ("IS NULL", ">= ''")  # two ranges of the partial index
            )
            for row in conn.execute(never_due, (queue,)).fetchall():
                bury_corrupt(conn, int(row[0]), f"column {column} holds {row[1]!r}", now)
        for row in conn.execute(UNKNOWN_STATES_SQL, (queue,)).fetchall():
            bury_corrupt(conn, int(row[0]), f"column state holds {row[1]!r}", now)
    if not due:
        return
    due.sort()
    first = take_seqs(conn, len(due))
    conn.executemany(
        "UPDATE messages SET state = 'ready', seq = ?, lease_until = NULL, "
        "lease_token = NULL WHERE rowid = ?",
        [(first + n, rowid) for n, (_, _, rowid) in enumerate(due)],
    )


def expire_messages(
    conn: sqlite3.Connection, queues: list[str], now: float, retention: RetentionPolicy
) -> None:
    """Messages past their time to live, not yet handed out, go: deleted in a
    self-expiring queue, dead (reason ``expired``) in any other."""
    for queue in queues:
        row = conn.execute(
            "SELECT 1 FROM messages WHERE queue = ? AND expires_at <= ? LIMIT 1", (queue, now)
        ).fetchone()
        if row is None:
            continue
        lifetime = conn.execute(
            "SELECT expires_seconds FROM queue_lifetimes WHERE queue = ?", (queue,)
        ).fetchone()
        condition = f"queue = ? AND expires_at <= ? AND state IN {QUEUED}"
        if lifetime is not None and lifetime[0] is not None:
            conn.execute(f"DELETE FROM messages WHERE {condition}", (queue, now))
            died = 0
        else:
            died = conn.execute(
                "UPDATE messages SET state = 'dead', dead_reason = ?, dead_detail = ?, "
                f"dead_at = ? WHERE {condition}",
                (DeadReason.EXPIRED.value, _EXPIRED_DETAIL, now, queue, now),
            ).rowcount
        # handed out already (in flight), or just set aside: no longer expiring
        conn.execute(
            "UPDATE messages SET expires_at = NULL WHERE queue = ? AND expires_at <= ?",
            (queue, now),
        )
        if died:
            trim_dead(conn, queue, retention)


#: The best plain ready rows in one seek (the planner, left alone, walks
#: messages_by_state through every limited row ahead of them).
_READY_SQL = (
    "SELECT priority, seq, id, delivery_count, rowid, task_name FROM messages "
    "INDEXED BY messages_plain_ready "
    "WHERE queue = ? AND state = 'ready' AND lane IS NULL ORDER BY priority DESC, seq LIMIT ?"
)


def _ready_rows(
    conn: sqlite3.Connection, queue: str, wanted: int, skip: list[str]
) -> list[tuple[Any, ...]]:
    """The best ``wanted`` ready rows of ``queue``: (priority, seq, id, delivery_count,
    rowid, task_name); skipping task names, only among its first SKIP_SCAN_LIMIT."""
    if not skip:
        return conn.execute(_READY_SQL, (queue, wanted)).fetchall()
    skipped = set(skip)
    rows: list[tuple[Any, ...]] = []
    cursor = conn.execute(_READY_SQL, (queue, SKIP_SCAN_LIMIT))
    try:
        for row in cursor:  # stepped one row at a time: stops as soon as it has enough
            if row[5] not in skipped:
                rows.append(row)
                if len(rows) >= wanted:
                    break
    finally:
        cursor.close()
    return rows


def more_ready(conn: sqlite3.Connection, queues: list[str], skip: list[str]) -> bool:
    """Whether a plain ready message the next fetch could hand out is left in ``queues``
    (the lanes' work is :func:`lanes_due`'s)."""
    return any(_ready_rows(conn, queue, 1, skip) for queue in queues)


def lanes_due(
    conn: sqlite3.Connection, limited: list[str], now: float
) -> tuple[bool, float | None]:
    """Whether a lane of the ``limited`` queues that its limits do not hold back has a
    ready message, and the earliest time a held-back one is looked at again (always
    after ``now``): one statement per queue, once per fetch."""
    open_lane, wakes = False, []
    for queue in limited:
        has_work, wake = lane_work(conn, queue, now)
        open_lane = open_lane or has_work
        wakes += [] if wake is None else [wake]
    return open_lane, (min(wakes) if wakes else None)


@dataclass(frozen=True)
class Lessee:
    """Who leases in one fetch, for how long, and how often a message may be handed out;
    ``lease_until`` None: the messages are taken (removed), not leased."""

    consumer_id: str
    lease_until: float | None
    max_deliveries: int
    retention: RetentionPolicy


def lease_best(
    conn: sqlite3.Connection,
    queues: list[str],
    max_count: int,
    lessee: Lessee,
    skip: list[str],
    now: float,
    limited: list[str],
) -> list[Delivery]:
    """Lease up to ``max_count`` ready messages, strictly by priority then seq across
    ``queues`` (lanes of the ``limited`` ones by priority then turn, when their limits
    admit their head: see :mod:`.lanes`); a message over ``max_deliveries`` goes to
    dead instead."""
    deliveries: list[Delivery] = []
    lanes = LaneScan(conn, limited, now)
    # the plain candidates, read again only once one of them was handed out or buried
    # (a lane's start changes nothing of them)
    plain_candidates: list[tuple[tuple[int, int], tuple[int, int, str, str, int]]] | None = None
    while len(deliveries) < max_count:
        wanted = max_count - len(deliveries)
        buried = False
        if plain_candidates is None:
            plain_candidates = []
            for queue in queues:
                for row in _ready_rows(conn, queue, wanted, skip):
                    try:
                        plain = candidate(queue, row)
                        plain_candidates.append(((plain[0], plain[1]), plain))
                    except CorruptRow as exc:
                        bury_corrupt(conn, int(row[4]), str(exc), now)
                        trim_dead(conn, queue, lessee.retention)
                        buried = True
        candidates: list[tuple[tuple[int, int], tuple[int, int, str, str, int] | LaneHead]] = [
            *plain_candidates
        ]
        if buried:
            plain_candidates = None
        candidates += [(head.order, head) for head in lanes.heads(conn, now, wanted)]
        if not candidates:
            if buried:
                continue
            break
        candidates.sort(key=lambda item: item[0])
        handed = 0
        for _, item in candidates:
            if handed >= wanted:
                break
            if isinstance(item, LaneHead):
                dies = lessee.lease_until is not None and item.delivered >= lessee.max_deliveries
                if not lanes.admits(conn, item, dies, skip):
                    continue
                delivery = _hand_out(
                    conn, item.queue, item.message_id, -item.order[0], item.delivered, lessee, now
                )
                lanes.handed(item, delivery)
                if delivery is not None:
                    deliveries.append(delivery)
                break  # the lane's head and turn changed: look again
            negative_priority, _, queue, message_id, delivered = item
            delivery = _hand_out(
                conn, queue, message_id, -negative_priority, delivered, lessee, now
            )
            handed += 1
            plain_candidates = None
            if delivery is not None:
                deliveries.append(delivery)
    lanes.finish()
    return deliveries


def _hand_out(
    conn: sqlite3.Connection,
    queue: str,
    message_id: str,
    priority: int,
    delivered: int,
    lessee: Lessee,
    now: float,
) -> Delivery | None:
    """Lease (or take) one ready message; None when it went dead instead."""
    count = delivered + 1
    if lessee.lease_until is None:
        row = conn.execute(
            "DELETE FROM messages WHERE queue = ? AND id = ? RETURNING payload, created_at",
            (queue, message_id),
        ).fetchone()
        lease = Lease(queue, message_id, "")
        return Delivery(lease, bytes(row[0]), priority, count, float(row[1]))
    if count > lessee.max_deliveries:
        conn.execute(
            "UPDATE messages SET state = 'dead', delivery_count = ?, "
            "dead_reason = ?, dead_detail = ?, dead_at = ? WHERE queue = ? AND id = ?",
            (
                count,
                DeadReason.MAX_DELIVERIES.value,
                f"handed out {delivered} times without being acknowledged",
                now,
                queue,
                message_id,
            ),
        )
        trim_dead(conn, queue, lessee.retention)
        return None
    row = conn.execute(
        "SELECT payload, created_at, rowid FROM messages WHERE queue = ? AND id = ?",
        (queue, message_id),
    ).fetchone()
    if not isinstance(row[0], bytes) or not is_number(row[1]):
        column, value = (
            ("payload", row[0]) if not isinstance(row[0], bytes) else ("created_at", row[1])
        )
        bury_corrupt(conn, int(row[2]), f"column {column} holds {value!r}"[:300], now)
        trim_dead(conn, queue, lessee.retention)
        return None
    token = f"{lessee.consumer_id}:{count}"
    conn.execute(
        "UPDATE messages SET state = 'inflight', delivery_count = ?, "
        "lease_until = ?, lease_token = ? WHERE queue = ? AND id = ?",
        (count, lessee.lease_until, token, queue, message_id),
    )
    return Delivery(Lease(queue, message_id, token), row[0], priority, count, float(row[1]))


_DUE_SQL = (  # "< ''": numbers only (see promote_due)
    "SELECT (SELECT MIN(eta) FROM messages WHERE queue = ?1 AND state = 'delayed' AND eta < ''),"
    " (SELECT MIN(lease_until) FROM messages WHERE queue = ?1 AND state = 'inflight'"
    "  AND lease_until < ''),"
    " (SELECT MIN(dependency_deadline) FROM messages WHERE queue = ?1 AND state = 'waiting'"
    "  AND dependency_deadline IS NOT NULL)"
)


def next_due(conn: sqlite3.Connection, queues: list[str]) -> float | None:
    """The earliest time a delayed message comes due, a lease expires or a dependency
    deadline passes in ``queues`` (one statement per queue; a held-back lane's time is
    :func:`lanes_due`'s)."""
    times: list[float] = []
    for queue in queues:
        row = conn.execute(_DUE_SQL, (queue,)).fetchone()
        times.extend(float(value) for value in row or () if is_number(value))
    return min(times) if times else None
