"""An app's limits as the store keeps them, and back: ``Rate`` <-> ``LimitDefinition``.

A rate becomes GCRA's two numbers in whole microseconds (``interval_us`` = the period
over the count, rounded up; ``tolerance_us`` = burst x interval), a concurrency its
``slots``. :func:`rate_text` reads a stored rate back as people write it.
"""

from __future__ import annotations

from tq_kombu.store.model import LimitDefinition

from .config import Definitions
from .rates import MICROSECONDS, UNIT_SECONDS, Rate

RATE = "rate"
CONCURRENCY = "concurrency"


def rate_definition(name: str, rate: Rate, origin: str = "settings") -> LimitDefinition:
    return LimitDefinition(
        name,
        RATE,
        interval_us=rate.emission_interval_us,
        tolerance_us=rate.tolerance_us,
        origin=origin,
    )


def concurrency_definition(name: str, slots: int, origin: str = "settings") -> LimitDefinition:
    return LimitDefinition(name, CONCURRENCY, slots=slots, origin=origin)


def store_definitions(definitions: Definitions) -> list[LimitDefinition]:
    """Every limit of an app's settings (inline rates included), by name."""
    found = [rate_definition(name, rate) for name, rate in definitions.rates.items()]
    found += [concurrency_definition(name, n) for name, n in definitions.concurrency.items()]
    return sorted(found, key=lambda d: d.name)


def rate_text(definition: LimitDefinition) -> str:
    """``"100/m"``, ``"10/s (burst 5)"``, ``"2 at once"``: a stored limit, readable."""
    if definition.kind == CONCURRENCY:
        return f"{definition.slots} at once"
    interval = definition.interval_us
    text = f"1/{interval / MICROSECONDS:g}s"
    for unit in ("s", "m", "h", "d"):
        unit_us = UNIT_SECONDS[unit] * MICROSECONDS
        if unit_us % interval == 0:
            text = f"{unit_us // interval}/{unit}"
            break
    burst = definition.tolerance_us // interval
    return f"{text} (burst {burst})" if burst else text


def starts_per_second(definition: LimitDefinition) -> float:
    """A rate limit's steady starts per second (0 for a concurrency limit)."""
    return MICROSECONDS / definition.interval_us if definition.kind == RATE else 0.0
