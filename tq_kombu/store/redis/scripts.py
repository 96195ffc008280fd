"""The Lua loader: one command per file in ``lua/``, shared snippets in ``lua/includes/``.

A line ``--@include "name"`` is replaced, at registration, by ``lua/includes/name.lua``
(itself expanded the same way); each include lands once per script, before its first
user. Constants come from Python: ``@NAME@`` in a script or an include is replaced by
:data:`CONSTANTS` ``[NAME]``; the includes ``queue_keys`` and ``key_names`` are generated
from :mod:`.keys`, and one include per :data:`~.keys.KEY_SUBSETS` entry (e.g. ``ack_keys``),
so no number, key order or key format is written twice.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from ...errors import StoreError
from ...priority import MAX_PRIORITY
from ..contract.dependencies import DEPENDENCY_RECORD_TTL_SECONDS, NAMED_PARENTS
from ..contract.hot_path import PROMOTE_LIMIT, SKIP_SCAN_LIMIT
from .keys import (
    DEPENDENCY_KEYS,
    EDGE_SEPARATOR,
    IN_USE_FLAG,
    KEY_SUBSETS,
    QUEUE_KEYS,
    SCORE_SPAN,
)

__all__ = ["CONSTANTS", "Scripts", "script_source"]

#: What ``@NAME@`` stands for in the Lua sources.
CONSTANTS: dict[str, int] = {
    "SCORE_SPAN": SCORE_SPAN,
    "MAX_PRIORITY": MAX_PRIORITY,
    "PROMOTE_LIMIT": PROMOTE_LIMIT,
    "SKIP_SCAN_LIMIT": SKIP_SCAN_LIMIT,
    "QUEUE_KEY_COUNT": len(QUEUE_KEYS),
    #: The layout of a queue's keys; a queue without it has its kept counts rebuilt.
    "LAYOUT_VERSION": 2,
    #: Waiting scores are dependency deadlines (ms); one without a deadline scores this
    #: plus its sequence, after every deadline (exact in a double up to 2**53).
    "NO_DEADLINE_SCORE": 2**50,
    #: The completion record TTL a script applies when its caller passes none.
    "DEPENDENCY_RECORD_TTL_MS": int(DEPENDENCY_RECORD_TTL_SECONDS * 1000),
    #: Most pending parents the detail of a dependency_timeout names.
    "NAMED_PARENTS": NAMED_PARENTS,
    #: The wake time of a lane held back by a concurrency limit: none, until a slot frees.
    "LANE_PARKED_SCORE": 2**52,
    #: How long (s) the per-second start counters of a limit are kept.
    "LIMIT_STARTS_KEPT_S": 3600,
}

_INCLUDE = re.compile(r"""^--\s*@include\s+["']([\w-]+)["']\s*$""")
_CONSTANT = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def _queue_keys_include() -> str:
    fields = ", ".join(f"{part} = KEYS[first + {i}]" for i, part in enumerate(QUEUE_KEYS))
    return "\n".join(
        [
            "-- queue_keys (generated from keys.QUEUE_KEYS): one queue's keys by part",
            f"local QUEUE_KEY_COUNT = {len(QUEUE_KEYS)}",
            "local function queue_keys(first)",
            f"  return {{{fields}}}",
            "end",
        ]
    )


def _key_names_include() -> str:
    """Key names a script builds itself (a cascade reaches queues no KEYS name), in the
    formats of :class:`~.keys.KeyNames`; a test holds the two equal."""
    fields = ", ".join(f"{part} = tag .. '{part}'" for part in QUEUE_KEYS)
    kinds = " or ".join(f"kind == '{kind}'" for kind in (*DEPENDENCY_KEYS, IN_USE_FLAG[0]))
    separator = "\\0" if EDGE_SEPARATOR == "\0" else EDGE_SEPARATOR
    return "\n".join(
        [
            "-- key_names (generated from keys.py): key names built inside Lua.",
            "-- prefix_of(Q), queue_of(Q): the key prefix and queue name of a queue's keys",
            "local function prefix_of(Q) return string.match(Q.meta, '^{([^:]*):') end",
            "local function queue_of(Q)",
            "  return string.sub(Q.meta, #prefix_of(Q) + 3, -#'}:meta' - 1)",
            "end",
            "-- keys_of_queue(P, queue): the keys of a queue by part (as queue_keys gives them)",
            "local function keys_of_queue(P, queue)",
            "  local tag = '{' .. P .. ':' .. queue .. '}:'",
            f"  return {{{fields}}}",
            "end",
            "-- dep_key(P, kind, task_id): a task's key of the dependency keyspace",
            "local function dep_key(P, kind, task_id)",
            f"  assert({kinds}, 'unknown dependency key kind')",
            "  return P .. '{deps}:' .. kind .. ':' .. task_id",
            "end",
            "-- edge_of(queue, id), split_edge(member): a child as the dependency sets hold it",
            f"local EDGE_SEPARATOR = '{separator}'",
            "local function edge_of(queue, id) return queue .. EDGE_SEPARATOR .. id end",
            "local function split_edge(member)",
            "  local cut = string.find(member, EDGE_SEPARATOR, 1, true)",
            "  return string.sub(member, 1, cut - 1), string.sub(member, cut + 1)",
            "end",
        ]
    )


def _key_subset_include(name: str) -> str:
    parts = KEY_SUBSETS[name]
    fields = ", ".join(f"{part} = KEYS[{i + 1}]" for i, part in enumerate(parts))
    return "\n".join(
        [
            f"-- {name} (generated from keys.KEY_SUBSETS): the keys of one queue it names",
            f"local function {name}()",
            f"  return {{{fields}}}",
            "end",
        ]
    )


def _generated(name: str) -> str | None:
    """The source of a generated include, or None for one read from lua/includes/."""
    if name == "queue_keys":
        return _queue_keys_include()
    if name == "key_names":
        return _key_names_include()
    if name in KEY_SUBSETS:
        return _key_subset_include(name)
    return None


def _read(path: str) -> str:
    try:
        return resources.files(__package__).joinpath("lua", path).read_text()
    except FileNotFoundError:
        raise StoreError(
            f"tq's Lua source lua/{path} is missing: reinstall tq (its package data is incomplete)"
        ) from None


def _expand(text: str, done: set[str], stack: list[str]) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines():
        match = _INCLUDE.match(line.strip())
        if not match:
            lines.append(line)
            continue
        name = match.group(1)
        if name in stack:
            chain = " -> ".join([*stack, name])
            raise StoreError(f"tq's Lua includes form a cycle ({chain}): fix lua/includes/")
        if name in done:
            continue
        done.add(name)
        source = _generated(name) or _read(f"includes/{name}.lua")
        lines += _expand(source, done, [*stack, name])
    return lines


def _substitute(text: str, name: str) -> str:
    def value(match: re.Match[str]) -> str:
        constant = match.group(1)
        if constant not in CONSTANTS:
            raise StoreError(
                f"tq's Lua script {name} uses @{constant}@, which scripts.CONSTANTS does not "
                "define: add it there"
            )
        return str(CONSTANTS[constant])

    return _CONSTANT.sub(value, text)


def script_source(name: str) -> str:
    """The full text of the command ``lua/<name>.lua``: includes inlined, constants set."""
    lines = _expand(_read(f"{name}.lua"), set(), [])
    return _substitute("\n".join(lines) + "\n", name)


class Scripts:
    """The commands of one client, each expanded and registered on first use (redis-py
    sends EVALSHA, and the source again after a server restart)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._registered: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        """The registered :class:`redis.commands.core.Script` for ``lua/<name>.lua``."""
        script = self._registered.get(name)
        if script is None:
            script = self._client.register_script(script_source(name))
            self._registered[name] = script
        return script
