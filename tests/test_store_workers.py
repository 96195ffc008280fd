"""Worker heartbeats in the Store contract, over every store."""

from __future__ import annotations

import time

import pytest

from tq_kombu.store import Store

from .store_contract import (
    LONG_LEASE,
    eventually,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


# -- workers ---------------------------------------------------------------------------
def test_workers_are_listed_while_their_heartbeats_last(store: Store) -> None:
    before = time.time()
    store.heartbeat("worker-1@host", LONG_LEASE, {"pid": 101, "queues": ["default"]})
    store.heartbeat("worker-2@host", 0.3, {})
    beats = {beat.worker: beat for beat in store.workers()}
    assert set(beats) == {"worker-1@host", "worker-2@host"}
    assert beats["worker-1@host"].info == {"pid": 101, "queues": ["default"]}
    assert beats["worker-1@host"].seen_at == pytest.approx(before, abs=1.0)
    # A worker that stops beating drops out; one that beats again is updated
    store.heartbeat("worker-1@host", LONG_LEASE, {"pid": 102})
    assert eventually(lambda: [b.worker for b in store.workers()] == ["worker-1@host"])
    assert store.workers()[0].info == {"pid": 102}
