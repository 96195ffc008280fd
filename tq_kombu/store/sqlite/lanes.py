"""Limits at fetch on SQLite, inside the fetch's transaction (see
:mod:`tq_kombu.store.contract.limits`).

A limited message carries its *lane* (``messages.lane``: its sorted limit tags as JSON;
NULL for a plain message, which therefore pays nothing). ``lanes`` holds one row per
queue and lane: its *turn* (the seq counter when it was last served: its head competes
at ``(priority, max(head seq, turn))``, so lanes of one priority take turns) and
``blocked_until`` (set when its limits refused its head: the time a rate admits it or
the earliest lease expiry of the slots it waits for; cleared, for a lane that
``waits_for_slot``, by the schema's triggers when a lease under a concurrency limit
ends, and for every lane by a definition change). A blocked lane is not looked at
before its time, and the waiter does not count it as work.

Rate state is ``limit_state`` (GCRA TAT per name and key, :mod:`tq_kombu.store.gcra`);
a concurrency slot is a ``limit_slots`` row naming the lease token, counted only while
that message is in flight under that token and its lease has not run out. The decisions
and the writes of one fetch's starts are :mod:`.admission`'s.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..contract import SKIP_SCAN_LIMIT
from ..model import Delivery, LimitTag
from .admission import Admission, Admissions


def lane_of(limits: Sequence[LimitTag]) -> str | None:
    """The lane of a message with these tags (None: no limits)."""
    if not limits:
        return None
    return json.dumps(sorted({(t.kind, t.name, t.key) for t in limits}), separators=(",", ":"))


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


def lane_heads_and_turns(
    conn: sqlite3.Connection, queue: str, now: float
) -> list[tuple[LaneHead, int]]:
    """The head of each open lane of ``queue``, with the lane's stored turn."""
    return [
        (
            LaneHead(
                (-int(priority), max(int(seq), int(turn))), queue, mid, int(count), lane, name
            ),
            int(turn),
        )
        for lane, turn, priority, seq, mid, count, name in conn.execute(_HEADS_SQL, (queue, now))
    ]


def limited_queues(conn: sqlite3.Connection, queues: list[str]) -> list[str]:
    """Those of ``queues`` that have lanes (one query; plain queues then pay no more)."""
    marks = ",".join("?" * len(queues))
    rows = conn.execute(f"SELECT DISTINCT queue FROM lanes WHERE queue IN ({marks})", queues)
    present = {row[0] for row in rows}
    return [queue for queue in queues if queue in present]


_NEXT_SQL = """
    SELECT priority, seq, id, delivery_count, task_name FROM messages
    WHERE queue = ? AND lane = ? AND state = 'ready' ORDER BY priority DESC, seq LIMIT ?
"""


class LaneScan:
    """The lanes one fetch looks at: a lane its limits refuse is blocked and closed for
    the fetch; after SKIP_SCAN_LIMIT refusals in a queue its other lanes wait too.
    Each queue's heads are read once; a lane whose head was handed out reads its next
    few ready messages in one query (nothing else in the fetch changes a lane's ready
    messages). :meth:`finish` writes what the fetch's starts left in memory (see
    :mod:`.admission`)."""

    def __init__(self, conn: sqlite3.Connection, queues: list[str], now: float) -> None:
        self.queues = queues
        self.closed: set[tuple[str, str]] = set()
        self.refused: Counter[str] = Counter()
        self.admissions = Admissions(conn, now)
        self.admission: Admission | None = None
        self._ahead: dict[str, dict[str, list[LaneHead]]] = {}  # queue -> lane -> next
        self._turns: dict[tuple[str, str], int] = {}  # the lanes' stored turns
        self._drained: set[tuple[str, str]] = set()  # lanes whose ready messages all went

    def heads(self, conn: sqlite3.Connection, now: float, wanted: int) -> list[LaneHead]:
        """The heads of the open lanes, placed by the turns this fetch gave them."""
        found: list[LaneHead] = []
        for queue in self.queues:
            if self.refused[queue] >= SKIP_SCAN_LIMIT:
                continue
            for lane, ahead in self._lanes(conn, queue, now).items():
                if (queue, lane) in self.closed:
                    continue
                if not ahead and (queue, lane) not in self._drained:
                    ahead += self._next(conn, queue, lane, wanted)
                if ahead:
                    found.append(self._placed(ahead[0]))
        return found

    def _lanes(self, conn: sqlite3.Connection, queue: str, now: float) -> dict[str, list[LaneHead]]:
        lanes = self._ahead.get(queue)
        if lanes is None:
            lanes = self._ahead[queue] = {}
            for head, turn in lane_heads_and_turns(conn, queue, now):
                lanes[head.lane] = [head]
                self._turns[(queue, head.lane)] = turn
        return lanes

    def _next(self, conn: sqlite3.Connection, queue: str, lane: str, wanted: int) -> list[LaneHead]:
        turn = self._turns[(queue, lane)]
        rows = conn.execute(_NEXT_SQL, (queue, lane, max(wanted, 1))).fetchall()
        if len(rows) < max(wanted, 1):
            self._drained.add((queue, lane))
        return [
            LaneHead((-int(priority), max(int(seq), turn)), queue, mid, int(count), lane, name)
            for priority, seq, mid, count, name in rows
        ]

    def _placed(self, head: LaneHead) -> LaneHead:
        turn = self.admissions.turn(head.queue, head.lane)
        if turn is None or turn <= head.order[1]:
            return head
        order = (head.order[0], turn)  # (built directly: dataclasses.replace is slow)
        return LaneHead(
            order, head.queue, head.message_id, head.delivered, head.lane, head.task_name
        )

    def admits(self, conn: sqlite3.Connection, head: LaneHead, dies: bool, skip: list[str]) -> bool:
        """Whether ``head`` may be handed out (one that dies of max_deliveries starts
        nothing); if not, its lane is closed (and blocked when its limits refuse)."""
        self.admission = None
        if dies:
            return True
        if head.task_name not in skip:
            verdict = self.admissions.judge(head.lane)
            if isinstance(verdict, Admission):
                self.admission = verdict
                return True
            block(conn, head.queue, head.lane, verdict.wake, verdict.slot_missing)
        self.closed.add((head.queue, head.lane))
        self.refused[head.queue] += 1
        return False

    def handed(self, head: LaneHead, delivery: Delivery | None) -> None:
        """``head`` left its lane (started, or dead instead when ``delivery`` is None)."""
        ahead = self._ahead[head.queue][head.lane]
        if ahead and ahead[0].message_id == head.message_id:
            ahead.pop(0)
        if delivery is not None and self.admission is not None:
            token = delivery.lease.token
            self.admissions.start(head.queue, head.message_id, head.lane, self.admission, token)

    def finish(self) -> None:
        self.admissions.flush()


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
