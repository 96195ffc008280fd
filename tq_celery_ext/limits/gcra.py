"""The GCRA over a :class:`~.rates.Rate`: wraps the store's reference,
:mod:`tq_kombu.store.gcra` (the algorithm and its guarantees are described there)."""

from __future__ import annotations

from tq_kombu.store import gcra
from tq_kombu.store.gcra import Grant

from .rates import Rate

__all__ = ["Grant", "decide", "take"]


def take(tat_us: int | None, now_us: int, rate: Rate, wanted: int = 1) -> Grant:
    """Accept up to ``wanted`` starts at ``now_us`` under ``rate``, given the stored TAT."""
    return gcra.take(tat_us, now_us, rate.emission_interval_us, rate.tolerance_us, wanted)


def decide(tat_us: int | None, now_us: int, rate: Rate) -> Grant:
    """Whether one task may start at ``now_us`` under ``rate``."""
    return take(tat_us, now_us, rate, 1)
