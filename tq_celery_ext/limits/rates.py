"""Rates as users write them, and the GCRA parameters they imply.

Accepted forms (a setting value in ``tq_rate_limits``, or a task's inline
``tq_rate_limit``):

- ``"<count>/<period>"``: ``count`` starts per ``period``. ``count`` is a whole number
  >= 1; ``period`` is a unit ``s``, ``m``, ``h`` or ``d``, optionally preceded by a
  positive number: ``"100/m"``, ``"50/h"``, ``"10/s"``, ``"5/d"``, ``"100/60s"``,
  ``"3/1.5s"``.
- ``{"rate": "<count>/<period>", "burst": <n>}``: up to ``n`` starts more than the rate
  allows may happen at once after a quiet spell (``burst`` is a whole number >= 0).

Fractional counts (``"2.5/s"``) are refused on purpose: a limit is a number of starts,
and the same rate is written exactly with a longer period (``"5/2s"``).

Times inside are whole microseconds, so that every store (Lua doubles, SQLite
integers, Python) computes exactly the same thing: the emission interval is the
period divided by the count, rounded *up* to a microsecond. Rounding up keeps the
window bound exact (never more than ``limit + burst`` starts in a period) at the cost
of at most one microsecond per start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tq_kombu.errors import ConfigurationError

MICROSECONDS = 1_000_000
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longest period a rate may have (a year), so that times stay exact in a double.
MAX_PERIOD_SECONDS = 366 * 86400
#: Largest burst, for the same reason.
MAX_BURST = 1_000_000
EXAMPLES = "'100/m', '10/s', '100/60s' or {'rate': '10/s', 'burst': 5}"

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_RATE = re.compile(rf"^\s*(?P<count>{_NUMBER})\s*/\s*(?P<number>{_NUMBER})?\s*(?P<unit>[smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    """``limit`` starts per ``per_seconds``, plus up to ``burst`` more at once."""

    limit: int
    per_seconds: float
    burst: int = 0

    @property
    def per_us(self) -> int:
        """The period in whole microseconds."""
        return round(self.per_seconds * MICROSECONDS)

    @property
    def emission_interval_us(self) -> int:
        """GCRA's T: the spacing of a steady stream, rounded up to a microsecond."""
        return -(-self.per_us // self.limit)

    @property
    def tolerance_us(self) -> int:
        """GCRA's tau: how far ahead of the steady stream a start may come."""
        return self.burst * self.emission_interval_us

    def __str__(self) -> str:
        text = f"{self.limit}/{_period_text(self.per_seconds)}"
        return f"{text} (burst {self.burst})" if self.burst else text

    def as_dict(self) -> dict[str, Any]:
        """The plain form a store keeps."""
        return {"limit": self.limit, "per_seconds": self.per_seconds, "burst": self.burst}


def parse_rate(value: object, setting: str) -> Rate:
    """The :class:`Rate` ``value`` stands for; ``setting`` names where it was written
    (shown in the error, e.g. ``"tq_rate_limits['api_calls']"``)."""
    if isinstance(value, Rate):
        return value
    if isinstance(value, Mapping):
        return _parse_mapping(value, setting)
    if not isinstance(value, str):
        raise _bad(setting, value, f"a rate is a string or a dict, not {type(value).__name__}")
    return _parse_text(value, setting, burst=0)


def _parse_mapping(value: Mapping[Any, Any], setting: str) -> Rate:
    unknown = sorted(str(k) for k in value if k not in ("rate", "burst"))
    if unknown:
        raise _bad(setting, value, f"unknown key(s) {', '.join(map(repr, unknown))}")
    if "rate" not in value:
        raise _bad(setting, value, "the dict form needs a 'rate'")
    burst = value.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 0 <= burst <= MAX_BURST:
        raise _bad(setting, value, f"'burst' must be a whole number in 0..{MAX_BURST}")
    text = value["rate"]
    if not isinstance(text, str):
        raise _bad(setting, value, "'rate' must be a string such as '10/s'")
    return _parse_text(text, setting, burst, shown=value)


def _parse_text(text: str, setting: str, burst: int, shown: object = None) -> Rate:
    shown = text if shown is None else shown
    match = _RATE.match(text)
    if match is None:
        raise _bad(setting, shown, "expected '<count>/<period>' with a unit s, m, h or d")
    count = Fraction(match["count"])
    multiple = Fraction(match["number"] or 1)
    if count.denominator != 1:
        better = f"{count.numerator}/{multiple * count.denominator}{match['unit']}"
        raise _bad(setting, shown, f"the count must be a whole number (write {better!r})")
    if count < 1:
        raise _bad(setting, shown, "the count must be at least 1")
    per = float(multiple * UNIT_SECONDS[match["unit"]])
    if not 0 < per <= MAX_PERIOD_SECONDS or round(per * MICROSECONDS) < 1:
        raise _bad(setting, shown, "the period must be between 1 microsecond and 366 days")
    limit = int(count)
    if limit > round(per * MICROSECONDS):
        raise _bad(setting, shown, "more than 1,000,000 starts per second cannot be limited")
    return Rate(limit, per, burst)


def _period_text(per: float) -> str:
    """``60.0`` -> ``"m"``, ``7200.0`` -> ``"2h"``, ``1.5`` -> ``"1.5s"``."""
    for unit in ("d", "h", "m", "s"):
        multiple = per / UNIT_SECONDS[unit]
        if multiple.is_integer():
            return unit if multiple == 1 else f"{multiple:g}{unit}"
    return f"{per:g}s"


def _bad(setting: str, value: object, why: str) -> ConfigurationError:
    return ConfigurationError(f"{setting} = {value!r} is not a rate: {why}; write e.g. {EXAMPLES}")
