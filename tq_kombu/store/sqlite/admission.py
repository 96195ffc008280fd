"""Whether a lane's limits admit a start, and the writes of a start, for one fetch on
SQLite (inside its transaction; see :mod:`.lanes`).

One :class:`Admissions` lives as long as one fetch. It reads the limit definitions once
and each (name, key)'s GCRA TAT at most once, keeps the TATs it moves in memory, and
writes them, with the per-second start counts and the turns of the lanes it served,
once at the end of the fetch (:meth:`Admissions.flush`): a fetch that starts n messages
of one key then writes that key's TAT and its lane's turn once, not n times.
Concurrency slots are written at once (the next decision counts them).

Each rate decision is taken at its own instant (the fetch's time, or later when the
clock moved on while the fetch ran): GCRA (:mod:`tq_kombu.store.gcra`) judges starts at
the moment they are made, so a limit far above the drain rate admits every start of a
fetch instead of one per microsecond of the fetch's single timestamp.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import gcra
from ..model import LimitTag
from .rows import take_seqs

#: Seconds of start counts kept for limit_status.
STARTS_KEPT_SECONDS = 3600


def to_us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def tags_of(lane: object) -> list[LimitTag]:
    """The tags of a lane; none for a value tq did not write (it then limits nothing)."""
    try:
        return [LimitTag(str(kind), str(name), str(key)) for kind, name, key in json.loads(lane)]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


@dataclass
class Admission:
    """What one admitted start writes, and when it was decided."""

    at: float
    tats: list[tuple[str, str, int]] = field(default_factory=list)
    slots: list[tuple[str, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Refusal:
    """Why a lane may not start now: the time to look again (a rate's next start, or
    the first lease that runs out), and whether a slot is missing (a freed slot wakes
    the lane earlier)."""

    wake: float
    slot_missing: bool


def _held(conn: sqlite3.Connection, name: str, key: str, now: float) -> tuple[int, float | None]:
    """Slots of (name, key) held now, and when the first of those leases runs out."""
    row = conn.execute(
        "SELECT COUNT(*), MIN(m.lease_until) FROM limit_slots s JOIN messages m "
        "ON m.queue = s.queue AND m.id = s.id AND m.state = 'inflight' "
        "AND m.lease_token = s.token AND m.lease_until > ? WHERE s.name = ? AND s.key = ?",
        (now, name, key),
    ).fetchone()
    return int(row[0]), (None if row[1] is None else float(row[1]))


class Admissions:
    """The limit decisions and start writes of one fetch (see the module's notes)."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self._definitions: dict[str, tuple[str, int, int, int]] | None = None
        self._tags: dict[str, list[LimitTag]] = {}
        self._tats: dict[tuple[str, str], int | None] = {}
        self._moved: set[tuple[str, str]] = set()
        self._starts: Counter[tuple[str, int]] = Counter()
        self._seq: int | None = None  # the seq counter when this fetch first started one
        self._turns: dict[tuple[str, str], int] = {}  # lane -> its turn, provisional
        self._taken = 0

    def _definition(self, name: str) -> tuple[str, int, int, int] | None:
        if self._definitions is None:
            self._definitions = {
                str(row[0]): (str(row[1]), int(row[2]), int(row[3]), int(row[4]))
                for row in self.conn.execute(
                    "SELECT name, kind, interval_us, tolerance_us, slots FROM limits"
                )
            }
        return self._definitions.get(name)

    def _tat(self, name: str, key: str) -> int | None:
        if (name, key) not in self._tats:
            row = self.conn.execute(
                "SELECT tat_us FROM limit_state WHERE name = ? AND key = ?", (name, key)
            ).fetchone()
            self._tats[(name, key)] = None if row is None else int(row[0])
        return self._tats[(name, key)]

    def judge(self, lane: str) -> Admission | Refusal:
        """The writes of a start under ``lane``'s limits if all admit it now, else why not."""
        tags = self._tags.get(lane)
        if tags is None:
            tags = self._tags[lane] = tags_of(lane)
        at = max(self.now, time.time())  # this decision's instant (never before the fetch)
        admission, waits, slot_missing = Admission(at), [], False
        for tag in tags:
            definition = self._definition(tag.name)
            if definition is None:
                continue  # an unknown name limits nothing
            kind, interval_us, tolerance_us, slots = definition
            admission.names.add(tag.name)
            if kind == "rate":
                grant = gcra.take(
                    self._tat(tag.name, tag.key), to_us(at), interval_us, tolerance_us
                )
                if grant.allowed:
                    admission.tats.append((tag.name, tag.key, grant.tat_us))
                else:
                    waits.append(grant.next_start_us / 1_000_000)
            else:
                held, first_expiry = _held(self.conn, tag.name, tag.key, self.now)
                if held >= slots:
                    waits.append(first_expiry if first_expiry is not None else self.now)
                    slot_missing = True
                admission.slots.append((tag.name, tag.key))
        if waits:
            return Refusal(max(waits), slot_missing)
        return admission

    def start(
        self, queue: str, message_id: str, lane: str, admission: Admission, token: str
    ) -> None:
        """Note one admitted start: its slots (for a lease) now (the next decision
        counts them); TATs, counts and the lane's turn for :meth:`flush` (:meth:`turn`
        tells the fetch the turn meanwhile)."""
        for name, key, tat_us in admission.tats:
            self._tats[(name, key)] = tat_us
            self._moved.add((name, key))
        if token:
            self.conn.executemany(
                "INSERT OR REPLACE INTO limit_slots (name, key, queue, id, token) "
                "VALUES (?, ?, ?, ?, ?)",
                [(name, key, queue, message_id, token) for name, key in admission.slots],
            )
        for name in admission.names:
            self._starts[(name, int(admission.at))] += 1
        if self._seq is None:
            row = self.conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
            self._seq = int(row[0])
        self._taken += 1
        self._turns[(queue, lane)] = self._seq + self._taken

    def turn(self, queue: str, lane: str) -> int | None:
        """The turn this fetch gave ``lane`` (None: it served none of it)."""
        return self._turns.get((queue, lane))

    def flush(self) -> None:
        """Write the TATs moved, the starts counted and the lanes' turns (the seq
        numbers taken one by one, in the order of the starts)."""
        if self._taken and self._seq is not None:
            offset = take_seqs(self.conn, self._taken) - (self._seq + 1)
            self.conn.executemany(
                "UPDATE lanes SET turn = ? WHERE queue = ? AND lane = ?",
                [(turn + offset, queue, lane) for (queue, lane), turn in self._turns.items()],
            )
            self._seq, self._taken = None, 0
            self._turns.clear()
        self.conn.executemany(
            "INSERT OR REPLACE INTO limit_state (name, key, tat_us) VALUES (?, ?, ?)",
            [(name, key, self._tats[(name, key)]) for name, key in sorted(self._moved)],
        )
        self._moved.clear()
        for (name, second), count in sorted(self._starts.items()):
            total = self.conn.execute(
                "INSERT INTO limit_starts (name, second, n) VALUES (?, ?, ?) "
                "ON CONFLICT (name, second) DO UPDATE SET n = n + excluded.n RETURNING n",
                (name, second, count),
            ).fetchone()
            if total is not None and total[0] == count:  # a new second: forget old ones
                self.conn.execute(
                    "DELETE FROM limit_starts WHERE name = ? AND second < ?",
                    (name, second - STARTS_KEPT_SECONDS),
                )
        self._starts.clear()
