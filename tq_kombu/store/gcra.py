"""The Generic Cell Rate Algorithm over plain numbers: the reference every store mirrors.

A store keeps one number per limit and key, the *theoretical arrival time* (TAT, in
whole microseconds of Unix time), or nothing. To decide whether a task may start at
``now``, with T the rate's emission interval and tau its tolerance
(a rate's ``interval_us`` and ``tolerance_us``)::

    TAT = min(TAT, now + T + tau)         (see below)
    base = max(TAT or now, now)
    allowed = base - tau <= now
    if allowed: TAT = base + T            (else the stored value does not change)
    the next start may come at max(now, TAT - tau)

What this guarantees (``tests/test_limits_gcra.py`` checks it against a brute force):

- in any half-open window of length ``per``, at most ``limit + burst`` starts are
  accepted;
- a start at or after the ``next_start_us`` of the previous decision is accepted, and
  one before it is refused, so a waiting consumer may sleep exactly until then;
- a caller starting whenever it may gets ``limit`` starts per ``per`` (to a microsecond
  per start), after a first burst of ``burst + 1``.

A stored TAT at or before ``now`` means the same as no value: a store may forget it
from then on (expire the key at ``tat_us``). Changing a limit's rate keeps the stored
TAT; the new T and tau apply from the next decision. Under one rate a stored TAT never
exceeds ``now + T + tau``, so capping it there changes nothing, except after a rate
was raised: an old, slower rate's TAT then waits at most one new interval, not up to
one old period.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grant:
    """The outcome of one decision for one limit and key."""

    #: How many starts were accepted (0 = none may start now).
    count: int
    #: The TAT to store (unchanged when ``count`` is 0); forgettable from that time on.
    tat_us: int
    #: The earliest time (microseconds) at which another start would be accepted.
    next_start_us: int

    @property
    def allowed(self) -> bool:
        return self.count > 0


def take(
    tat_us: int | None, now_us: int, interval_us: int, tolerance_us: int, wanted: int = 1
) -> Grant:
    """Accept up to ``wanted`` starts at ``now_us`` (T = ``interval_us``, tau =
    ``tolerance_us``), given the stored TAT.

    Equal to ``wanted`` single decisions at the same instant (a store may lease several
    messages of one key in one fetch)."""
    if wanted < 0:
        raise ValueError(f"wanted must be >= 0, not {wanted}")
    if interval_us < 1:
        raise ValueError(f"interval_us must be >= 1, not {interval_us}")
    if tat_us is not None:
        tat_us = min(tat_us, now_us + interval_us + tolerance_us)
    base = now_us if tat_us is None else max(tat_us, now_us)
    earliest = base - tolerance_us
    if earliest > now_us or wanted == 0:
        stored = now_us if tat_us is None else tat_us
        return Grant(0, stored, max(earliest, now_us))
    available = (now_us - earliest) // interval_us + 1
    count = min(wanted, available)
    tat = base + count * interval_us
    return Grant(count, tat, max(now_us, tat - tolerance_us))


def decide(tat_us: int | None, now_us: int, interval_us: int, tolerance_us: int) -> Grant:
    """Whether one task may start at ``now_us``: :func:`take` for one start."""
    return take(tat_us, now_us, interval_us, tolerance_us, 1)
