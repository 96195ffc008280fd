"""Cluster-wide rate and concurrency limits in the Store contract (the Limits slice and
its enforcement at fetch and settle), over every store. Rates run on the real clock
with short periods; the exact GCRA windows are checked on the memory store's clock in
tests/test_store_limits_clock.py."""

from __future__ import annotations

import threading
import time

import pytest

from tq_kombu.store import Store
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    LimitDefinition,
    LimitTag,
    NewMessage,
    QueueCounts,
    State,
)

from .store_contract import LONG_LEASE, fetch, fetch_within, ids

Q = "limited"


@pytest.fixture
def store(contract_store: Store) -> Store:
    return contract_store


def rate(name: str, interval_seconds: float, burst: int = 0) -> LimitDefinition:
    interval_us = round(interval_seconds * 1_000_000)
    return LimitDefinition(name, "rate", interval_us, burst * interval_us)


def concurrency(name: str, slots: int) -> LimitDefinition:
    return LimitDefinition(name, "concurrency", slots=slots)


def limited(
    message_id: str, *tags: LimitTag, priority: int = 5, task_name: str = "tasks.limited"
) -> NewMessage:
    return NewMessage(
        message_id, f"body of {message_id}".encode(), priority, task_name=task_name,
        task_id=f"task-{message_id}", limits=tags,
    )  # fmt: skip


def slot(key: str = "", name: str = "heavy") -> LimitTag:
    return LimitTag("concurrency", name, key)


def pace(key: str = "", name: str = "api") -> LimitTag:
    return LimitTag("rate", name, key)


# -- definitions ---------------------------------------------------------------
def test_settings_never_overwrite_a_runtime_limit_until_it_is_removed(store: Store) -> None:
    store.define_limits([rate("api", 1.0), concurrency("heavy", 2)])
    assert [(d.name, d.kind, d.origin) for d in store.limits()] == [
        ("api", "rate", "settings"),
        ("heavy", "concurrency", "settings"),
    ]
    store.set_limit(concurrency("heavy", 5))
    store.define_limits([rate("api", 2.0), concurrency("heavy", 1)])
    by_name = {d.name: d for d in store.limits()}
    assert by_name["heavy"] == LimitDefinition("heavy", "concurrency", slots=5, origin="runtime")
    assert by_name["api"].interval_us == 2_000_000  # settings replace settings
    assert store.remove_limit("heavy") is True
    assert store.remove_limit("heavy") is False
    assert [d.name for d in store.limits()] == ["api"]
    store.define_limits([concurrency("heavy", 1)])
    assert {d.name: d for d in store.limits()}["heavy"].origin == "settings"


def test_an_unknown_limit_name_limits_nothing(store: Store) -> None:
    for n in range(5):
        store.enqueue(Q, limited(f"m{n}", slot(name="nowhere"), pace(name="nothing")))
    assert len(fetch(store, [Q], 5).deliveries) == 5


def test_status_of_an_unknown_limit_is_none(store: Store) -> None:
    assert store.limit_status("nowhere") is None


# -- concurrency -----------------------------------------------------------------
def test_concurrency_slots_are_held_by_leases_and_freed_by_every_settle(store: Store) -> None:
    store.define_limits([concurrency("heavy", 2)])
    for n in range(7):
        store.enqueue(Q, limited(f"m{n}", slot("k")))
    first = fetch(store, [Q], 5)
    assert ids(first) == ["m0", "m1"]
    held_back = fetch(store, [Q], 5)
    assert held_back.deliveries == [] and held_back.more_ready is False
    a, b = first.deliveries
    # renew keeps the slot
    assert store.renew([a.lease], LONG_LEASE) == []
    assert fetch(store, [Q]).deliveries == []
    # ack frees one
    assert store.ack(a.lease)
    c = fetch(store, [Q], 5).deliveries
    assert ids_of(c) == ["m2"]
    # release, requeue and bury free one each
    assert store.release(b.lease)
    d = fetch(store, [Q], 5).deliveries
    assert len(d) == 1
    assert store.requeue(c[0].lease)
    e = fetch(store, [Q], 5).deliveries
    assert len(e) == 1
    assert store.bury(d[0].lease, DeadLetter(DeadReason.REJECTED, "test"))
    f = fetch(store, [Q], 5).deliveries
    assert len(f) == 1
    assert fetch(store, [Q], 5).deliveries == []


def ids_of(deliveries: list) -> list[str]:  # type: ignore[type-arg]
    return [d.lease.message_id for d in deliveries]


def test_a_stale_lease_token_frees_no_slot(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    for n in range(3):
        store.enqueue(Q, limited(f"m{n}", slot()))
    first = fetch(store, [Q], consumer="old", lease_seconds=0.3).deliveries[0]
    # its lease runs out (the message back to ready); another consumer gets the slot
    again = fetch_within(store, [Q], consumer="new").deliveries[0]
    # the old token settles nothing and frees nothing
    assert store.ack(first.lease) is False
    assert store.release(first.lease) is False
    assert fetch(store, [Q], 3).deliveries == []
    assert store.ack(again.lease)
    assert len(fetch(store, [Q], 3).deliveries) == 1


def test_lease_expiry_frees_the_slot(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    store.enqueue(Q, limited("m0", slot()))
    store.enqueue(Q, limited("m1", slot()))
    assert ids(fetch(store, [Q], 2, lease_seconds=0.3)) == ["m0"]
    # then one message is handed out again once the lease ran out (no settle at all)
    assert len(fetch_within(store, [Q], max_count=2).deliveries) == 1


def test_keys_hold_slots_of_their_own(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    for key in "aab":
        store.enqueue(Q, limited(f"{key}{time.monotonic_ns()}", slot(key)))
    got = fetch(store, [Q], 3).deliveries
    assert sorted(d.lease.message_id[0] for d in got) == ["a", "b"]


def test_a_message_under_two_limits_starts_only_when_both_admit(store: Store) -> None:
    store.define_limits([concurrency("heavy", 2), concurrency("db", 1)])
    store.enqueue(Q, limited("both-1", slot(), slot(name="db")))
    store.enqueue(Q, limited("both-2", slot(), slot(name="db")))
    store.enqueue(Q, limited("heavy-only", slot()))
    assert sorted(ids(fetch(store, [Q], 3))) == ["both-1", "heavy-only"]


def test_a_freed_slot_wakes_a_waiting_consumer(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    store.enqueue(Q, limited("m0", slot()))
    store.enqueue(Q, limited("m1", slot()))
    held = fetch(store, [Q]).deliveries[0]
    assert fetch(store, [Q]).deliveries == []  # m1 held back
    # nothing spins: with only held-back messages a wait lasts its timeout
    started = time.monotonic()
    store.wait([Q], 0.6)
    assert time.monotonic() - started >= 0.5
    # and an ack elsewhere ends a wait early
    timer = threading.Timer(0.3, store.ack, args=(held.lease,))
    timer.start()
    started = time.monotonic()
    store.wait([Q], 10.0)
    waited = time.monotonic() - started
    timer.join()
    assert waited < 5.0
    assert ids(fetch(store, [Q])) == ["m1"]


# -- rate ------------------------------------------------------------------------
def test_a_rate_admits_its_burst_then_reports_when_the_next_start_may_come(
    store: Store,
) -> None:
    store.define_limits([rate("api", 10.0, burst=2)])
    for n in range(6):
        store.enqueue(Q, limited(f"m{n}", pace("k")))
    before = time.time()
    result = fetch(store, [Q], 6)
    after = time.time()
    assert ids(result) == ["m0", "m1", "m2"]  # burst + 1
    assert result.more_ready is False
    assert result.next_due is not None
    assert before + 10.0 - 0.05 <= result.next_due <= after + 10.0 + 0.05
    assert fetch(store, [Q], 6).deliveries == []
    status = store.limit_status("api")
    assert status is not None
    assert status.recent_starts == 3
    (key,) = status.keys
    assert key.key == "k" and key.waiting == 3
    assert key.next_start is not None and abs(key.next_start - result.next_due) < 0.05


def test_a_rate_is_never_exceeded_over_many_fetches(store: Store) -> None:
    interval, burst = 0.1, 1
    store.define_limits([rate("api", interval, burst)])
    for n in range(40):
        store.enqueue(Q, limited(f"m{n:02}", pace()))
    started = time.time()
    starts = 0
    while time.time() - started < 1.2:
        result = fetch(store, [Q], 3)
        starts += len(result.deliveries)
        if not result.deliveries:
            assert result.next_due is not None and result.next_due <= time.time() + interval + 0.05
            time.sleep(0.01)
    elapsed = time.time() - started
    # every start fell inside [started, started + elapsed]: GCRA admits at most
    # burst + 1 + elapsed / interval starts in a window that long
    assert starts <= burst + 1 + elapsed / interval
    assert starts >= (elapsed - 0.5) / interval  # and it does not starve


def test_keys_have_rates_of_their_own(store: Store) -> None:
    store.define_limits([rate("api", 10.0)])
    for key in "aabb":
        store.enqueue(Q, limited(f"{key}{time.monotonic_ns()}", pace(key)))
    got = fetch(store, [Q], 4).deliveries
    assert sorted(d.lease.message_id[0] for d in got) == ["a", "b"]


# -- order and fairness ------------------------------------------------------------
def test_keys_take_turns_at_one_priority(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1000)])
    store.enqueue_many([(Q, limited(f"a{n:03}", slot("a"))) for n in range(500)])
    store.enqueue_many([(Q, limited(f"b{n}", slot("b"))) for n in range(5)])
    first = []
    for _ in range(10):
        delivery = fetch(store, [Q]).deliveries[0]
        first.append(delivery.lease.message_id)
        store.ack(delivery.lease)
    assert [m for m in first if m.startswith("b")] == [f"b{n}" for n in range(5)]
    assert [m for m in first if m.startswith("a")] == [f"a{n:03}" for n in range(5)]


def test_priority_orders_work_inside_a_key_and_across_keys(store: Store) -> None:
    store.define_limits([concurrency("heavy", 100)])
    store.enqueue(Q, limited("a-low", slot("a"), priority=1))
    store.enqueue(Q, limited("a-high", slot("a"), priority=9))
    store.enqueue(Q, limited("b-mid", slot("b"), priority=5))
    store.enqueue(Q, NewMessage("plain-top", b"x", 8, task_name="tasks.plain"))
    assert ids(fetch(store, [Q], 4)) == ["a-high", "plain-top", "b-mid", "a-low"]


def test_plain_messages_pass_held_back_ones(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    for n in range(5):
        store.enqueue(Q, limited(f"held{n}", slot(), priority=9))
    for n in range(3):
        store.enqueue(Q, NewMessage(f"plain{n}", b"x", 1, task_name="tasks.plain"))
    got = ids(fetch(store, [Q], 10))
    assert got == ["held0", "plain0", "plain1", "plain2"]
    result = fetch(store, [Q], 10)
    assert result.deliveries == [] and result.more_ready is False
    assert result.next_due is None or result.next_due > time.time() + 30  # only the lease
    assert store.counts(Q) == QueueCounts(ready=4, inflight=4)


# -- changes at run time and status ---------------------------------------------------
def test_a_limit_changed_or_removed_at_run_time_applies_at_the_next_fetch(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    for n in range(6):
        store.enqueue(Q, limited(f"m{n}", slot()))
    assert len(fetch(store, [Q], 6).deliveries) == 1
    store.set_limit(concurrency("heavy", 3))
    assert len(fetch(store, [Q], 6).deliveries) == 2
    assert store.remove_limit("heavy")
    assert len(fetch(store, [Q], 6).deliveries) == 3


def test_limit_status_reports_waiting_and_running_per_key(store: Store) -> None:
    store.define_limits([concurrency("heavy", 2)])
    for n in range(5):
        store.enqueue(Q, limited(f"a{n}", slot("a")))
    store.enqueue(Q, limited("b0", slot("b")))
    got = fetch(store, [Q], 10).deliveries
    assert len(got) == 3
    status = store.limit_status("heavy")
    assert status is not None
    assert status.definition == concurrency("heavy", 2)
    keys = {k.key: (k.waiting, k.running) for k in status.keys}
    assert keys == {"a": (3, 2), "b": (0, 1)}
    assert status.recent_starts == 3
    for delivery in got:
        store.ack(delivery.lease)
    after = store.limit_status("heavy")
    assert after is not None
    assert {k.key: (k.waiting, k.running) for k in after.keys} == {"a": (3, 0)}


def test_a_replayed_limited_message_is_still_limited_in_its_new_queue(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1)])
    store.enqueue(Q, limited("m0", slot()))
    store.enqueue(Q, limited("m1", slot()))
    first = fetch(store, [Q]).deliveries[0]
    assert store.bury(first.lease, DeadLetter(DeadReason.REJECTED, "test"))
    second = fetch(store, [Q]).deliveries[0]
    assert store.replay(Q, first.lease.message_id, to_queue="elsewhere")
    assert fetch(store, ["elsewhere"]).deliveries == []  # the slot is taken
    assert store.ack(second.lease)
    assert ids(fetch(store, ["elsewhere"])) == [first.lease.message_id]


def test_take_counts_rate_starts_and_needs_a_free_slot_but_holds_none(store: Store) -> None:
    store.define_limits([concurrency("heavy", 1), rate("api", 10.0)])
    for n in range(3):
        store.enqueue(Q, limited(f"s{n}", slot()))
        store.enqueue(Q, limited(f"r{n}", pace()))
    taken = ids(store.take([Q], 10))
    assert sorted(m for m in taken if m.startswith("r")) == ["r0"]
    assert sorted(m for m in taken if m.startswith("s")) == ["s0", "s1", "s2"]
    held = fetch(store, [Q]).deliveries
    assert held == []  # the rate holds back r1 and r2
    store.enqueue(Q, limited("s3", slot()))
    store.enqueue(Q, limited("s4", slot()))
    assert ids(fetch(store, [Q], 2)) == ["s3"]
    assert store.take([Q], 2).deliveries == []  # its slot is taken


def test_inspection_names_the_limits_a_message_starts_under(store: Store) -> None:
    # Given a message under a per-key rate and a shared concurrency, and a plain one
    tags = (pace("tenant-a"), slot())
    store.enqueue(Q, limited("m0", *tags))
    store.enqueue(Q, NewMessage("p0", b"plain", 5, task_name="tasks.plain"))
    # Then listing and looking up show its limits (sorted), and none for the plain one
    listed = {m.message_id: m.limits for m in store.list_messages(Q, State.READY)}
    expected = tuple(sorted(tags, key=lambda t: (t.kind, t.name, t.key)))
    assert listed == {"m0": expected, "p0": ()}
    info = store.info(Q, "m0")
    assert info is not None and set(info.limits) == set(tags)
    found = store.find_task(Q, "task-m0")
    assert found is not None and set(found.limits) == set(tags)
    # And a message in flight keeps them
    store.define_limits([concurrency("heavy", 1), rate("api", 0.001)])
    assert "m0" in ids(fetch(store, [Q], 2))
    held = store.info(Q, "m0")
    assert held is not None and held.state == State.INFLIGHT and set(held.limits) == set(tags)
