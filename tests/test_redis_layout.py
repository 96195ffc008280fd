"""The Redis store's layout: key names, the Lua loader, counts kept by the scripts, and
queues written by an earlier tq (no kept counts, ages or task index) upgraded lazily."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from importlib import resources

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tq_kombu.errors import StoreError
from tq_kombu.store.base import DeadLetter, DeadReason, Lease, NewMessage, State
from tq_kombu.store.redis import RedisStore, scripts
from tq_kombu.store.redis.keys import QUEUE_KEYS, SCORE_SPAN, KeyNames
from tq_kombu.store.redis.scripts import CONSTANTS, script_source

LONG_LEASE = 60.0
QUEUES = ("alpha", "beta")
LUA = resources.files("tq_kombu.store.redis").joinpath("lua")
COMMANDS = sorted(p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua"))
INCLUDES = sorted(p.name[:-4] for p in LUA.joinpath("includes").iterdir())


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    yield opened
    opened.close()


def message(message_id: str, priority: int = 5, task_id: str = "") -> NewMessage:
    return NewMessage(message_id, b"body", priority, task_name="t", task_id=task_id)


def kept_counts(store: RedisStore, queue: str) -> dict[int, int]:
    raw = store.client.hgetall(store.keys_of(queue)["counts"])
    return {int(k): int(v) for k, v in raw.items() if k != b"v"}


def counted_from_scores(store: RedisStore, queue: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, score in store.client.zrange(store.keys_of(queue)["ready"], 0, -1, withscores=True):
        priority = 255 - int(score) // SCORE_SPAN
        counts[priority] = counts.get(priority, 0) + 1
    return counts


# -- keys ----------------------------------------------------------------------
def test_queue_keys_share_one_hash_tag_and_global_keys_use_the_encoded_prefix() -> None:
    names = KeyNames("tq:staging")
    assert set(names.queue("emails")) == set(QUEUE_KEYS)
    assert all(key.startswith("{tq%3Astaging:emails}:") for key in names.group("emails"))
    assert names.expiring_queues == "tq%3Astaging:expiring-queues"
    assert names.workers == "tq%3Astaging:workers"
    assert names.bindings("celery") == "tq%3Astaging:bindings:celery"
    assert names.queue_of_meta_key("{tq%3Astaging:a:b}:meta") == "a:b"
    assert names.queue_of_meta_key("{tq%3Astaging:a}:ready") is None


# -- the Lua loader --------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_starts_with_a_header_naming_its_keys_arguments_and_reply(name: str) -> None:
    source = LUA.joinpath(f"{name}.lua").read_text()
    header = source.split("\n--@include", 1)[0]
    assert header.startswith(f"-- {name}: ")
    assert "KEYS" in header and "Returns" in header


@pytest.mark.parametrize("name", COMMANDS)
def test_a_built_command_holds_each_include_once_and_no_placeholder(name: str) -> None:
    built = script_source(name)
    assert "@include" not in built
    assert not re.search(r"@[A-Z_]+@", built)
    defined = re.findall(r"^local function (\w+)", built, flags=re.M)
    assert len(defined) == len(set(defined)), "an include was inlined twice"


def test_constants_shared_with_python_are_written_in_python_only() -> None:
    sources = "".join(
        LUA.joinpath(f"{name}.lua").read_text()
        for name in COMMANDS + [f"includes/{n}" for n in INCLUDES]
    )
    assert str(SCORE_SPAN) not in sources and "2^44" not in sources
    fetch = script_source("fetch")
    for name in ("SCORE_SPAN", "MAX_PRIORITY", "PROMOTE_LIMIT", "SKIP_SCAN_LIMIT"):
        assert sources.count(f"local {name} = @{name}@") == 1
        assert f"local {name} = {CONSTANTS[name]}\n" in fetch
    assert f"local QUEUE_KEY_COUNT = {len(QUEUE_KEYS)}" in fetch


def test_an_unknown_include_or_constant_or_a_cycle_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = {
        "broken.lua": '--@include "nowhere"',
        "includes/nowhere.lua": "return @NO_SUCH@",
        "cycle.lua": '--@include "a"',
        "includes/a.lua": '--@include "b"',
        "includes/b.lua": '--@include "a"',
    }

    def read(path: str) -> str:
        return sources[path]

    monkeypatch.setattr(scripts, "_read", read)
    with pytest.raises(StoreError, match="@NO_SUCH@"):
        script_source("broken")
    with pytest.raises(StoreError, match="cycle .*a -> b -> a"):
        script_source("cycle")


# -- counts kept by the scripts --------------------------------------------------
def test_ready_counts_follow_every_move_in_and_out_of_ready(store: RedisStore) -> None:
    for i, priority in enumerate([1, 5, 5, 10, 10, 10]):
        store.enqueue("q", message(f"m{i}", priority))
    first, second = store.fetch(["q"], 2, "c", LONG_LEASE, 5).deliveries  # both 10s
    assert store.requeue(first.lease)
    assert store.bury(second.lease, DeadLetter(DeadReason.FAILED, "boom"))
    assert store.set_priority("q", "m1", 200)
    assert store.cancel("q", "m0")
    assert store.replay("q", second.lease.message_id, priority=1)
    assert kept_counts(store, "q") == counted_from_scores(store, "q") == {200: 1, 5: 1, 10: 2, 1: 1}
    assert {p: n for p, (n, _) in store.ready_levels("q").items()} == kept_counts(store, "q")
    assert store.purge("q", State.READY) == 5
    assert kept_counts(store, "q") == {} and store.ready_levels("q") == {}


def test_ready_levels_read_no_message_metadata(store: RedisStore) -> None:
    # Given a ready message whose metadata record was destroyed
    before = time.time()
    store.enqueue("q", message("m", 7))
    store.client.hset(store.keys_of("q")["meta"], "m", b"{not json")
    # Then its level and first-seen time still come from the kept counts and ages
    [(count, oldest)] = store.ready_levels("q").values()
    assert count == 1 and oldest is not None and before - 1 <= oldest <= time.time() + 1


# -- queues written by an earlier tq --------------------------------------------------
def write_former_layout(client: redis.Redis, queue: str) -> float:
    """A queue as tq wrote it before kept counts: ready scores, metadata, payloads.
    Returns the first-seen time (seconds) of its oldest ready message."""
    tag = "{tq:" + queue + "}"
    created_ms = int(time.time() * 1000) - 60_000
    ready = [("a", 10, created_ms + 5), ("b", 10, created_ms), ("c", 3, created_ms + 9)]
    for seq, (message_id, priority, created) in enumerate(ready, start=1):
        meta = {"p": priority, "n": 0, "t": "t", "i": f"task-{message_id}", "c": created}
        client.zadd(f"{tag}:ready", {message_id: (255 - priority) * SCORE_SPAN + seq})
        client.hset(f"{tag}:meta", message_id, json.dumps(meta))
        client.hset(f"{tag}:bodies", message_id, b"body")
    dead = {"p": 5, "n": 1, "t": "t", "i": "task-d", "c": created_ms, "r": "failed", "d": 1}
    client.zadd(f"{tag}:dead", {"d": created_ms})
    client.hset(f"{tag}:meta", "d", json.dumps(dead))
    client.hset(f"{tag}:bodies", "d", b"body")
    client.set(f"{tag}:seq", 3)
    return created_ms / 1000


def test_a_queue_of_the_former_layout_gets_its_counts_and_task_index_rebuilt_on_first_read(
    store: RedisStore,
) -> None:
    # Given a queue written by an earlier tq, and a message published by this one since
    oldest = write_former_layout(store.client, "legacy")
    store.enqueue("legacy", message("e", 10, task_id="task-e"))
    # When it is inspected
    levels = store.ready_levels("legacy")
    # Then counts, oldest arrivals and the task index cover every message
    assert {p: n for p, (n, _) in levels.items()} == {10: 3, 3: 1}
    assert levels[10][1] == pytest.approx(oldest, abs=0.002)
    for task_id, state in [
        ("task-a", State.READY),
        ("task-d", State.DEAD),
        ("task-e", State.READY),
    ]:
        found = store.find_task("legacy", task_id)
        assert found is not None and found.state == state
    # And stay right as messages move on
    deliveries = store.fetch(["legacy"], 2, "c", LONG_LEASE, 5).deliveries
    assert [d.lease.message_id for d in deliveries] == ["a", "b"]
    for delivery in deliveries:
        assert store.ack(delivery.lease)
    assert {p: n for p, (n, _) in store.ready_levels("legacy").items()} == {10: 1, 3: 1}
    assert store.find_task("legacy", "task-a") is None


def test_a_queue_created_by_this_version_is_never_rebuilt(store: RedisStore) -> None:
    store.enqueue("fresh", message("m", task_id="task-m"))
    assert (
        store.client.hget(store.keys_of("fresh")["counts"], "v")
        == b"%d" % (CONSTANTS["LAYOUT_VERSION"])
    )


def test_reading_a_queue_that_holds_nothing_leaves_no_key_behind(store: RedisStore) -> None:
    assert store.ready_levels("nowhere") == {}
    assert store.find_task("nowhere", "task-1") is None
    assert store.client.keys("*") == []


# -- kept structures agree with a recount under random operations ----------------------
def recount(store: RedisStore, queue: str) -> tuple[dict[int, tuple[int, int]], dict[str, str]]:
    """Levels ({priority: (count, oldest first-seen ms)}) and the task index as a scan of
    the ready set and every metadata record would find them."""
    keys = store.keys_of(queue)
    metas = {k.decode(): json.loads(v) for k, v in store.client.hgetall(keys["meta"]).items()}
    levels: dict[int, tuple[int, int]] = {}
    for member, score in store.client.zrange(keys["ready"], 0, -1, withscores=True):
        priority = 255 - int(score) // SCORE_SPAN
        count, oldest = levels.get(priority, (0, metas[member.decode()]["c"]))
        levels[priority] = (count + 1, min(oldest, metas[member.decode()]["c"]))
    tasks = {meta["i"]: message_id for message_id, meta in metas.items() if meta.get("i")}
    return levels, tasks


class KeptStructuresAgreeWithARecount(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.store = RedisStore.from_url(self.url)
        self.store.client.flushdb()
        self.ids = itertools.count(1)
        self.held: list[Lease] = []

    def teardown(self) -> None:
        self.store.close()

    @rule(priority=st.sampled_from([0, 5, 10, 255]), when=st.sampled_from(["now", "later"]))
    def enqueue(self, priority: int, when: str) -> None:
        number = next(self.ids)
        eta = time.time() + 3600 if when == "later" else None
        # every third message shares its task id with the one before (a retry)
        task_id = f"task-{number - (number % 3 == 0)}"
        self.store.enqueue(
            QUEUES[number % 2],
            NewMessage(f"m{number}", b"x", priority, eta=eta, task_name="t", task_id=task_id),
        )

    @rule(queue=st.sampled_from(QUEUES), count=st.integers(1, 3))
    def fetch(self, queue: str, count: int) -> None:
        self.held += [d.lease for d in self.store.fetch([queue], count, "c", 60, 3).deliveries]

    @precondition(lambda self: self.held)
    @rule(data=st.data(), action=st.sampled_from(["ack", "requeue", "release", "bury", "expire"]))
    def settle(self, data: st.DataObject, action: str) -> None:
        lease = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        if action == "bury":
            self.store.bury(lease, DeadLetter(DeadReason.FAILED, "boom"))
        elif action == "expire":
            self.store.renew([lease], 0.001)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the server's clock passes its end
                self.store.fetch([lease.queue], 0, "c", 60, 3)
                info = self.store.info(lease.queue, lease.message_id)
                if info is None or info.state != State.INFLIGHT:
                    break
        else:
            getattr(self.store, action)(lease)

    @rule(data=st.data(), state=st.sampled_from(list(State)), queue=st.sampled_from(QUEUES))
    def administer(self, data: st.DataObject, state: State, queue: str) -> None:
        listed = self.store.list_messages(queue, state, 0, 50)
        if not listed:
            return
        message_id = data.draw(st.sampled_from([info.message_id for info in listed]))
        action = data.draw(st.sampled_from(["cancel", "set_priority", "replay", "release"]))
        if action == "cancel":
            self.store.cancel(queue, message_id)
        elif action == "set_priority":
            self.store.set_priority(queue, message_id, data.draw(st.sampled_from([1, 200])))
        elif action == "replay":
            self.store.replay(queue, message_id, to_queue=data.draw(st.sampled_from(QUEUES)))
        else:
            self.store.release_waiting(queue, message_id)

    @rule(queue=st.sampled_from(QUEUES), state=st.sampled_from([State.READY, State.DEAD]))
    def purge(self, queue: str, state: State) -> None:
        self.store.purge(queue, state)

    @invariant()
    def kept_counts_ages_and_tasks_match_a_recount(self) -> None:
        for queue in QUEUES:
            levels, tasks = recount(self.store, queue)
            kept = self.store.ready_levels(queue)
            assert {p: (n, round(o * 1000)) for p, (n, o) in kept.items() if o} == levels
            assert set(kept) == set(levels)
            index = self.store.client.hgetall(self.store.keys_of(queue)["tasks"])
            # every message is found by its task id; the index names no message it lacks
            assert {k.decode() for k in index} == set(tasks)
            for task_id, message_id in index.items():
                meta = json.loads(
                    self.store.client.hget(self.store.keys_of(queue)["meta"], message_id)
                )
                assert meta["i"] == task_id.decode()


def test_kept_counts_ages_and_task_index_agree_with_a_recount(redis_url: str) -> None:
    machine = type("Machine", (KeptStructuresAgreeWithARecount,), {"url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


# -- limits from the contract reach the scripts ------------------------------------------
@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts built from here on (stores register them on first use) promote 3
    messages and look 2 deep per fetch."""
    monkeypatch.setitem(CONSTANTS, "PROMOTE_LIMIT", 3)
    monkeypatch.setitem(CONSTANTS, "SKIP_SCAN_LIMIT", 2)


def test_one_fetch_promotes_at_most_the_promote_limit_per_queue(
    small_limits: None, store: RedisStore
) -> None:
    # Given five delayed messages that have come due
    due = time.time() + 0.2
    for i in range(5):
        store.enqueue("q", NewMessage(f"m{i}", b"x", 5, eta=due))
    deadline = time.monotonic() + 5
    while time.time() < due + 0.01 and time.monotonic() < deadline:
        store.wait(["q"], 0.05)  # nothing wakes it: time has to pass
    # When one fetch runs, then another
    store.fetch(["q"], 0, "c", LONG_LEASE, 5)
    first = store.counts("q")
    store.fetch(["q"], 0, "c", LONG_LEASE, 5)
    # Then the first promoted three and the second the rest
    assert (first.ready, first.delayed) == (3, 2)
    assert (store.counts("q").ready, store.counts("q").delayed) == (5, 0)


def test_a_fetch_skipping_task_names_looks_no_deeper_than_the_skip_scan_limit(
    small_limits: None, store: RedisStore
) -> None:
    for i in range(2):
        store.enqueue("q", NewMessage(f"skip{i}", b"x", 5, task_name="skipped"))
    store.enqueue("q", NewMessage("wanted", b"x", 5, task_name="wanted"))
    assert store.fetch(["q"], 1, "c", LONG_LEASE, 5, ["skipped"]).deliveries == []
    assert store.cancel("q", "skip0")
    [delivery] = store.fetch(["q"], 1, "c", LONG_LEASE, 5, ["skipped"]).deliveries
    assert delivery.lease.message_id == "wanted"
