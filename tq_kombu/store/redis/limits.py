"""Limits on Redis: definitions in ``{<prefix>:limits}:defs`` (``define_limits.lua``);
enforcement is in the hot path's scripts (``lua/includes/limits``)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from ..contract import Limits
from ..model import LimitDefinition, LimitKeyStatus, LimitStatus
from .client import RedisShared, translated
from .codec import read_meta

__all__ = ["RedisLimits"]

#: The window of ``recent_starts`` for a concurrency limit.
CONCURRENCY_WINDOW_SECONDS = 60.0


def _encoded(definition: LimitDefinition) -> str:
    return json.dumps(
        {
            "k": definition.kind,
            "i": definition.interval_us,
            "t": definition.tolerance_us,
            "s": definition.slots,
            "o": definition.origin,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _decoded(name: str, raw: bytes | str) -> LimitDefinition | None:
    try:
        d = json.loads(raw)
        return LimitDefinition(name, d["k"], d["i"], d["t"], d["s"], d["o"])
    except (ValueError, KeyError, TypeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLimits(RedisShared, Limits):
    """Define limits and read their state (``define_limits.lua``, reads)."""

    def _write(self, mode: str, args: list[Any]) -> int:
        return int(self._run("define_limits", [self.keys.limits("defs")], [mode, *args]))

    def _define_limits(self, definitions: list[LimitDefinition]) -> None:
        args: list[Any] = []
        for definition in definitions:
            args += [definition.name, _encoded(definition)]
        self._write("settings", args)

    def _set_limit(self, definition: LimitDefinition) -> None:
        self._write("runtime", [definition.name, _encoded(definition)])

    def _remove_limit(self, name: str) -> bool:
        return self._write("remove", [name]) > 0

    def _limits(self) -> list[LimitDefinition]:
        with translated():
            raw = self.client.hgetall(self.keys.limits("defs"))
        found = (_decoded(_text(name), value) for name, value in raw.items())
        return sorted((d for d in found if d is not None), key=lambda d: d.name)

    def _limit_status(self, name: str) -> LimitStatus | None:
        with translated():
            raw = self.client.hget(self.keys.limits("defs"), name)
            definition = None if raw is None else _decoded(name, raw)
            if definition is None:
                return None
            now = time.time()
            waiting = self._waiting_by_key(name)
            running: dict[str, int] = {}
            next_start: dict[str, float | None] = {}
            if definition.kind == "concurrency":
                for key, members in self._state_keys("slots", name):
                    running[key] = sum(self._holds(member) for member in members)
            else:
                for key, tat in self._state_keys("tat", name):
                    if tat and int(tat) > now * 1e6:
                        start = (int(tat) - definition.tolerance_us) / 1e6
                        next_start[key] = start if start > now else None
            starts = self.client.hgetall(self.keys.limits("starts", name))
        window = CONCURRENCY_WINDOW_SECONDS
        if definition.kind == "rate":
            window = max(CONCURRENCY_WINDOW_SECONDS, definition.interval_us / 1e6)
        recent = sum(int(n) for second, n in starts.items() if int(second) >= int(now - window))
        keys = sorted({*waiting, *(k for k, n in running.items() if n), *next_start})
        return LimitStatus(
            definition,
            [
                LimitKeyStatus(k, waiting.get(k, 0), running.get(k, 0), next_start.get(k))
                for k in keys
            ],
            recent,
            window,
        )

    def _state_keys(self, part: str, name: str) -> Iterator[tuple[str, Any]]:
        """(key, value) of each ``tat`` (its TAT) or ``slots`` (its holders) of a limit."""
        head = self.keys.limits(part, name, "")
        for found in self.client.scan_iter(match=_escaped(head + "*"), count=500):
            if part == "slots":
                yield _text(found)[len(head) :], self.client.smembers(found)
            else:
                yield _text(found)[len(head) :], self.client.get(found)

    def _holds(self, member: bytes) -> bool:
        """Whether a slot holder's lease still holds and has not run out (see includes/limits)."""
        queue, rest = member.decode().split("\0", 1)
        message_id, token = rest.split("\0", 1)
        keys = self.keys.queue(queue)
        held = read_meta(self.client.hget(keys["meta"], message_id)).get("l") == token
        deadline_ms = self.client.zscore(keys["inflight"], message_id)
        return held and deadline_ms is not None and deadline_ms > time.time() * 1000

    def _waiting_by_key(self, name: str) -> dict[str, int]:
        """Ready messages under ``name`` per key, from every queue's lanes."""
        waiting: dict[str, int] = defaultdict(int)
        for found in self.client.scan_iter(match=self.keys.lane_pattern(), count=500):
            queue_tag, lane = _text(found).split("}:lane:", 1)
            try:
                tags = json.loads(lane)
            except ValueError:
                continue
            if not isinstance(tags, list):
                continue
            keys = {
                tag[2] for tag in tags if isinstance(tag, list) and len(tag) == 3 and tag[1] == name
            }
            members = self.client.zrange(found, 0, -1)
            if keys and members:
                scores = self.client.zmscore(queue_tag + "}:ready", members)
                count = sum(score is not None for score in scores)
                for key in keys:
                    waiting[key] += count
        return {k: v for k, v in waiting.items() if v}


def _escaped(pattern: str) -> str:
    """``pattern`` with glob characters before its final ``*`` taken literally."""
    body = pattern[:-1]
    return "".join("\\" + c if c in "*?[]\\" else c for c in body) + "*"
