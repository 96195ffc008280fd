"""The GCRA reference, checked by brute force over the start times it accepts: no window
of one period holds more than ``limit + burst`` starts, the next allowed time it states
is exact, and a caller starting whenever allowed gets ``limit`` per period."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from tq_celery_ext.limits.concurrency import Slots, round_robin
from tq_celery_ext.limits.gcra import Grant, decide, take
from tq_celery_ext.limits.rates import MICROSECONDS, Rate

START_US = 1_764_000_000 * MICROSECONDS  # a Unix time in 2025, exact in a double


@st.composite
def rates(draw: st.DrawFn) -> Rate:
    per_us = draw(st.integers(1, 3 * MICROSECONDS))
    limit = draw(st.integers(1, min(20, per_us)))
    return Rate(limit, per_us / MICROSECONDS, draw(st.integers(0, 5)))


def run(rate: Rate, gaps: list[int | None]) -> tuple[list[int], list[int], list[Grant]]:
    """Arrivals after each gap (None: exactly at the next start the last decision
    stated, the most demanding caller), each decided in turn with what the previous
    decisions stored; returns the arrival times, the accepted ones and every decision."""
    tat: int | None = None
    now = START_US
    times: list[int] = []
    accepted: list[int] = []
    grants: list[Grant] = []
    for gap in gaps:
        now = grants[-1].next_start_us if gap is None and grants else now + (gap or 0)
        grant = decide(tat, now, rate)
        times.append(now)
        grants.append(grant)
        if grant.allowed:
            tat = grant.tat_us
            accepted.append(now)
    return times, accepted, grants


def most_in_one_window(starts: list[int], window_us: int) -> int:
    """Brute force: the most starts in any half-open window [t, t + window) (the most
    crowded window begins at a start)."""
    return max(
        (bisect_left(starts, s + window_us) - i for i, s in enumerate(starts)),
        default=0,
    )


#: Gaps between arrivals: None = at the next start the last decision stated (often, the
#: most demanding caller), a long gap (idle spells) or a short one (bursts).
gap_lists = st.lists(
    st.sampled_from([None, None, None, 0, 1])
    | st.integers(0, 4 * MICROSECONDS)
    | st.integers(0, 2000),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(rate=rates(), gaps=gap_lists)
def test_no_window_of_one_period_holds_more_than_limit_plus_burst_starts(
    rate: Rate, gaps: list[int | None]
) -> None:
    _, accepted, _ = run(rate, gaps)
    assert most_in_one_window(accepted, rate.per_us) <= rate.limit + rate.burst


@settings(max_examples=200, deadline=None)
@given(rate=rates(), gaps=gap_lists)
def test_a_start_is_accepted_exactly_when_it_comes_at_or_after_the_stated_next_start(
    rate: Rate, gaps: list[int | None]
) -> None:
    times, _, grants = run(rate, gaps)
    for previous, now, grant in zip(grants, times[1:], grants[1:], strict=False):
        assert grant.allowed == (now >= previous.next_start_us)
        assert previous.next_start_us >= times[0]


@settings(max_examples=300, deadline=None)
@given(rate=rates(), count=st.integers(1, 120))
def test_a_caller_starting_whenever_allowed_gets_limit_per_period_after_a_first_burst(
    rate: Rate, count: int
) -> None:
    # Given a caller that always comes back at the next start it was told
    tat, now, starts = None, START_US, []
    for _ in range(count):
        grant = decide(tat, now, rate)
        assert grant.allowed  # Then it is never refused
        tat, starts = grant.tat_us, [*starts, now]
        now = grant.next_start_us
    # And after burst + 1 at once, one start per emission interval: `limit` per period,
    # short by at most a microsecond per start
    first = starts[0]
    expected = [first] * min(count, rate.burst + 1)
    expected += [first + k * rate.emission_interval_us for k in range(1, count - rate.burst)]
    assert starts == expected
    assert rate.emission_interval_us * rate.limit - rate.per_us < rate.limit
    # And the window bound holds, reached exactly when the period divides evenly
    busiest = most_in_one_window(starts, rate.per_us)
    assert busiest <= rate.limit + rate.burst
    if rate.per_us % rate.limit == 0 and count >= rate.limit + rate.burst:
        assert busiest == rate.limit + rate.burst


@settings(max_examples=200, deadline=None)
@given(rate=rates(), phase=st.integers(0, 10 * MICROSECONDS), count=st.integers(1, 60))
def test_a_stream_spaced_at_the_emission_interval_is_always_accepted(
    rate: Rate, phase: int, count: int
) -> None:
    gaps = [phase] + [rate.emission_interval_us] * (count - 1)
    times, accepted, _ = run(rate, gaps)
    assert accepted == times


@settings(max_examples=300, deadline=None)
@given(
    rate=rates(),
    tat_offset=st.none() | st.integers(-5 * MICROSECONDS, 5 * MICROSECONDS),
    wanted=st.integers(0, 30),
)
def test_taking_several_at_once_equals_as_many_single_decisions_at_that_instant(
    rate: Rate, tat_offset: int | None, wanted: int
) -> None:
    now = START_US
    stored = None if tat_offset is None else now + tat_offset
    grant = take(stored, now, rate, wanted)
    tat, accepted, last = stored, 0, None
    for _ in range(wanted):
        last = decide(tat, now, rate)
        if last.allowed:
            tat, accepted = last.tat_us, accepted + 1
    assert grant.count == accepted
    if accepted:
        assert (grant.tat_us, grant.next_start_us) == (tat, last.next_start_us if last else 0)


@settings(max_examples=200, deadline=None)
@given(rate=rates(), age=st.integers(0, 10 * MICROSECONDS))
def test_a_stored_time_at_or_before_now_means_the_same_as_none_so_a_store_may_forget_it(
    rate: Rate, age: int
) -> None:
    now = START_US + 10 * MICROSECONDS
    assert decide(now - age, now, rate) == decide(None, now, rate)


def test_a_refused_start_leaves_the_stored_time_unchanged_and_says_when_to_come_back() -> None:
    rate = Rate(10, 1.0)  # one start per 100 ms
    first = decide(None, START_US, rate)
    refused = decide(first.tat_us, START_US + 40_000, rate)
    assert not refused.allowed
    assert refused.tat_us == first.tat_us == START_US + 100_000
    assert refused.next_start_us == START_US + 100_000


# -- concurrency and fairness models -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 4),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=60),
)
def test_never_more_holders_than_slots_and_a_freed_slot_can_be_taken_again(
    limit: int, steps: list[tuple[bool, int]]
) -> None:
    slots, running = Slots(limit), set()
    for is_take, n in steps:
        holder = f"lease-{n}"
        if is_take:
            ok, slots = slots.take(holder)
            # a holder gets a slot exactly when it has one already or one is free
            assert ok == (holder in running or len(running) < limit)
            if ok:
                running.add(holder)
        else:
            slots = slots.release(holder)  # settled, retried or its lease expired
            running.discard(holder)
        assert slots.holders == running and len(running) <= limit


def test_lowering_a_concurrency_takes_no_slot_back_but_admits_no_one_until_below_it() -> None:
    slots = Slots(3)
    for holder in "abc":
        slots = slots.take(holder)[1]
    slots = slots.resized(1)
    assert slots.holders == {"a", "b", "c"} and not slots.take("d")[0]
    slots = slots.release("a").release("b")
    assert not slots.take("d")[0]
    assert slots.release("c").take("d")[0]


def test_keys_are_served_round_robin_from_the_one_after_the_key_served_last() -> None:
    assert round_robin(["b", "a", "c"], None) == ["a", "b", "c"]
    assert round_robin(["a", "b", "c"], "a") == ["b", "c", "a"]
    assert round_robin(["a", "c"], "b") == ["c", "a"]
    assert round_robin(["a", "b"], "b") == ["a", "b"]
