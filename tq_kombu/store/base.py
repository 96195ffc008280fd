"""The Store contract and its records under their former names: see
:mod:`tq_kombu.store.model` (records) and :mod:`tq_kombu.store.contract` (the slices)."""

from __future__ import annotations

from .contract import Store
from .model import (
    Binding,
    DeadLetter,
    DeadReason,
    Delivery,
    FetchResult,
    Lease,
    MessageInfo,
    NewMessage,
    QueueCounts,
    QueueLifetime,
    RetentionPolicy,
    State,
    WorkerBeat,
)

__all__ = [
    "Binding",
    "DeadLetter",
    "DeadReason",
    "Delivery",
    "FetchResult",
    "Lease",
    "MessageInfo",
    "NewMessage",
    "QueueCounts",
    "QueueLifetime",
    "RetentionPolicy",
    "State",
    "Store",
    "WorkerBeat",
]
