"""Concurrency limits and fairness between keys, as tiny pure models the stores mirror.

:class:`Slots`: at most ``limit`` holders at once under one limit name and key. A
holder is a lease (its token): a slot is taken when a fetch leases a message and freed
when that lease ends for any reason: ack, reject, release or requeue (retry), and lease
expiry (a worker lost). Freeing a slot that is not held changes nothing, so a settle
that arrives after the lease expired frees nothing twice. Lowering ``limit`` below the
slots in use takes none back: new holders wait until enough are freed.

:func:`round_robin`: the order in which a fetch offers capacity to the keys that have
ready work: the key after the one served last, then onwards, wrapping around, so a key
with a long backlog cannot starve a key with a short one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Slots:
    """The slots of one concurrency limit and key."""

    limit: int
    holders: frozenset[str] = frozenset()

    @property
    def free(self) -> int:
        return max(0, self.limit - len(self.holders))

    def take(self, holder: str) -> tuple[bool, Slots]:
        """Whether ``holder`` may start now, and the slots after it did."""
        if holder in self.holders:
            return True, self
        if self.free == 0:
            return False, self
        return True, replace(self, holders=self.holders | {holder})

    def release(self, holder: str) -> Slots:
        """The slots once ``holder``'s lease ended (settled, retried or expired)."""
        return replace(self, holders=self.holders - {holder})

    def resized(self, limit: int) -> Slots:
        """The slots under a new limit (a change at run time)."""
        return replace(self, limit=limit)


def round_robin(keys: Sequence[str], served_last: str | None) -> list[str]:
    """``keys`` (sorted) starting after ``served_last``, wrapping around."""
    ordered = sorted(set(keys))
    if served_last is None:
        return ordered
    later = [k for k in ordered if k > served_last]
    return later + [k for k in ordered if k <= served_last]
