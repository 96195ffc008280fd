"""The contract's one checked base: every store refuses bad input the same way, before
anything changes (priorities 0..255, positive leases, max_deliveries >= 1, known
states, queue names, non-negative counts)."""

from __future__ import annotations

import pytest

from tq_kombu.errors import ConfigurationError, PriorityError
from tq_kombu.store import Store
from tq_kombu.store.model import Lease, NewMessage, QueueCounts, QueueLifetime


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


@pytest.mark.parametrize("priority", [300, -3, 256, 2.5, "high"])
def test_a_priority_outside_0_to_255_is_refused_at_enqueue(store: Store, priority: object) -> None:
    with pytest.raises(PriorityError):
        store.enqueue("q", NewMessage("m", b"x", priority))  # type: ignore[arg-type]
    assert store.counts("q") == QueueCounts()
    assert store.ready_levels("q") == {}


@pytest.mark.parametrize(
    ("max_count", "lease_seconds", "max_deliveries"),
    [(-1, 30, 5), (1, 0, 5), (1, -2, 5), (1, 30, 0), (1.5, 30, 5)],
)
def test_a_fetch_with_a_bad_count_lease_or_delivery_limit_is_refused(
    store: Store, max_count: object, lease_seconds: float, max_deliveries: int
) -> None:
    store.enqueue("q", NewMessage("m", b"x", 5))
    with pytest.raises(ConfigurationError):
        store.fetch(["q"], max_count, "c", lease_seconds, max_deliveries)  # type: ignore[arg-type]
    assert store.counts("q") == QueueCounts(ready=1)


@pytest.mark.parametrize("queue", ["", None, 7])
def test_a_queue_that_is_not_a_name_is_refused(store: Store, queue: object) -> None:
    with pytest.raises(ConfigurationError):
        store.enqueue(queue, NewMessage("m", b"x", 5))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.fetch([queue], 1, "c", 30, 5)  # type: ignore[list-item]


def test_unknown_states_bad_leases_and_bad_lifetimes_are_refused(store: Store) -> None:
    with pytest.raises(ConfigurationError):
        store.list_messages("q", "lost")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.purge("q", "everything")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.renew([Lease("q", "m", "t")], 0)
    with pytest.raises(ConfigurationError):
        store.ack(("q", "m", "t"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.declare_queue("q", QueueLifetime(expires_seconds=-1))
    with pytest.raises(PriorityError):
        store.replay("q", "m", priority=999)
