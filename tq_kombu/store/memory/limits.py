"""The memory store's Limits (see :mod:`tq_kombu.store.contract.limits`).

Definitions, GCRA TATs and per-second start counts live in dicts under the store's
lock. Concurrency slots are not kept apart: a slot of (name, key) is held by each
message in flight under that limit whose lease has not run out, so every way a lease
ends (ack, release, requeue, bury, expiry) frees it and a stale token cannot.

A limited message sits in a *lane*: its queue and its sorted limit tags. A lane's turn
is the counter value when it was last served; a lane's head competes at
``(priority, max(head seq, turn))``, so lanes of one priority take turns with each
other (round robin between keys) and with plain messages by arrival.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .. import gcra
from ..contract import SKIP_SCAN_LIMIT
from ..model import LimitDefinition, LimitKeyStatus, LimitStatus, LimitTag, State
from .records import MemoryState, Record

#: Seconds of start counts that limit_status may report (the longest window kept).
STARTS_KEPT_SECONDS = 3600
#: The window of ``recent_starts`` for a concurrency limit (and the shortest for a rate).
RECENT_WINDOW_SECONDS = 60.0


def to_us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def recent_window_seconds(definition: LimitDefinition) -> float:
    """``recent_starts`` covers 60 s, or one emission interval of a slower rate."""
    if definition.kind == "rate":
        return max(RECENT_WINDOW_SECONDS, definition.interval_us / 1_000_000)
    return RECENT_WINDOW_SECONDS


@dataclass
class Verdict:
    """Whether a lane's head may start now; if not, when a rate admits it (None: a
    concurrency slot must free first)."""

    admitted: bool
    wake_us: int | None = None
    tats: dict[tuple[str, str], int] = field(default_factory=dict)


class MemoryLimits(MemoryState):
    """Definitions, decisions and status of limits."""

    # -- the Limits hooks -----------------------------------------------------
    def _define_limits(self, definitions: list[LimitDefinition]) -> None:
        with self._changed:
            for definition in definitions:
                current = self._limit_defs.get(definition.name)
                if current is None or current.origin != "runtime":
                    self._limit_defs[definition.name] = definition
            self._changed.notify_all()

    def _set_limit(self, definition: LimitDefinition) -> None:
        with self._changed:
            self._limit_defs[definition.name] = definition
            self._changed.notify_all()

    def _remove_limit(self, name: str) -> bool:
        with self._changed:
            removed = self._limit_defs.pop(name, None) is not None
            self._changed.notify_all()
            return removed

    def _limits(self) -> list[LimitDefinition]:
        with self._changed:
            return [self._limit_defs[name] for name in sorted(self._limit_defs)]

    def _limit_status(self, name: str) -> LimitStatus | None:
        with self._changed:
            definition = self._limit_defs.get(name)
            if definition is None:
                return None
            now = self.clock()
            now_us = to_us(now)
            waiting: Counter[str] = Counter()
            running: Counter[str] = Counter()
            for record in self._limited():
                for tag in record.limits:
                    if tag.name != name:
                        continue
                    if record.state == State.READY:
                        waiting[tag.key] += 1
                    elif definition.kind == "concurrency" and self._holds_slot(record, now):
                        running[tag.key] += 1
            next_starts: dict[str, float] = {}
            for (limit, key), tat in self._tats.items():
                if limit == name and definition.kind == "rate" and tat > now_us:
                    grant = self._rate_grant(definition, key, now_us)
                    if not grant.allowed:
                        next_starts[key] = grant.next_start_us / 1_000_000
            keys = set(waiting) | set(running) | set(next_starts)
            statuses = [
                LimitKeyStatus(key, waiting[key], running[key], next_starts.get(key))
                for key in sorted(keys)
            ]
            window = recent_window_seconds(definition)
            counts = self._starts.get(name, {})
            recent = sum(n for second, n in counts.items() if second >= int(now - window))
            return LimitStatus(definition, statuses, recent, window)

    # -- decisions (under the lock) -------------------------------------------
    def _limited(self) -> list[Record]:
        return [r for q in self._messages.values() for r in q.values() if r.limits]

    @staticmethod
    def _holds_slot(record: Record, now: float) -> bool:
        return (
            record.state == State.INFLIGHT
            and record.lease_token is not None
            and (record.lease_until or 0.0) > now
        )

    def _running(self, now: float) -> Counter[tuple[str, str]]:
        """Slots held now per (name, key) of a concurrency limit."""
        held: Counter[tuple[str, str]] = Counter()
        for record in self._limited():
            if self._holds_slot(record, now):
                for tag in record.limits:
                    definition = self._limit_defs.get(tag.name)
                    if definition is not None and definition.kind == "concurrency":
                        held[(tag.name, tag.key)] += 1
        return held

    def _rate_grant(self, definition: LimitDefinition, key: str, now_us: int) -> gcra.Grant:
        tat = self._tats.get((definition.name, key))
        return gcra.take(tat, now_us, definition.interval_us, definition.tolerance_us, 1)

    def _verdict(
        self, limits: tuple[LimitTag, ...], now_us: int, running: Counter[tuple[str, str]]
    ) -> Verdict:
        """Whether every defined limit admits one more start (nothing is written)."""
        verdict = Verdict(True)
        waits: list[int] = []
        slot_missing = False
        for tag in limits:
            definition = self._limit_defs.get(tag.name)
            if definition is None:
                continue  # an unknown name limits nothing
            if definition.kind == "rate":
                grant = self._rate_grant(definition, tag.key, now_us)
                if grant.allowed:
                    verdict.tats[(tag.name, tag.key)] = grant.tat_us
                else:
                    waits.append(grant.next_start_us)
            elif running[(tag.name, tag.key)] >= definition.slots:
                slot_missing = True
        if waits or slot_missing:
            return Verdict(False, None if slot_missing else max(waits))
        return verdict

    def _start(
        self, record: Record, verdict: Verdict, running: Counter[tuple[str, str]] | None, now: float
    ) -> None:
        """Record one start of ``record`` that ``verdict`` admitted (``running``: the
        slots to count it in, None when it is taken without a lease)."""
        self._tats.update(verdict.tats)
        second = int(now)
        for name in {tag.name for tag in record.limits if tag.name in self._limit_defs}:
            counts = self._starts.setdefault(name, {})
            counts[second] = counts.get(second, 0) + 1
            for old in [s for s in counts if s < second - STARTS_KEPT_SECONDS]:
                del counts[old]
        for tag in record.limits:
            definition = self._limit_defs.get(tag.name)
            if running is not None and definition is not None and definition.kind == "concurrency":
                running[(tag.name, tag.key)] += 1
        self._lane_turns[(record.info.queue, record.limits)] = next(self._seq)

    def _order(self, record: Record) -> tuple[int, int]:
        """Where a ready message stands in the hand-out order (see the module doc)."""
        turn = 0
        if record.limits:
            turn = self._lane_turns.get((record.info.queue, record.limits), 0)
        return (-record.info.priority, max(record.seq, turn))

    def _limit_wake(self, queues: list[str], now: float) -> float | None:
        """The earliest time a rate admits a ready limited message of ``queues`` (now,
        if one is admitted already)."""
        now_us, running, wakes = to_us(now), None, []
        for queue in queues:
            for record in self._messages.get(queue, {}).values():
                if record.limits and record.state == State.READY:
                    running = self._running(now) if running is None else running
                    verdict = self._verdict(record.limits, now_us, running)
                    if verdict.admitted:  # came due since the fetch looked
                        wakes.append(now)
                    elif verdict.wake_us is not None:
                        wakes.append(verdict.wake_us / 1_000_000)
        return min(wakes) if wakes else None

    def _startable_any(self, ready: list[Record], now: float) -> bool:
        """Whether one of these ready messages could be handed out now."""
        if any(not record.limits for record in ready):
            return True
        if not ready:
            return False
        running, now_us = self._running(now), to_us(now)
        return any(self._verdict(r.limits, now_us, running).admitted for r in ready)


class Picker:
    """The hand-out order of one fetch: plain messages by (priority, seq), lanes by
    (priority, turn) (see the module doc); a lane its limits refuse is closed for the
    fetch, and after SKIP_SCAN_LIMIT refusals in a queue so are its other lanes."""

    def __init__(
        self, store: MemoryLimits, queues: list[str], skip: set[str], now: float, leasing: bool
    ):
        self.store, self.now, self.leasing = store, now, leasing
        self.plain: list[Record] = []
        self.lanes: dict[tuple[str, tuple[LimitTag, ...]], list[Record]] = {}
        for queue in queues:
            for record in store._eligible(queue, skip):  # type: ignore[attr-defined]
                if record.limits:
                    self.lanes.setdefault((queue, record.limits), []).append(record)
                else:
                    self.plain.append(record)
        self.plain.sort(key=store._order, reverse=True)  # popped from the end
        self.refused: Counter[str] = Counter()
        self.running: Counter[tuple[str, str]] | None = None

    def next(self) -> Record | None:
        """The most urgent candidate left (taken out of the candidates), or None."""
        best: Record | None = self.plain[-1] if self.plain else None
        for records in self.lanes.values():
            if best is None or self.store._order(records[0]) < self.store._order(best):
                best = records[0]
        if best is None:
            return None
        if best.limits:
            lane = self.lanes[(best.info.queue, best.limits)]
            lane.pop(0)
            if not lane:
                del self.lanes[(best.info.queue, best.limits)]
        else:
            self.plain.pop()
        return best

    def admit(self, record: Record) -> bool:
        """Start ``record`` if its limits admit it; else close its lane for this fetch."""
        if self.running is None:
            self.running = self.store._running(self.now)
        at = max(self.now, self.store.clock())  # each start judged at its own instant
        verdict = self.store._verdict(record.limits, to_us(at), self.running)
        if verdict.admitted:
            self.store._start(record, verdict, self.running if self.leasing else None, at)
            return True
        queue = record.info.queue
        self.lanes.pop((queue, record.limits), None)
        self.refused[queue] += 1
        if self.refused[queue] >= SKIP_SCAN_LIMIT:
            for lane in [lane for lane in self.lanes if lane[0] == queue]:
                del self.lanes[lane]
        return False
