"""Helpers of the Store contract suites (tests/test_store_*.py): messages, fetches and
bounded waits. Each suite runs over every store, the reference memory store included."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    Delivery,
    FetchResult,
    NewMessage,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Long enough that no lease expires unless a test means it to.
LONG_LEASE = 60.0
#: Slack for stores that keep times in milliseconds or on a server clock.
CLOCK_SLACK = 0.01


def message(
    message_id: str,
    priority: int = Priority.NORMAL,
    *,
    eta: float | None = None,
    task_name: str = "tasks.example",
    task_id: str = "",
    waiting: bool = False,
    payload: bytes | None = None,
) -> NewMessage:
    return NewMessage(
        message_id=message_id,
        payload=f"payload of {message_id}".encode() if payload is None else payload,
        priority=int(priority),
        eta=eta,
        task_name=task_name,
        task_id=task_id or f"task-{message_id}",
        waiting=waiting,
    )


def fetch(
    store: Store,
    queues: Sequence[str],
    max_count: int = 1,
    *,
    consumer: str = "consumer-1",
    lease_seconds: float = LONG_LEASE,
    max_deliveries: int = 5,
    skip: Collection[str] = (),
) -> FetchResult:
    return store.fetch(queues, max_count, consumer, lease_seconds, max_deliveries, skip)


def ids(result: FetchResult) -> list[str]:
    return [delivery.lease.message_id for delivery in result.deliveries]


def only(result: FetchResult) -> Delivery:
    assert len(result.deliveries) == 1, result
    return result.deliveries[0]


def fetch_within(
    store: Store, queues: Sequence[str], seconds: float = 5.0, **options: object
) -> FetchResult:
    """Fetch until something is delivered (time has to pass for it) or ``seconds`` run out."""
    deadline = time.monotonic() + seconds
    while True:
        result = fetch(store, queues, **options)  # type: ignore[arg-type]
        if result.deliveries or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` run out; return its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started
