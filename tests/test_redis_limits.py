"""Limits on the Redis store: where lanes and limit state live, what a plain message
pays (nothing), kept counts, slots freed by every end of a lease, wake-ups, fairness."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tq_kombu.store.model import LimitDefinition, LimitTag, NewMessage
from tq_kombu.store.redis import RedisStore

from .workers import wait_for

Q = "limited"
ONE_SLOT = LimitDefinition("slots", "concurrency", slots=1)
#: One start per 0.3 s, no burst.
SLOW = LimitDefinition("slow", "rate", interval_us=300_000, tolerance_us=0)
#: Never refuses in these tests: a burst of a thousand.
WIDE = LimitDefinition("wide", "rate", interval_us=1_000, tolerance_us=1_000_000)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    opened.client.flushdb()
    yield opened
    opened.close()


def limited(message_id: str, *tags: LimitTag, priority: int = 5) -> NewMessage:
    return NewMessage(message_id, b"body", priority, task_name="t", limits=tags)


def slot(key: str = "A") -> LimitTag:
    return LimitTag("concurrency", ONE_SLOT.name, key)


def fetched(store: RedisStore, count: int = 10, lease: float = 60.0) -> list[str]:
    return [d.lease.message_id for d in store.fetch([Q], count, "me", lease, 5).deliveries]


def kept_counts(store: RedisStore, queue: str) -> dict[int, int]:
    raw = store.client.hgetall(store.keys_of(queue)["counts"])
    return {int(k): int(v) for k, v in raw.items() if k != b"v"}


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items()}


def plain_cycle(store: RedisStore, queue: str, message_id: str) -> dict[str, int]:
    """The Redis commands one plain enqueue, fetch and ack run (scripts included)."""

    def cycle(message_id: str) -> None:
        store.enqueue(queue, NewMessage(message_id, b"body", 5, task_name="t"))
        (delivery,) = store.fetch([queue], 1, "me", 60, 5).deliveries
        assert store.ack(delivery.lease)

    cycle("warm-up " + message_id)  # scripts registered, the queue's layout marked
    store.client.config_resetstat()
    cycle(message_id)
    calls = command_calls(store.client)
    calls.pop("cmdstat_config", None)
    calls.pop("cmdstat_info", None)
    return calls


# -- layout ----------------------------------------------------------------------
def test_lanes_live_under_the_queue_hash_tag_and_limit_state_under_the_limits_tag(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT, SLOW])
    store.enqueue(Q, limited("m1", slot(), LimitTag("rate", "slow", "A")))
    store.enqueue(Q, limited("m2", slot()))
    assert fetched(store) == ["m1"]
    keys = {k.decode() for k in store.client.keys("*")}
    lanes = {k for k in keys if ":lane:" in k or k.endswith(("}:lanes", "}:blocked"))}
    assert lanes and all(k.startswith("{tq:limited}:") for k in lanes)
    limit_keys = {k for k in keys if "limits}" in k}
    assert store.keys.limits("defs") in limit_keys
    assert store.keys.limits("slots", "slots", "A") in limit_keys
    assert store.keys.limits("tat", "slow", "A") in limit_keys
    assert all(k.startswith("{tq:limits}:") for k in limit_keys)
    lane = '[["concurrency","slots","A"]]'
    assert store.keys.lane(Q, lane) in keys and store.keys.lanes(Q)[1] in keys


@pytest.mark.parametrize("drop", ["purge", "delete_queue"])
def test_purging_ready_messages_or_deleting_the_queue_drops_its_lanes(
    store: RedisStore, drop: str
) -> None:
    from tq_kombu.store.model import State

    store.define_limits([ONE_SLOT])
    store.enqueue(Q, limited("m1", slot("A")))
    store.enqueue(Q, limited("m2", slot("A")))
    store.enqueue(Q, limited("m3", slot("B")))
    assert sorted(fetched(store)) == ["m1", "m3"]
    if drop == "purge":
        assert store.purge(Q, State.READY) == 1
    else:
        store.delete_queue(Q)
    assert store.client.keys("{tq:limited}:lane*") == []
    assert store.client.keys("{tq:limited}:blocked") == []
    assert store.client.keys("{tq:limited}:limited") == []
    status = store.limit_status("slots")
    assert status is not None and all(k.waiting == 0 for k in status.keys)
    running = 2 if drop == "purge" else 0  # a deleted queue's leases hold nothing
    assert sum(k.running for k in status.keys) == running


def test_a_tat_key_expires_at_its_value(store: RedisStore) -> None:
    store.define_limits([SLOW])
    store.enqueue(Q, limited("m1", LimitTag("rate", "slow", "A")))
    assert fetched(store) == ["m1"]
    ttl_ms = store.client.pttl(store.keys.limits("tat", "slow", "A"))
    assert 0 < ttl_ms <= 300


# -- plain messages pay nothing ----------------------------------------------------
def test_a_plain_enqueue_fetch_and_ack_run_the_same_commands_with_limits_in_use(
    store: RedisStore,
) -> None:
    before = plain_cycle(store, "plain", "p0")
    # limited messages held back in another queue, limits defined
    store.define_limits([ONE_SLOT])
    for n in range(3):
        store.enqueue(Q, limited(f"m{n}", slot()))
    assert fetched(store) == ["m0"]
    assert fetched(store) == []
    after = plain_cycle(store, "plain", "p1")
    assert after == before


# -- kept counts ---------------------------------------------------------------------
def test_kept_counts_stay_exact_while_lanes_hold_messages_back(store: RedisStore) -> None:
    store.define_limits([ONE_SLOT])
    for n in range(4):
        store.enqueue(Q, limited(f"a{n}", slot("A"), priority=n))
    store.enqueue(Q, NewMessage("p", b"body", 2))
    assert sorted(fetched(store)) == ["a3", "p"]
    assert kept_counts(store, Q) == {0: 1, 1: 1, 2: 1}
    assert store.counts(Q).ready == 3 and store.counts(Q).inflight == 2


# -- slots: every end of a lease frees one, a stale token none -----------------------------
def test_an_ack_frees_the_slot_and_touches_the_marker_of_the_waiting_queue(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT])
    store.enqueue(Q, limited("m1", slot()))
    store.enqueue("other", limited("m2", slot()))
    (first,) = store.fetch([Q], 1, "me", 60, 5).deliveries
    assert store.fetch(["other"], 1, "me", 60, 5).deliveries == []
    marker = store.keys_of("other")["marker"]
    store.client.delete(marker)
    assert store.ack(first.lease)
    assert store.client.zcard(marker) == 1
    assert [d.lease.message_id for d in store.fetch(["other"], 1, "me", 60, 5).deliveries] == ["m2"]


@pytest.mark.parametrize("settle", ["release", "requeue", "bury"])
def test_release_requeue_and_bury_free_the_slot(store: RedisStore, settle: str) -> None:
    from tq_kombu.store.model import DeadLetter, DeadReason

    store.define_limits([ONE_SLOT])
    store.enqueue(Q, limited("m1", slot()))
    store.enqueue(Q, limited("m2", slot()))
    (first,) = store.fetch([Q], 1, "me", 60, 5).deliveries
    assert fetched(store) == []
    if settle == "bury":
        assert store.bury(first.lease, DeadLetter(DeadReason.REJECTED, "no"))
    else:
        assert getattr(store, settle)(first.lease)
    got = fetched(store, 1)
    assert len(got) == 1
    assert fetched(store) == [], "one slot: nothing more while the second runs"


def test_a_stale_token_frees_nothing_and_an_expired_lease_frees_its_slot(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT])
    store.enqueue(Q, limited("m1", slot()))
    store.enqueue(Q, limited("m2", slot()))
    (first,) = store.fetch([Q], 1, "me", 0.3, 5).deliveries
    wait_for(lambda: fetched(store, 1, lease=60) != [], 5, "the expired lease's slot")
    assert not store.ack(first.lease), "the stale token settles nothing"
    assert fetched(store) == [], "and frees no slot"


# -- rates, definitions ---------------------------------------------------------------
def test_a_rate_limited_message_is_due_when_the_rate_admits_it(store: RedisStore) -> None:
    store.define_limits([SLOW])
    for n in range(2):
        store.enqueue(Q, limited(f"m{n}", LimitTag("rate", "slow", "A")))
    result = store.fetch([Q], 10, "me", 60, 5)
    assert [d.lease.message_id for d in result.deliveries] == ["m0"]
    assert result.next_due is not None and 0 < result.next_due - time.time() <= 0.31
    wait_for(lambda: time.time() >= result.next_due, 2, "next_due")  # type: ignore[operator]
    assert fetched(store) == ["m1"]


def test_set_limit_wakes_held_back_lanes_and_settings_do_not_overwrite_it(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT])
    for n in range(3):
        store.enqueue(Q, limited(f"m{n}", slot()))
    assert fetched(store) == ["m0"]
    marker = store.keys_of(Q)["marker"]
    store.client.delete(marker)
    store.set_limit(LimitDefinition("slots", "concurrency", slots=3))
    assert store.client.zcard(marker) == 1
    store.define_limits([ONE_SLOT])
    assert store.limits()[0].slots == 3 and store.limits()[0].origin == "runtime"
    assert fetched(store) == ["m1", "m2"]
    assert store.remove_limit("slots") and not store.remove_limit("slots")


def test_a_limit_name_nobody_defined_limits_nothing(store: RedisStore) -> None:
    for n in range(3):
        store.enqueue(Q, limited(f"m{n}", LimitTag("rate", "nobody", "A")))
    assert fetched(store) == ["m0", "m1", "m2"]


# -- fairness --------------------------------------------------------------------------
def test_keys_take_turns_at_one_priority(store: RedisStore) -> None:
    store.define_limits([WIDE])
    for n in range(50):
        store.enqueue(Q, limited(f"a{n:02}", LimitTag("rate", "wide", "A")))
    for n in range(5):
        store.enqueue(Q, limited(f"b{n}", LimitTag("rate", "wide", "B")))
    order = [fetched(store, 1)[0] for _ in range(10)]
    assert [m[0] for m in order] == list("ab" * 5)
    assert store.limit_status("wide") is not None


def test_priority_orders_before_turns(store: RedisStore) -> None:
    store.define_limits([WIDE])
    store.enqueue(Q, limited("a-low", LimitTag("rate", "wide", "A"), priority=1))
    store.enqueue(Q, limited("b-high", LimitTag("rate", "wide", "B"), priority=9))
    store.enqueue(Q, NewMessage("plain-mid", b"body", 5))
    assert fetched(store, 3) == ["b-high", "plain-mid", "a-low"]


# -- random operations keep everything exact ------------------------------------------
def check_exact(store: RedisStore, queue: str) -> None:
    """Kept counts match the ready set, every lane holds only ready messages of its
    lane, and slot sets hold only live leases (after a check of them)."""
    keys = store.keys_of(queue)
    counted: dict[int, int] = {}
    ready = dict(store.client.zrange(keys["ready"], 0, -1, withscores=True))
    for score in ready.values():
        priority = 255 - int(score) // 2**44
        counted[priority] = counted.get(priority, 0) + 1
    assert kept_counts(store, queue) == counted
    assert store.client.zcard(keys["ages"]) == len(ready)
    for lane_key in store.client.keys(store.keys.lane(queue, "*")):
        for member, score in store.client.zrange(lane_key, 0, -1, withscores=True):
            if member in ready:  # others are dropped when met at a lane's head
                assert ready[member] == score


def test_random_operations_keep_counts_lanes_and_slots_exact(store: RedisStore) -> None:
    import random

    rng = random.Random(10)
    store.define_limits([LimitDefinition("slots", "concurrency", slots=2), WIDE])
    held: list = []
    for step in range(400):
        op = rng.random()
        if op < 0.4:
            tags = rng.choice(
                [(), (slot("A"),), (slot("B"),), (LimitTag("rate", "wide", "A"), slot("A"))]
            )
            store.enqueue(Q, limited(f"m{step}", *tags, priority=rng.randrange(3)))
        elif op < 0.65:
            held += store.fetch([Q], rng.randrange(1, 4), "me", 60, 50).deliveries
        elif op < 0.85 and held:
            delivery = held.pop(rng.randrange(len(held)))
            assert getattr(store, rng.choice(["ack", "release", "requeue"]))(delivery.lease)
        elif op < 0.9:
            store.set_priority(Q, f"m{rng.randrange(step + 1)}", rng.randrange(3))
        elif op < 0.95:
            store.cancel(Q, f"m{rng.randrange(step + 1)}")
        check_exact(store, Q)
    # every key's slot set holds exactly the live leases of its key
    for key in ("A", "B"):
        slot_key = store.keys.limits("slots", "slots", key)
        holders = {h.split(b"\0")[1].decode() for h in store.client.smembers(slot_key)}
        live = {
            d.lease.message_id
            for d in held
            if any(t.key == key and t.kind == "concurrency" for t in tags_of(store, d))
        }
        assert live <= holders and len(holders) <= 2
    # and everything held back comes out once the leases end
    for delivery in held:
        assert store.ack(delivery.lease)
    drained = []
    for _ in range(200):
        batch = store.fetch([Q], 10, "me", 60, 50).deliveries
        if not batch and not store.counts(Q).ready:
            break
        for delivery in batch:
            drained.append(delivery.lease.message_id)
            assert store.ack(delivery.lease)
    assert store.counts(Q).ready == 0
    check_exact(store, Q)


def tags_of(store: RedisStore, delivery) -> list[LimitTag]:  # type: ignore[no-untyped-def]
    import json

    raw = store.client.hget(store.keys_of(Q)["meta"], delivery.lease.message_id)
    lane = json.loads(raw).get("lm") if raw else None
    return [LimitTag(*t) for t in json.loads(lane)] if lane else []


def test_a_fetch_looks_past_a_held_back_backlog_without_reading_its_messages(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT])
    backlog = [limited(f"a{n:03}", slot()) for n in range(900)]
    store.enqueue_many([(Q, m) for m in backlog])
    assert fetched(store, 1) == ["a000"]
    store.enqueue(Q, NewMessage("plain", b"body", 5))
    store.client.config_resetstat()
    assert fetched(store) == ["plain"]
    calls = command_calls(store.client)
    assert calls.get("cmdstat_hget", 0) < 20, "one metadata read per message looked past"
    assert calls.get("cmdstat_zmscore", 0) <= 20  # 9 windows, before and after the hand-out


def test_a_lease_run_out_in_a_queue_nobody_fetches_frees_its_slot_at_its_deadline(
    store: RedisStore,
) -> None:
    store.define_limits([ONE_SLOT])
    store.enqueue("abandoned", limited("held", slot()))
    store.enqueue(Q, limited("next", slot()))
    (held,) = store.fetch(["abandoned"], 1, "gone", 0.5, 5).deliveries
    result = store.fetch([Q], 1, "me", 60, 5)
    assert result.deliveries == [] and result.next_due is not None
    assert abs(result.next_due - (time.time() + 0.5)) < 0.3, "due when the lease runs out"
    wait_for(lambda: time.time() > result.next_due, 2, "the lease to run out")  # type: ignore[operator]
    assert fetched(store) == ["next"]
    status = store.limit_status(ONE_SLOT.name)
    assert status is not None and [(k.key, k.running) for k in status.keys] == [("A", 1)]
    # a late settle of the run-out lease frees nothing that "next" holds
    store.ack(held.lease)
    assert fetched(store) == []


def test_processes_sharing_redis_never_hold_more_slots_than_the_limit(redis_url: str) -> None:
    import json
    import os
    import subprocess
    import sys

    from .store_contract import PROJECT_ROOT
    from .test_store_limits_processes import CONSUMER, max_overlap

    # Given a concurrency limit of 2 and 40 messages under it, in one Redis
    store = RedisStore.from_url(redis_url)
    store.client.flushdb()
    store.define_limits([LimitDefinition("heavy", "concurrency", slots=2)])
    tag = LimitTag("concurrency", "heavy", "tenant")
    for n in range(40):
        store.enqueue(Q, NewMessage(f"m{n:02}", b"x", 5, task_name="tasks.heavy", limits=(tag,)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # When three consumer processes fetch and ack concurrently
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, redis_url, f"process-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.communicate(timeout=10)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=90) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    held: list[list] = []  # type: ignore[type-arg]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        held.extend(json.loads(out.strip().splitlines()[-1]))
    # Then every message ran once, and no moment saw more than 2 of them at once
    assert sorted(m for m, _, _ in held) == [f"m{n:02}" for n in range(40)]
    assert max_overlap([(got, done) for _, got, done in held]) <= 2
    assert store.counts(Q).ready == store.counts(Q).inflight == 0
    store.close()


@pytest.mark.parametrize("lane", ["not json", '{"a": 1}', "[1, 2]", '[["rate", 5, "k"]]'])
def test_a_lane_value_tq_did_not_write_limits_nothing(store: RedisStore, lane: str) -> None:
    import json

    store.define_limits([ONE_SLOT])
    store.enqueue(Q, limited("m0", slot()))
    meta_key = store.keys_of(Q)["meta"]
    meta = json.loads(store.client.hget(meta_key, "m0"))
    meta["lm"] = lane
    store.client.hset(meta_key, "m0", json.dumps(meta))
    store.client.delete(store.keys.limited(Q), *store.client.keys("{tq:limited}:lane*"))
    assert fetched(store) == ["m0"]
    assert store.limit_status(ONE_SLOT.name) is not None
