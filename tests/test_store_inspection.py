"""Inspection in the Store contract: counts, info, payloads and listings, over every store."""

from __future__ import annotations

import time

import pytest

from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    QueueCounts,
    State,
)

from .store_contract import (
    CLOCK_SLACK,
    fetch,
    ids,
    message,
    only,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


# -- inspection ------------------------------------------------------------------
def test_counts_cover_every_state(store: Store) -> None:
    store.enqueue("default", message("in-flight", Priority.URGENT))
    store.enqueue("default", message("ready"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    store.bury_payload("default", message("dead"), DeadLetter(DeadReason.FAILED))
    assert ids(fetch(store, ["default"])) == ["in-flight"]
    assert store.counts("default") == QueueCounts(ready=1, delayed=1, inflight=1, dead=1, waiting=1)
    assert store.counts("another") == QueueCounts()


def test_info_describes_a_message_without_its_payload(store: Store) -> None:
    eta = time.time() + 3600
    store.enqueue("default", message("a", 42, eta=eta, task_name="tasks.add", task_id="t-1"))
    info = store.info("default", "a")
    assert info is not None
    assert (info.queue, info.message_id, info.state) == ("default", "a", State.DELAYED)
    assert (info.priority, info.task_name, info.task_id) == (42, "tasks.add", "t-1")
    assert info.delivery_count == 0
    assert info.eta == pytest.approx(eta, abs=CLOCK_SLACK)
    assert info.dead_reason is None
    assert store.info("default", "missing") is None
    assert store.info("another", "a") is None


def test_payloads_come_back_byte_for_byte_in_every_state(store: Store) -> None:
    blob = bytes(range(256)) * 40
    store.enqueue("default", message("a", payload=blob))
    assert store.payload("default", "a") == blob
    delivery = only(fetch(store, ["default"]))
    assert delivery.payload == blob
    assert store.payload("default", "a") == blob
    assert store.payload("default", "missing") is None


def test_list_messages_gives_each_state_in_its_own_order(store: Store) -> None:
    now = time.time()
    # ready: hand-out order
    for name, priority in [("r-low", 1), ("r-high-1", 10), ("r-high-2", 10)]:
        store.enqueue("default", message(name, priority))
    # delayed: due order
    store.enqueue("default", message("d-late", eta=now + 300))
    store.enqueue("default", message("d-soon", eta=now + 100))
    # waiting: arrival order
    store.enqueue("default", message("w-1", waiting=True))
    store.enqueue("default", message("w-2", waiting=True))
    # dead: order of death
    store.bury_payload("default", message("x-first"), DeadLetter(DeadReason.FAILED))
    store.bury_payload("default", message("x-second"), DeadLetter(DeadReason.FAILED))
    # in flight: expiry order
    store.enqueue("other", message("f-long", Priority.URGENT))
    store.enqueue("other", message("f-short", Priority.URGENT))
    fetch(store, ["other"], lease_seconds=300)
    fetch(store, ["other"], lease_seconds=100)

    def listed(queue: str, state: State, offset: int = 0, limit: int = 100) -> list[str]:
        return [m.message_id for m in store.list_messages(queue, state, offset, limit)]

    assert listed("default", State.READY) == ["r-high-1", "r-high-2", "r-low"]
    assert listed("default", State.DELAYED) == ["d-soon", "d-late"]
    assert listed("default", State.WAITING) == ["w-1", "w-2"]
    assert listed("default", State.DEAD) == ["x-first", "x-second"]
    assert listed("other", State.INFLIGHT) == ["f-short", "f-long"]
    assert listed("default", State.INFLIGHT) == []
    # and pages through them
    assert listed("default", State.READY, offset=1, limit=1) == ["r-high-2"]
    assert listed("default", State.READY, offset=3) == []
    assert all(m.state is State.READY for m in store.list_messages("default", State.READY))
