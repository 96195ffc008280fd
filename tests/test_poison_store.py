"""Corrupt records in both stores: a Redis metadata record that is not valid JSON (or not
the right fields), a SQLite column holding a value of the wrong type. Each message is
set aside as dead (reason ``corrupt``) by the first fetch that meets it, keeping its
payload; nothing raises, nothing is dropped, and the good messages flow on. The
records are damaged as an outsider would: a raw redis client, the sqlite3 module."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator

import pytest
import redis

from tq_kombu.admin import Admin
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import DeadReason, FetchResult, NewMessage, QueueCounts, State

from .workers import run_celery

Q = "poison"
LONG_LEASE = 60.0

#: Ways to damage a Redis metadata record (None: the record is deleted).
REDIS_DAMAGE: dict[str, bytes | None] = {
    "not JSON": b'{"p": 5, "n": ',
    "a JSON array": b"[1, 2, 3]",
    "JSON null": b"null",
    "no priority": b'{"n": 0, "t": "tasks.x", "i": "t-1"}',
    "a text delivery count": b'{"p": 5, "n": "many", "t": "tasks.x"}',
    "a text first-seen time": b'{"p": 5, "n": 0, "c": "yesterday", "t": "tasks.x"}',
    "a priority out of range": b'{"p": 1000, "n": 0, "t": "tasks.x"}',
    "deleted": None,
}
#: Ways to damage a SQLite row: (column, value).
SQLITE_DAMAGE: dict[str, tuple[str, object]] = {
    "text priority": ("priority", "high"),
    "priority out of range": ("priority", 1000),
    "text seq": ("seq", "first"),
    "blob delivery count": ("delivery_count", b"\x01"),
    "text payload": ("payload", "plain text"),
    "text created_at": ("created_at", "yesterday"),
    "unknown state": ("state", "readyish"),
}


def message(message_id: str, priority: int = 5, eta: float | None = None) -> NewMessage:
    return NewMessage(message_id, f"payload {message_id}".encode(), priority, eta, "tasks.x")


def fetch(store: Store, max_count: int = 10, lease_seconds: float = LONG_LEASE) -> FetchResult:
    return store.fetch([Q], max_count, "consumer-1", lease_seconds, 5)


def damage(url: str, message_id: str, kind: str) -> None:
    damage_in(url, Q, message_id, kind)


def damage_in(url: str, queue: str, message_id: str, kind: str) -> None:
    """Damage one message's record the way ``kind`` says, from outside tq."""
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        key = "{tq:" + queue + "}:meta"
        value = REDIS_DAMAGE[kind]
        if value is None:
            client.hdel(key, message_id)
        else:
            client.hset(key, message_id, value)
        client.close()
        return
    column, bad = SQLITE_DAMAGE[kind]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute(
            f"UPDATE messages SET {column} = ? WHERE queue = ? AND id = ?",
            (bad, queue, message_id),
        )


def kinds(url: str) -> list[str]:
    return list(REDIS_DAMAGE if url.startswith("redis") else SQLITE_DAMAGE)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def dead_reasons(store: Store) -> dict[str, str | None]:
    return {m.message_id: m.dead_reason for m in store.list_messages(Q, State.DEAD)}


def test_a_ready_message_with_a_corrupt_record_goes_dead_and_the_rest_are_delivered(
    store_url: str, store: Store
) -> None:
    for kind in kinds(store_url):
        # Given a damaged urgent message ahead of a good one
        store.delete_queue(Q)
        store.enqueue(Q, message("bad", priority=9))
        store.enqueue(Q, message("good", priority=1))
        damage(store_url, "bad", kind)
        # When a consumer fetches
        result = fetch(store)
        # Then the good one is delivered and the damaged one is dead as corrupt, payload kept
        assert [d.lease.message_id for d in result.deliveries] == ["good"], kind
        assert dead_reasons(store) == {"bad": DeadReason.CORRUPT.value}, kind
        assert store.counts(Q) == QueueCounts(inflight=1, dead=1), kind
        info = store.info(Q, "bad")
        assert info is not None and info.state is State.DEAD and info.dead_detail, kind
        assert store.payload(Q, "bad") is not None, kind


def test_every_ready_message_with_a_corrupt_record_goes_dead_in_one_fetch(
    store_url: str, store: Store
) -> None:
    # Given twelve damaged messages ahead of one good one, more than one fetch asks for
    for n in range(12):
        store.enqueue(Q, message(f"bad-{n}", priority=9))
        damage(store_url, f"bad-{n}", kinds(store_url)[n % 2])
    store.enqueue(Q, message("good", priority=1))
    # When a consumer fetches one message, Then it gets the good one
    assert [d.lease.message_id for d in fetch(store, max_count=1).deliveries] == ["good"]
    assert store.counts(Q) == QueueCounts(inflight=1, dead=12)


def test_a_due_delayed_message_with_a_corrupt_record_goes_dead(
    store_url: str, store: Store
) -> None:
    # Given a delayed message whose record is damaged, then comes due
    store.enqueue(Q, message("later", eta=time.time() + 0.3))
    if store_url.startswith("redis"):
        damage(store_url, "later", "not JSON")
    else:
        damage_eta = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with damage_eta:
            damage_eta.execute("UPDATE messages SET eta = 'soon' WHERE id = 'later'")
        damage_eta.close()
    deadline = time.monotonic() + 5
    while store.counts(Q).dead == 0 and time.monotonic() < deadline:
        assert fetch(store).deliveries == []
        time.sleep(0.05)
    # Then it is dead as corrupt, never delivered, never dropped
    assert dead_reasons(store) == {"later": "corrupt"}


def test_an_expired_lease_on_a_corrupt_record_goes_dead_and_its_holder_cannot_settle(
    store_url: str, store: Store
) -> None:
    # Given a message in flight whose record is damaged while it is held
    store.enqueue(Q, message("held"))
    lease = fetch(store, lease_seconds=0.3).deliveries[0].lease
    if store_url.startswith("redis"):
        damage(store_url, "held", "not JSON")
        # Then its holder can neither renew nor settle it, and no error is raised
        assert store.renew([lease], LONG_LEASE) == [lease]
        assert store.ack(lease) is False
        assert store.release(lease) is False
    else:
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE messages SET lease_until = 'never' WHERE id = 'held'")
    # When its lease runs out and a consumer fetches, Then it is dead as corrupt
    deadline = time.monotonic() + 5
    while store.counts(Q).dead == 0 and time.monotonic() < deadline:
        assert fetch(store).deliveries == []
        time.sleep(0.05)
    assert dead_reasons(store) == {"held": "corrupt"}


def test_inspection_reads_corrupt_records_without_raising(store_url: str, store: Store) -> None:
    # Given damaged messages in ready (not yet fetched) and one already dead as corrupt
    for kind in kinds(store_url):
        store.enqueue(Q, message(kind))
        damage(store_url, kind, kind)
    store.enqueue(Q, message("good"))
    # When an operator looks at the queue, Then every view answers (a row of no known
    # state shows in none of them until a fetch sets it aside)
    queued = [kind for kind in kinds(store_url) if kind != "unknown state"]
    with Admin(store_url) as admin:
        [stats] = admin.stats([Q])
        assert stats.ready == len(queued) + 1
        listed = {m.message_id for m in admin.messages(Q)}
        assert {"good", *queued} <= listed
        for kind in kinds(store_url):
            admin.show(kind, [Q], raw=True)
    # And after a fetch they are dead letters, listed as such
    fetch(store)
    with Admin(store_url) as admin:
        dead = admin.messages(Q, state="dead")
        assert {m.message_id for m in dead} == set(kinds(store_url))
        assert {m.dead_reason for m in dead} == {"corrupt"}
        assert admin.stats([Q])[0].dead == len(kinds(store_url))


def test_a_corrupt_dead_letter_can_be_replayed_or_purged(store_url: str, store: Store) -> None:
    kind = kinds(store_url)[0]
    store.enqueue(Q, message("bad"))
    damage(store_url, "bad", kind)
    fetch(store)
    assert dead_reasons(store) == {"bad": "corrupt"}
    # When it is replayed and fetched again
    assert store.replay(Q, "bad") is True
    result = fetch(store)
    if store_url.startswith("redis"):
        # Then (Redis) the readable record written when it was set aside lets it run
        assert [d.lease.message_id for d in result.deliveries] == ["bad"]
    else:
        # Then (SQLite) the column is still unreadable: dead again, and purge clears it
        assert result.deliveries == [] and dead_reasons(store) == {"bad": "corrupt"}
        assert store.purge(Q, State.DEAD) == 1


def test_a_waiting_message_with_a_corrupt_record_is_released_then_set_aside(
    redis_url: str,
) -> None:
    store = open_store(redis_url)
    store.enqueue(Q, NewMessage("w", b"payload", 5, None, "tasks.x", waiting=True))
    damage(redis_url, "w", "not JSON")
    assert store.release_waiting(Q, "w") is True
    assert fetch(store).deliveries == []
    assert dead_reasons(store) == {"w": "corrupt"}
    assert store.set_priority(Q, "w", 9) is False
    store.close()


@pytest.mark.e2e
def test_the_tq_cli_lists_corrupt_messages_without_a_traceback(
    store_url: str, store: Store
) -> None:
    # Given a damaged message waiting in the app's queue, and another already set aside
    for kind in kinds(store_url)[:2]:
        store.enqueue("celery", NewMessage(kind, b"payload", 5, None, "tasks.x"))
        damage_in(store_url, "celery", kind, kind)
    store.fetch(["celery"], 1, "consumer-1", LONG_LEASE, 5)
    env = {**os.environ, "TQ_BROKER_URL": f"tq+{store_url}", "TQ_JOURNAL": os.devnull}
    # When an operator runs tq stats, ls and dlq ls, Then each answers without a traceback
    for command in (["stats"], ["ls"], ["dlq", "ls"]):
        done = run_celery("tests.e2e_app", env, "tq", *command)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "celery" in done.stdout, done.stdout
    assert "corrupt" in done.stdout
