"""Limits on Redis: definitions in ``{<prefix>:limits}:defs`` (``define_limits.lua``);
enforcement is in the hot path's scripts (``lua/includes/limits``)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from ..contract import Limits
from ..model import LimitDefinition, LimitKeyStatus, LimitStatus
from .client import RedisShared, translated

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
            next_start: dict[str, float] = {}
            for part in ("slots", "tat"):
                pattern = self.keys.limits(part, name, "") + "*"
                head = len(self.keys.limits(part, name, ""))
                for key in self.client.scan_iter(match=_escaped(pattern), count=500):
                    limit_key = _text(key)[head:]
                    if part == "slots":
                        running[limit_key] = int(self.client.scard(key))
                    else:
                        tat = self.client.get(key)
                        start = (int(tat) - definition.tolerance_us) / 1e6 if tat else 0.0
                        if start > now:
                            next_start[limit_key] = start
            starts = self.client.hgetall(self.keys.limits("starts", name))
        window = CONCURRENCY_WINDOW_SECONDS
        if definition.kind == "rate":
            window = max(definition.interval_us / 1e6, 1.0)
        recent = sum(int(n) for second, n in starts.items() if int(second) >= now - window)
        keys = sorted({*waiting, *running, *next_start})
        return LimitStatus(
            definition,
            [
                LimitKeyStatus(k, waiting.get(k, 0), running.get(k, 0), next_start.get(k))
                for k in keys
            ],
            recent,
            window,
        )

    def _waiting_by_key(self, name: str) -> dict[str, int]:
        """Ready messages under ``name`` per key, from every queue's lanes."""
        waiting: dict[str, int] = defaultdict(int)
        for lane_key in self.client.scan_iter(match=self.keys.lane_pattern(), count=500):
            lane = _text(lane_key).split("}:lane:", 1)[1]
            try:
                tags = json.loads(lane)
            except ValueError:
                continue
            keys = {tag[2] for tag in tags if len(tag) == 3 and tag[1] == name}
            if keys:
                count = int(self.client.zcard(lane_key))
                for key in keys:
                    waiting[key] += count
        return {k: v for k, v in waiting.items() if v}


def _escaped(pattern: str) -> str:
    """``pattern`` with glob characters before its final ``*`` taken literally."""
    body = pattern[:-1]
    return "".join("\\" + c if c in "*?[]\\" else c for c in body) + "*"
