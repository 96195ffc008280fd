"""A limited message's lane id: its limit tags as compact JSON, the same on every store.

``[["rate","api_calls","tenant-a"],["concurrency","reports",""]]``, sorted and without
duplicates, so messages under the same limits and keys share one lane.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .model import LimitTag


def lane_of(limits: Sequence[LimitTag]) -> str | None:
    """The lane of a message with these tags (None: no limits)."""
    if not limits:
        return None
    return json.dumps(sorted({(t.kind, t.name, t.key) for t in limits}), separators=(",", ":"))


def tags_of(lane: object) -> tuple[LimitTag, ...]:
    """The tags of a lane; none for a value tq did not write (it then limits nothing)."""
    try:
        triples = json.loads(lane)  # type: ignore[arg-type]
        return tuple(LimitTag(str(kind), str(name), str(key)) for kind, name, key in triples)
    except (TypeError, ValueError):
        return ()
