"""Worker heartbeats in the Store contract, over every store."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tq_kombu.errors import ConfigurationError
from tq_kombu.store import Store
from tq_kombu.store.model import State

from .store_contract import (
    LONG_LEASE,
    eventually,
    fetch,
    message,
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


def test_a_worker_that_misses_its_beats_is_listed_as_lost_until_its_keep_time_ends(
    store: Store,
) -> None:
    # Given a worker beating with a short expiry, kept a while once lost
    store.heartbeat("live@host", LONG_LEASE, {"pid": 1})
    store.heartbeat("gone@host", 0.2, {"pid": 2}, keep_seconds=0.6)
    assert [(b.worker, b.lost) for b in store.workers(include_lost=True)] == [
        ("gone@host", False),
        ("live@host", False),
    ]
    # When its beat expires: only the live one is alive, the other is listed as lost
    assert eventually(lambda: [b.worker for b in store.workers()] == ["live@host"])
    lost = {b.worker: b for b in store.workers(include_lost=True)}
    assert lost["gone@host"].lost and not lost["live@host"].lost
    assert lost["gone@host"].info == {"pid": 2}
    expires_at = lost["gone@host"].expires_at
    assert expires_at is not None and expires_at == pytest.approx(lost["gone@host"].seen_at + 0.2)
    # Then once its keep time ends it is dropped for good
    assert eventually(lambda: [b.worker for b in store.workers(include_lost=True)] == ["live@host"])


def test_a_lost_worker_that_beats_again_is_live_again(store: Store) -> None:
    store.heartbeat("w@host", 0.1, {"n": 1})
    assert eventually(lambda: store.workers() == [])
    assert [b.lost for b in store.workers(include_lost=True)] == [True]
    store.heartbeat("w@host", LONG_LEASE, {"n": 2})
    [beat] = store.workers(include_lost=True)
    assert (beat.worker, beat.lost, beat.info) == ("w@host", False, {"n": 2})


def test_a_beat_with_no_keep_time_is_dropped_as_soon_as_it_expires(store: Store) -> None:
    store.heartbeat("w@host", 0.1, {}, keep_seconds=0)
    assert eventually(lambda: store.workers(include_lost=True) == [])


def test_forgetting_a_worker_drops_its_beat_live_or_lost(store: Store) -> None:
    store.heartbeat("live@host", LONG_LEASE, {})
    store.heartbeat("lost@host", 0.1, {})
    assert eventually(lambda: [b.worker for b in store.workers()] == ["live@host"])
    assert store.forget_worker("lost@host") is True
    assert store.forget_worker("live@host") is True
    assert store.forget_worker("never@host") is False
    assert store.workers(include_lost=True) == []


def test_a_negative_keep_time_is_refused_before_anything_is_recorded(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="keep_seconds"):
        store.heartbeat("w@host", LONG_LEASE, {}, keep_seconds=-1)
    assert store.workers(include_lost=True) == []


def test_an_in_flight_message_names_the_consumer_holding_its_lease(store: Store) -> None:
    store.enqueue("default", message("held"))
    store.enqueue("default", message("waiting"))
    fetch(store, ["default"], consumer="c0ffee")
    assert store.info("default", "held") == replace(
        store.info("default", "held"), state=State.INFLIGHT, held_by="c0ffee"
    )
    assert [m.held_by for m in store.list_messages("default", State.INFLIGHT, 0, 10)] == ["c0ffee"]
    found = store.find_task("default", "task-held")
    assert found is not None and found.held_by == "c0ffee"
    # a message not in flight is held by nobody
    assert store.info("default", "waiting").held_by is None  # type: ignore[union-attr]
