"""Where only time has to pass, the reference store takes an injected clock: leases,
ETAs, message TTLs, queue expiry and dead-letter retention, tested without sleeping."""

from __future__ import annotations

from tq_kombu.store.memory import MemoryStore
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    RetentionPolicy,
    State,
)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def message(message_id: str, **fields: object) -> NewMessage:
    return NewMessage(message_id, b"payload", 5, **fields)  # type: ignore[arg-type]


def test_a_lease_runs_out_exactly_when_its_time_has_passed() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    store.enqueue("q", message("m"))
    first = store.fetch(["q"], 1, "c1", 30, 5).deliveries[0]
    clock.advance(29.999)
    assert store.fetch(["q"], 1, "c2", 30, 5).deliveries == []
    clock.advance(0.001)
    again = store.fetch(["q"], 1, "c2", 30, 5).deliveries
    assert [(d.lease.message_id, d.delivery_count) for d in again] == [("m", 2)]
    assert not store.ack(first.lease)


def test_a_delayed_message_comes_due_at_its_eta_and_next_due_says_when() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    store.enqueue("q", message("later", eta=clock.now + 60))
    early = store.fetch(["q"], 1, "c", 30, 5)
    assert (early.deliveries, early.next_due) == ([], clock.now + 60)
    clock.advance(60)
    assert [d.lease.message_id for d in store.fetch(["q"], 1, "c", 30, 5).deliveries] == ["later"]


def test_a_message_ttl_and_a_queue_expiry_pass_on_the_injected_clock() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    store.enqueue("tasks", message("stale", ttl_seconds=10))
    store.declare_queue("events", QueueLifetime(expires_seconds=5, message_ttl_seconds=1))
    store.enqueue("events", message("e"))
    clock.advance(10)
    # the task queue keeps its expired message as dead; the event queue is gone
    assert store.fetch(["tasks", "events"], 5, "c", 30, 5).deliveries == []
    stale = store.info("tasks", "stale")
    assert stale is not None and (stale.state, stale.dead_reason) == (State.DEAD, "expired")
    assert store.expire_queues() == ["events"]
    assert store.counts("events") == QueueCounts()


def test_retention_drops_dead_letters_once_past_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    store.retention = RetentionPolicy(ttl_seconds=3600, max_per_queue=100)
    store.enqueue("q", message("m"))
    lease = store.fetch(["q"], 1, "c", 30, 5).deliveries[0].lease
    store.bury(lease, DeadLetter(DeadReason.REJECTED))
    clock.advance(3599)
    assert store.trim_dead("q", store.retention) == 0
    clock.advance(2)
    assert store.trim_dead("q", store.retention) == 1
    assert store.counts("q") == QueueCounts()
