"""Limits at fetch on SQLite, inside the fetch's transaction (see
:mod:`tq_kombu.store.contract.limits`).

A limited message carries its *lane* (``messages.lane``: its sorted limit tags as JSON;
NULL for a plain message, which therefore pays nothing). ``lanes`` holds one row per
queue and lane: its *turn* (the seq counter when it was last served: its head competes
at ``(priority, max(head seq, turn))``, so lanes of one priority take turns) and
``blocked_until`` (set when its limits refused its head: the time a rate admits it or
the earliest lease expiry of the slots it waits for; cleared, for a lane that
``waits_for_slot``, by the schema's triggers when a limited lease ends, and for every
lane by a definition change). A blocked lane is not looked
at before its time, and the waiter does not count it as work.

Rate state is ``limit_state`` (GCRA TAT per name and key, :mod:`tq_kombu.store.gcra`);
a concurrency slot is a ``limit_slots`` row naming the lease token, counted only while
that message is in flight under that token and its lease has not run out.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import gcra
from ..contract import SKIP_SCAN_LIMIT
from ..model import Delivery, LimitTag
from .rows import take_seqs

#: Seconds of start counts kept for limit_status.
STARTS_KEPT_SECONDS = 3600


def to_us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def lane_of(limits: Sequence[LimitTag]) -> str | None:
    """The lane of a message with these tags (None: no limits)."""
    if not limits:
        return None
    return json.dumps(sorted({(t.kind, t.name, t.key) for t in limits}), separators=(",", ":"))


def tags_of(lane: object) -> list[LimitTag]:
    """The tags of a lane; none for a value tq did not write (it then limits nothing)."""
    try:
        return [LimitTag(str(kind), str(name), str(key)) for kind, name, key in json.loads(lane)]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def note_lane(conn: sqlite3.Connection, queue: str, lane: str) -> None:
    conn.execute("INSERT OR IGNORE INTO lanes (queue, lane) VALUES (?, ?)", (queue, lane))


_HEADS_SQL = """
    SELECT l.lane, l.turn, m.priority, m.seq, m.id, m.delivery_count, m.task_name
    FROM lanes l JOIN messages m ON m.rowid = (
        SELECT rowid FROM messages WHERE queue = l.queue AND lane = l.lane
            AND state = 'ready' ORDER BY priority DESC, seq LIMIT 1)
    WHERE l.queue = ? AND (l.blocked_until IS NULL OR l.blocked_until <= ?)
"""


@dataclass(frozen=True)
class LaneHead:
    """The first ready message of an open lane, with its place in the hand-out order."""

    order: tuple[int, int]
    queue: str
    message_id: str
    delivered: int
    lane: str
    task_name: str


def lane_heads(conn: sqlite3.Connection, queue: str, now: float) -> list[LaneHead]:
    return [
        LaneHead((-int(priority), max(int(seq), int(turn))), queue, mid, int(count), lane, name)
        for lane, turn, priority, seq, mid, count, name in conn.execute(_HEADS_SQL, (queue, now))
    ]


@dataclass
class Admission:
    """What one admitted start writes."""

    tats: list[tuple[str, str, int]] = field(default_factory=list)
    slots: list[tuple[str, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


def _held(conn: sqlite3.Connection, name: str, key: str, now: float) -> tuple[int, float | None]:
    """Slots of (name, key) held now, and when the first of those leases runs out."""
    row = conn.execute(
        "SELECT COUNT(*), MIN(m.lease_until) FROM limit_slots s JOIN messages m "
        "ON m.queue = s.queue AND m.id = s.id AND m.state = 'inflight' "
        "AND m.lease_token = s.token AND m.lease_until > ? WHERE s.name = ? AND s.key = ?",
        (now, name, key),
    ).fetchone()
    return int(row[0]), (None if row[1] is None else float(row[1]))


def judge(conn: sqlite3.Connection, lane: str, now: float) -> tuple[Admission | None, float, bool]:
    """The writes of a start under ``lane``'s limits if all admit it now; else None,
    the time to look again (a rate's next start, or the first lease that runs out), and
    whether a slot is missing (a freed slot wakes the lane earlier)."""
    tags = tags_of(lane)
    names = sorted({tag.name for tag in tags})
    marks = ",".join("?" * len(names))
    definitions = {
        row[0]: row[1:]
        for row in conn.execute(
            f"SELECT name, kind, interval_us, tolerance_us, slots FROM limits WHERE name IN ({marks})",
            names,
        )
    }
    admission, waits, now_us, slot_missing = Admission(), [], to_us(now), False
    for tag in tags:
        definition = definitions.get(tag.name)
        if definition is None:
            continue  # an unknown name limits nothing
        kind, interval_us, tolerance_us, slots = definition
        admission.names.add(tag.name)
        if kind == "rate":
            row = conn.execute(
                "SELECT tat_us FROM limit_state WHERE name = ? AND key = ?", (tag.name, tag.key)
            ).fetchone()
            grant = gcra.take(
                None if row is None else int(row[0]), now_us, interval_us, tolerance_us
            )
            if grant.allowed:
                admission.tats.append((tag.name, tag.key, grant.tat_us))
            else:
                waits.append(grant.next_start_us / 1_000_000)
        else:
            held, first_expiry = _held(conn, tag.name, tag.key, now)
            if held >= slots:
                waits.append(first_expiry if first_expiry is not None else now)
                slot_missing = True
            admission.slots.append((tag.name, tag.key))
    if waits:
        return None, max(waits), slot_missing
    return admission, now, False


def start(
    conn: sqlite3.Connection,
    queue: str,
    message_id: str,
    lane: str,
    admission: Admission,
    token: str,
    now: float,
) -> None:
    """Write one admitted start: TATs, slots (for a lease), counts, and the lane's turn."""
    conn.executemany(
        "INSERT OR REPLACE INTO limit_state (name, key, tat_us) VALUES (?, ?, ?)",
        admission.tats,
    )
    if token:
        conn.executemany(
            "INSERT OR REPLACE INTO limit_slots (name, key, queue, id, token) "
            "VALUES (?, ?, ?, ?, ?)",
            [(name, key, queue, message_id, token) for name, key in admission.slots],
        )
    second = int(now)
    for name in sorted(admission.names):
        inserted = conn.execute(
            "INSERT INTO limit_starts (name, second, n) VALUES (?, ?, 1) "
            "ON CONFLICT (name, second) DO UPDATE SET n = n + 1 RETURNING n",
            (name, second),
        ).fetchone()
        if inserted is not None and inserted[0] == 1:  # a new second: forget old ones
            conn.execute(
                "DELETE FROM limit_starts WHERE name = ? AND second < ?",
                (name, second - STARTS_KEPT_SECONDS),
            )
    turn = take_seqs(conn, 1)
    conn.execute("UPDATE lanes SET turn = ? WHERE queue = ? AND lane = ?", (turn, queue, lane))


def limited_queues(conn: sqlite3.Connection, queues: list[str]) -> list[str]:
    """Those of ``queues`` that have lanes (one query; plain queues then pay no more)."""
    marks = ",".join("?" * len(queues))
    rows = conn.execute(f"SELECT DISTINCT queue FROM lanes WHERE queue IN ({marks})", queues)
    present = {row[0] for row in rows}
    return [queue for queue in queues if queue in present]


class LaneScan:
    """The lanes one fetch looks at: a lane its limits refuse is blocked and closed for
    the fetch; after SKIP_SCAN_LIMIT refusals in a queue its other lanes wait too."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = queues
        self.closed: set[tuple[str, str]] = set()
        self.refused: Counter[str] = Counter()
        self.admission: Admission | None = None

    def heads(self, conn: sqlite3.Connection, now: float) -> list[LaneHead]:
        return [
            head
            for queue in self.queues
            if self.refused[queue] < SKIP_SCAN_LIMIT
            for head in lane_heads(conn, queue, now)
            if (queue, head.lane) not in self.closed
        ]

    def admits(
        self, conn: sqlite3.Connection, head: LaneHead, dies: bool, skip: list[str], now: float
    ) -> bool:
        """Whether ``head`` may be handed out (one that dies of max_deliveries starts
        nothing); if not, its lane is closed (and blocked when its limits refuse)."""
        self.admission = None
        if dies:
            return True
        if head.task_name not in skip:
            admission, wake, slot_missing = judge(conn, head.lane, now)
            if admission is not None:
                self.admission = admission
                return True
            block(conn, head.queue, head.lane, wake, slot_missing)
        self.closed.add((head.queue, head.lane))
        self.refused[head.queue] += 1
        return False

    def started(
        self, conn: sqlite3.Connection, head: LaneHead, delivery: Delivery, now: float
    ) -> None:
        if self.admission is not None:
            token = delivery.lease.token
            start(conn, head.queue, head.message_id, head.lane, self.admission, token, now)


def block(
    conn: sqlite3.Connection, queue: str, lane: str, until: float, waits_for_slot: bool
) -> None:
    conn.execute(
        "UPDATE lanes SET blocked_until = ?, waits_for_slot = ? WHERE queue = ? AND lane = ?",
        (until, int(waits_for_slot), queue, lane),
    )


def unblock_all(conn: sqlite3.Connection) -> None:
    """Every lane is looked at again (a definition changed)."""
    conn.execute(
        "UPDATE lanes SET blocked_until = NULL, waits_for_slot = 0 WHERE blocked_until IS NOT NULL"
    )


_OPEN_SQL = """
    SELECT EXISTS (SELECT 1 FROM lanes l WHERE l.queue = ?1
        AND (l.blocked_until IS NULL OR l.blocked_until <= ?2)
        AND EXISTS (SELECT 1 FROM messages
            WHERE queue = l.queue AND lane = l.lane AND state = 'ready')),
    (SELECT MIN(l.blocked_until) FROM lanes l WHERE l.queue = ?1 AND l.blocked_until > ?2
        AND EXISTS (SELECT 1 FROM messages
            WHERE queue = l.queue AND lane = l.lane AND state = 'ready'))
"""


def lane_work(conn: sqlite3.Connection, queue: str, now: float) -> tuple[bool, float | None]:
    """Whether an open lane of ``queue`` has a ready message, and when the first
    blocked one with a ready message is looked at again."""
    row = conn.execute(_OPEN_SQL, (queue, now)).fetchone()
    if row is None:
        return False, None
    return bool(row[0]), (None if row[1] is None else float(row[1]))
