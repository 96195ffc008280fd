"""How much one fetch does, on every store (the contract's PROMOTE_LIMIT and
SKIP_SCAN_LIMIT): a bounded number of due messages promoted per queue, and a bounded
look past skipped task names, so that one fetch never walks a whole backlog."""

from __future__ import annotations

import time

import pytest

from tq_kombu.store import Store
from tq_kombu.store.contract import PROMOTE_LIMIT, SKIP_SCAN_LIMIT
from tq_kombu.store.model import NewMessage, QueueCounts, State

from .workers import wait_for

Q = "limits"
LONG_LEASE = 60.0


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


def message(
    message_id: str, *, task_name: str = "tasks.work", eta: float | None = None
) -> NewMessage:
    return NewMessage(message_id, b"body " + message_id.encode(), 5, eta, task_name)


def promote_only(store: Store) -> None:
    """A fetch that hands nothing out: it only promotes, expires and reports."""
    assert store.fetch([Q], 0, "promoter", LONG_LEASE, 5).deliveries == []


def test_one_fetch_promotes_at_most_promote_limit_due_delayed_messages_the_earliest_first(
    store: Store,
) -> None:
    # Given PROMOTE_LIMIT + 5 delayed messages coming due one after another
    extra = 5
    due_at = time.time() + 2.0
    for n in range(PROMOTE_LIMIT + extra):
        store.enqueue(Q, message(f"m{n:05}", eta=due_at + n * 1e-4))
    assert store.counts(Q) == QueueCounts(delayed=PROMOTE_LIMIT + extra), "enqueued too slowly"
    wait_for(lambda: time.time() > due_at + 0.2, 5, "every message to come due")
    # When one fetch runs
    promote_only(store)
    # Then it made PROMOTE_LIMIT of them ready, the earliest due first
    assert store.counts(Q) == QueueCounts(ready=PROMOTE_LIMIT, delayed=extra)
    left = [m.message_id for m in store.list_messages(Q, State.DELAYED)]
    assert left == [f"m{n:05}" for n in range(PROMOTE_LIMIT, PROMOTE_LIMIT + extra)]
    # And the next fetch promotes the rest
    promote_only(store)
    assert store.counts(Q) == QueueCounts(ready=PROMOTE_LIMIT + extra)


def test_one_fetch_returns_at_most_promote_limit_expired_leases_to_ready(store: Store) -> None:
    # Given PROMOTE_LIMIT + 5 messages in flight on one short lease
    extra = 5
    for n in range(PROMOTE_LIMIT + extra):
        store.enqueue(Q, message(f"m{n:05}"))
    leased_at = time.time()
    fetched = store.fetch([Q], PROMOTE_LIMIT + extra, "holder", 1.0, 5)
    assert len(fetched.deliveries) == PROMOTE_LIMIT + extra
    wait_for(lambda: time.time() > leased_at + 1.2, 5, "every lease to expire")
    # When one fetch runs, Then PROMOTE_LIMIT of them are ready again and the rest next time
    promote_only(store)
    assert store.counts(Q) == QueueCounts(ready=PROMOTE_LIMIT, inflight=extra)
    promote_only(store)
    assert store.counts(Q) == QueueCounts(ready=PROMOTE_LIMIT + extra)


def test_a_fetch_skipping_task_names_finds_a_message_just_within_the_scan_limit(
    store: Store,
) -> None:
    # Given SKIP_SCAN_LIMIT - 1 messages of a skipped task ahead of one that may run
    for n in range(SKIP_SCAN_LIMIT - 1):
        store.enqueue(Q, message(f"s{n:05}", task_name="tasks.limited"))
    store.enqueue(Q, message("wanted"))
    # When a consumer fetches skipping that task, Then it gets the one that may run
    result = store.fetch([Q], 5, "consumer", LONG_LEASE, 5, skip_task_names=["tasks.limited"])
    assert [d.lease.message_id for d in result.deliveries] == ["wanted"]
    assert store.counts(Q) == QueueCounts(ready=SKIP_SCAN_LIMIT - 1, inflight=1)


def test_a_fetch_skipping_task_names_looks_no_deeper_than_the_scan_limit(store: Store) -> None:
    # Given SKIP_SCAN_LIMIT messages of a skipped task ahead of one that may run
    for n in range(SKIP_SCAN_LIMIT):
        store.enqueue(Q, message(f"s{n:05}", task_name="tasks.limited"))
    store.enqueue(Q, message("beyond"))
    # When a consumer fetches skipping that task, Then it hands nothing out and moves nothing
    result = store.fetch([Q], 5, "consumer", LONG_LEASE, 5, skip_task_names=["tasks.limited"])
    assert result.deliveries == []
    assert store.counts(Q) == QueueCounts(ready=SKIP_SCAN_LIMIT + 1)
    # And once one skipped message is gone, the next fetch reaches it
    first = store.fetch([Q], 1, "consumer", LONG_LEASE, 5).deliveries[0]
    assert first.lease.message_id == "s00000" and store.ack(first.lease)
    result = store.fetch([Q], 5, "consumer", LONG_LEASE, 5, skip_task_names=["tasks.limited"])
    assert [d.lease.message_id for d in result.deliveries] == ["beyond"]
