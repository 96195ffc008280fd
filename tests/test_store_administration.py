"""Administration in the Store contract: cancel, set priority, waiting messages, purge,
delete, over every store."""

from __future__ import annotations

import time

import pytest

from tq_kombu.errors import PriorityError
from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    QueueCounts,
    State,
)

from .store_contract import (
    fetch,
    ids,
    message,
    only,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


# -- administration --------------------------------------------------------------
def test_cancel_removes_a_ready_delayed_or_waiting_message_but_not_one_in_flight(
    store: Store,
) -> None:
    store.enqueue("default", message("in-flight", Priority.URGENT))
    lease = only(fetch(store, ["default"])).lease
    store.enqueue("default", message("ready"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    for name in ("ready", "delayed", "waiting"):
        assert store.cancel("default", name) is True
        assert store.info("default", name) is None
    assert store.cancel("default", "in-flight") is False
    assert store.cancel("default", "missing") is False
    assert store.counts("default") == QueueCounts(inflight=1)
    assert store.ack(lease) is True


def test_set_priority_reorders_queued_messages(store: Store) -> None:
    store.enqueue("default", message("first", Priority.NORMAL))
    store.enqueue("default", message("second", Priority.NORMAL))
    store.enqueue("default", message("last", Priority.LOW))
    assert store.set_priority("default", "last", Priority.URGENT) is True
    info = store.info("default", "last")
    assert info is not None and info.priority == Priority.URGENT
    assert ids(fetch(store, ["default"], max_count=3)) == ["last", "first", "second"]


def test_set_priority_applies_to_delayed_and_waiting_but_not_in_flight_messages(
    store: Store,
) -> None:
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.enqueue("default", message("waiting", waiting=True))
    store.enqueue("default", message("in-flight"))
    only(fetch(store, ["default"]))
    assert store.set_priority("default", "delayed", 99) is True
    assert store.set_priority("default", "waiting", 98) is True
    assert store.set_priority("default", "in-flight", 97) is False
    assert store.set_priority("default", "missing", 96) is False
    priorities = {
        name: info.priority
        for name in ("delayed", "waiting", "in-flight")
        if (info := store.info("default", name)) is not None
    }
    assert priorities == {"delayed": 99, "waiting": 98, "in-flight": Priority.NORMAL}


@pytest.mark.parametrize("bad", [-1, 256, "high", 2.5, True])
def test_set_priority_refuses_what_is_not_a_priority(store: Store, bad: object) -> None:
    store.enqueue("default", message("a"))
    with pytest.raises(PriorityError):
        store.set_priority("default", "a", bad)  # type: ignore[arg-type]
    info = store.info("default", "a")
    assert info is not None and info.priority == Priority.NORMAL


def test_a_waiting_message_is_held_until_released(store: Store) -> None:
    # Given a message waiting on its dependencies, behind a lower priority one
    store.enqueue("default", message("dependent", Priority.HIGH, waiting=True))
    store.enqueue("default", message("other", Priority.LOW))
    # Then it is not handed out
    assert ids(fetch(store, ["default"], max_count=5)) == ["other"]
    # When the dependency resolver releases it, Then it is ready at its priority
    assert store.release_waiting("default", "dependent") is True
    info = store.info("default", "dependent")
    assert info is not None and info.state is State.READY
    assert ids(fetch(store, ["default"])) == ["dependent"]
    # A message that is not waiting cannot be released
    assert store.release_waiting("default", "dependent") is False
    assert store.release_waiting("default", "missing") is False


def test_a_released_waiting_message_with_a_future_eta_becomes_delayed(store: Store) -> None:
    eta = time.time() + 3600
    store.enqueue("default", message("dependent", eta=eta, waiting=True))
    assert store.release_waiting("default", "dependent") is True
    info = store.info("default", "dependent")
    assert info is not None and info.state is State.DELAYED
    assert fetch(store, ["default"]).deliveries == []


def test_purge_deletes_only_the_given_state_and_says_how_many(store: Store) -> None:
    store.enqueue("default", message("ready-1"))
    store.enqueue("default", message("ready-2"))
    store.enqueue("default", message("delayed", eta=time.time() + 3600))
    store.bury_payload("default", message("dead"), DeadLetter(DeadReason.FAILED))
    store.enqueue("other", message("elsewhere"))
    assert store.purge("default") == 2  # ready is the default
    assert store.counts("default") == QueueCounts(delayed=1, dead=1)
    assert store.purge("default", State.DEAD) == 1
    assert store.purge("default", State.DEAD) == 0
    assert store.purge("default", State.DELAYED) == 1
    assert store.counts("default") == QueueCounts()
    assert store.counts("other") == QueueCounts(ready=1)


def test_delete_queue_removes_messages_in_every_state_and_nothing_else(store: Store) -> None:
    store.enqueue("doomed", message("in-flight", Priority.URGENT))
    lease = only(fetch(store, ["doomed"])).lease
    store.enqueue("doomed", message("ready"))
    store.enqueue("doomed", message("delayed", eta=time.time() + 3600))
    store.enqueue("doomed", message("waiting", waiting=True))
    store.bury_payload("doomed", message("dead"), DeadLetter(DeadReason.FAILED))
    store.enqueue("kept", message("ready"))
    store.delete_queue("doomed")
    assert store.counts("doomed") == QueueCounts()
    assert store.info("doomed", "ready") is None
    assert store.ack(lease) is False
    assert store.counts("kept") == QueueCounts(ready=1)
    # the queue can be used again afterwards
    store.enqueue("doomed", message("new"))
    assert ids(fetch(store, ["doomed"])) == ["new"]
