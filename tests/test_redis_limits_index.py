"""The Redis store's index of ready limited messages stays exact: a fetch that finds it
as large as the ready set looks for no plain message, so an id left behind there would
hide a plain message for good."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tq_kombu.store.model import DeadLetter, LimitDefinition, LimitTag, NewMessage
from tq_kombu.store.redis import RedisStore

Q = "limited"
INDEX = "{tq:limited}:limited"
#: One start per 30 s: a second message of the lane stays held back for the test.
SLOW = LimitDefinition("slow", "rate", interval_us=30_000_000, tolerance_us=0)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    opened.client.flushdb()
    opened.define_limits([SLOW])
    yield opened
    opened.close()


def slow(message_id: str, ttl_seconds: float | None = None) -> NewMessage:
    tag = LimitTag("rate", "slow", "A")
    return NewMessage(message_id, b"body", 5, task_name="t", limits=(tag,), ttl_seconds=ttl_seconds)


def fetched(store: RedisStore) -> list[str]:
    return [d.lease.message_id for d in store.fetch([Q], 10, "me", 60, 5).deliveries]


def indexed(store: RedisStore) -> set[str]:
    return {member.decode() for member in store.client.zrange(INDEX, 0, -1)}


def remove_cancelled(store: RedisStore) -> None:
    assert store.cancel(Q, "held")


def remove_buried(store: RedisStore) -> None:
    assert store.bury_payload(Q, slow("held"), DeadLetter("failed")) is not None


def remove_expired(store: RedisStore) -> None:
    # a clock to pass, not a condition to poll: its time to live (0.2 s) runs out and
    # the next fetch sets it aside as expired
    time.sleep(0.25)


@pytest.mark.parametrize(
    "remove",
    [remove_cancelled, remove_buried, remove_expired],
    ids=["cancelled", "buried", "expired"],
)
def test_a_held_back_limited_message_that_leaves_ready_leaves_the_index_and_hides_no_plain_one(
    store: RedisStore, remove: Callable[[RedisStore], None]
) -> None:
    store.enqueue(Q, slow("first"))
    store.enqueue(Q, slow("held", ttl_seconds=0.2))
    assert fetched(store) == ["first"]
    assert indexed(store) == {"held"}
    remove(store)
    store.enqueue(Q, NewMessage("plain", b"body", 5, task_name="t"))
    assert fetched(store) == ["plain"]
    assert indexed(store) == set()


def test_a_limited_message_given_a_new_priority_stays_indexed_once(store: RedisStore) -> None:
    store.enqueue(Q, slow("first"))
    store.enqueue(Q, slow("held"))
    assert fetched(store) == ["first"]
    assert store.set_priority(Q, "held", 9)
    assert indexed(store) == {"held"}
    store.enqueue(Q, NewMessage("plain", b"body", 5, task_name="t"))
    assert fetched(store) == ["plain"]
    assert indexed(store) == {"held"}


def test_one_fetch_hands_out_several_messages_of_a_lane_under_a_rate_that_never_binds(
    store: RedisStore,
) -> None:
    # a million a second without burst: each check reads the clock afresh, so the
    # microseconds a hand-out takes admit the next one in the same call
    store.define_limits([LimitDefinition("fast", "rate", interval_us=1, tolerance_us=0)])
    tag = LimitTag("rate", "fast", "A")
    for i in range(5):
        store.enqueue(Q, NewMessage(f"m{i}", b"body", 5, task_name="t", limits=(tag,)))
    assert fetched(store) == [f"m{i}" for i in range(5)]
    assert indexed(store) == set()


def test_acking_a_message_started_under_rate_limits_only_touches_no_slot_set(
    store: RedisStore,
) -> None:
    store.enqueue(Q, slow("first"))
    (delivery,) = store.fetch([Q], 10, "me", 60, 5).deliveries
    store.client.config_resetstat()
    assert store.ack(delivery.lease)
    stats = store.client.info("commandstats")
    assert "cmdstat_srem" not in stats and "cmdstat_sadd" not in stats


def test_ids_an_earlier_version_left_in_the_index_are_dropped_and_hide_no_plain_message(
    store: RedisStore,
) -> None:
    store.enqueue(Q, slow("first"))
    store.enqueue(Q, slow("held"))
    assert fetched(store) == ["first"]
    # an earlier tq left ids of messages no longer ready in the index
    store.client.zadd(INDEX, {"gone-1": 1, "gone-2": 2})
    store.enqueue(Q, NewMessage("plain", b"body", 5, task_name="t"))
    assert fetched(store) == ["plain"]
    assert indexed(store) == {"held"}
