"""Rate limits on the memory store's injectable clock: the exact GCRA bounds (the
reference of :mod:`tq_kombu.store.gcra`) at fetch, and ``next_due`` to the microsecond."""

from __future__ import annotations

import random

import pytest

from tq_kombu.store.memory import MemoryStore
from tq_kombu.store.model import LimitDefinition, LimitTag, NewMessage

Q = "paced"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def paced(message_id: str, key: str = "") -> NewMessage:
    tag = LimitTag("rate", "api", key)
    return NewMessage(message_id, b"x", 5, task_name="tasks.paced", limits=(tag,))


@pytest.mark.parametrize("seed", range(5))
def test_no_window_of_one_period_holds_more_than_limit_plus_burst_starts(seed: int) -> None:
    # Given "5 per second, burst 2" (T = 200 ms, tau = 400 ms) and a deep backlog
    limit, per, burst = 5, 1.0, 2
    interval_us = 200_000
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.define_limits([LimitDefinition("api", "rate", interval_us, burst * interval_us)])
    for n in range(400):
        store.enqueue(Q, paced(f"m{n:03}"))
    # When consumers fetch at random moments for 20 s
    rng = random.Random(seed)
    starts: list[float] = []
    end = clock.now + 20.0
    while clock.now < end:
        result = store.fetch([Q], rng.randint(1, 4), "c", 60.0, 5)
        starts += [clock.now] * len(result.deliveries)
        for delivery in result.deliveries:
            store.ack(delivery.lease)
        clock.now += rng.choice([0.0, 0.001, 0.05, 0.13, 0.2])
    # Then no half-open window of one period holds more than limit + burst starts
    for first in starts:
        assert sum(first <= t < first + per for t in starts) <= limit + burst
    # and a start is never late by more than the pause between two fetches (<= T)
    assert len(starts) >= 20 * limit / 2


def test_next_due_is_exactly_when_the_next_start_is_admitted() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.define_limits([LimitDefinition("api", "rate", 300_000, 0)])
    for n in range(3):
        store.enqueue(Q, paced(f"m{n}"))
    first = store.fetch([Q], 3, "c", 60.0, 5)
    assert len(first.deliveries) == 1
    assert first.next_due is not None
    due = first.next_due
    assert due == pytest.approx(clock.now + 0.3, abs=1e-6)
    clock.now = due - 0.001
    assert store.fetch([Q], 3, "c", 60.0, 5).deliveries == []
    clock.now = due
    assert len(store.fetch([Q], 3, "c", 60.0, 5).deliveries) == 1


def test_recent_starts_count_the_last_window_only() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.define_limits([LimitDefinition("api", "rate", 1_000, 0)])
    for n in range(4):
        store.enqueue(Q, paced(f"m{n}"))
    store.fetch([Q], 1, "c", 600.0, 5)
    clock.now += 30.0
    store.fetch([Q], 2, "c", 600.0, 5)
    status = store.limit_status("api")
    assert status is not None and status.recent_starts == 2  # one start per fetch: T = 1 ms
    clock.now += 45.0
    status = store.limit_status("api")
    assert status is not None and status.recent_starts == 1
