"""Routing in the Store contract: bindings shared between processes, with expiries, over
every store (queue lifetimes: tests/test_store_lifetime.py)."""

from __future__ import annotations

import pytest

from tq_kombu.store import Store
from tq_kombu.store.model import (
    Binding,
)

from .store_contract import (
    LONG_LEASE,
    eventually,
)


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


# -- bindings --------------------------------------------------------------------------
def test_bindings_are_shared_until_unbound(store: Store) -> None:
    emails = Binding("celery.fanout", "", "", "emails")
    reports = Binding("celery.fanout", "", "", "reports")
    elsewhere = Binding("direct", "key", "key", "emails")
    store.bind(emails)
    store.bind(reports)
    store.bind(reports)  # binding twice records it once
    store.bind(elsewhere)
    assert sorted(store.bindings("celery.fanout"), key=lambda b: b.queue) == [emails, reports]
    store.unbind(emails)
    assert store.bindings("celery.fanout") == [reports]
    assert store.bindings("unknown") == []
    store.unbind(emails)  # unbinding what is not bound is harmless


def test_a_binding_with_an_expiry_vanishes_unless_refreshed(store: Store) -> None:
    permanent = Binding("celery.pidbox", "", "", "permanent")
    fading = Binding("celery.pidbox", "", "", "fading")
    refreshed = Binding("celery.pidbox", "", "", "refreshed")
    store.bind(permanent)
    store.bind(fading, expires_seconds=0.3)
    store.bind(refreshed, expires_seconds=0.3)
    assert {b.queue for b in store.bindings("celery.pidbox")} == {
        "permanent",
        "fading",
        "refreshed",
    }
    store.bind(refreshed, expires_seconds=LONG_LEASE)
    assert eventually(
        lambda: {b.queue for b in store.bindings("celery.pidbox")} == {"permanent", "refreshed"}
    )
