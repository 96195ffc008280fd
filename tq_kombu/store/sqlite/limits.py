"""The Limits slice on SQLite: definitions in ``limits``, and their status read from
the lanes, TATs, slots and per-second start counts that fetch keeps (see
:mod:`.lanes`). Every change of a definition unblocks every lane, so each consumer's
next fetch obeys it."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

from .. import gcra
from ..contract import Limits
from ..model import LimitDefinition, LimitKeyStatus, LimitStatus
from .admission import tags_of, to_us
from .db import UsesDatabase
from .lanes import unblock_all

#: The window of ``recent_starts`` for a concurrency limit (and the shortest for a rate).
RECENT_WINDOW_SECONDS = 60.0

_COLUMNS = "name, kind, interval_us, tolerance_us, slots, origin"


def _definition(row: sqlite3.Row | tuple) -> LimitDefinition:  # type: ignore[type-arg]
    name, kind, interval_us, tolerance_us, slots, origin = row
    return LimitDefinition(
        str(name), str(kind), int(interval_us), int(tolerance_us), int(slots), str(origin)
    )


def _write(conn: sqlite3.Connection, definition: LimitDefinition) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO limits ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (
            definition.name,
            definition.kind,
            definition.interval_us,
            definition.tolerance_us,
            definition.slots,
            definition.origin,
        ),
    )


def recent_window_seconds(definition: LimitDefinition) -> float:
    """``recent_starts`` covers 60 s, or one emission interval of a slower rate."""
    if definition.kind == "rate":
        return max(RECENT_WINDOW_SECONDS, definition.interval_us / 1_000_000)
    return RECENT_WINDOW_SECONDS


class SQLiteLimits(UsesDatabase, Limits):
    """Define limits and read their state."""

    def _define_limits(self, definitions: list[LimitDefinition]) -> None:
        with self.db.write("defining limits") as conn:
            runtime = {
                row[0] for row in conn.execute("SELECT name FROM limits WHERE origin = 'runtime'")
            }
            for definition in definitions:
                if definition.name not in runtime:
                    _write(conn, definition)
            unblock_all(conn)

    def _set_limit(self, definition: LimitDefinition) -> None:
        with self.db.write("setting a limit") as conn:
            _write(conn, definition)
            unblock_all(conn)

    def _remove_limit(self, name: str) -> bool:
        with self.db.write("removing a limit") as conn:
            removed = conn.execute("DELETE FROM limits WHERE name = ?", (name,)).rowcount > 0
            unblock_all(conn)
            return removed

    def _limits(self) -> list[LimitDefinition]:
        with self.db.read("listing limits") as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM limits ORDER BY name").fetchall()
        return [_definition(row) for row in rows]

    def _limit_status(self, name: str) -> LimitStatus | None:
        now = time.time()
        with self.db.write("reading a limit's status") as conn:  # one consistent view
            row = conn.execute(f"SELECT {_COLUMNS} FROM limits WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            definition = _definition(row)
            waiting: Counter[str] = Counter()
            for lane, count in conn.execute(
                "SELECT l.lane, (SELECT COUNT(*) FROM messages m WHERE m.queue = l.queue "
                "AND m.lane = l.lane AND m.state = 'ready') FROM lanes l"
            ):
                for tag in tags_of(lane):
                    if tag.name == name:
                        waiting[tag.key] += int(count)
            running: Counter[str] = Counter(
                {
                    str(key): int(count)
                    for key, count in conn.execute(
                        "SELECT s.key, COUNT(*) FROM limit_slots s JOIN messages m "
                        "ON m.queue = s.queue AND m.id = s.id AND m.state = 'inflight' "
                        "AND m.lease_token = s.token AND m.lease_until > ? "
                        "WHERE s.name = ? GROUP BY s.key",
                        (now, name),
                    )
                }
            )
            next_starts: dict[str, float] = {}
            if definition.kind == "rate":
                for key, tat in conn.execute(
                    "SELECT key, tat_us FROM limit_state WHERE name = ? AND tat_us > ?",
                    (name, to_us(now)),
                ):
                    grant = gcra.take(
                        int(tat), to_us(now), definition.interval_us, definition.tolerance_us
                    )
                    if not grant.allowed:
                        next_starts[str(key)] = grant.next_start_us / 1_000_000
            window = recent_window_seconds(definition)
            recent = conn.execute(
                "SELECT COALESCE(SUM(n), 0) FROM limit_starts WHERE name = ? AND second >= ?",
                (name, int(now - window)),
            ).fetchone()[0]
        keys = {k for k, n in waiting.items() if n} | {k for k, n in running.items() if n}
        keys |= set(next_starts)
        statuses = [
            LimitKeyStatus(key, waiting[key], running[key], next_starts.get(key))
            for key in sorted(keys)
        ]
        return LimitStatus(definition, statuses, int(recent), window)
