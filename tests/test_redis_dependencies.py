"""Dependencies on the Redis store: key names built in Lua, kept counts and edges exact
through every transition, one script call per completion, fetch's deadline sweep."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.test_redis_layout import recount
from tq_kombu.errors import StoreError
from tq_kombu.store.model import (
    DeadLetter,
    DeadReason,
    DependencyLink,
    NewMessage,
    ParentState,
    State,
)
from tq_kombu.store.redis import RedisStore, scripts
from tq_kombu.store.redis.keys import DEPENDENCY_KEYS, QUEUE_KEYS, KeyNames
from tq_kombu.store.redis.scripts import CONSTANTS

LONG_LEASE = 60.0
QUEUES = ("alpha", "beta")


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    yield opened
    opened.close()


def task(
    message_id: str,
    task_id: str,
    parents: tuple[str, ...] = (),
    *,
    on_parent_failure: str = "dead",
    dependency_deadline: float | None = None,
    eta: float | None = None,
    ttl_seconds: float | None = None,
) -> NewMessage:
    return NewMessage(
        message_id,
        b"x",
        5,
        eta=eta,
        task_name="t",
        task_id=task_id,
        depends_on=parents,
        on_parent_failure=on_parent_failure,
        dependency_deadline=dependency_deadline,
        ttl_seconds=ttl_seconds,
    )


def state_of(store: RedisStore, queue: str, message_id: str) -> State | None:
    info = store.info(queue, message_id)
    return None if info is None else info.state


def edges_agree(store: RedisStore) -> None:
    """Every pending edge names a message of the graph that lists that parent (or one
    deleted since), and each message of the graph (waiting, or dead: it keeps its
    edges) has as many pending edges as its kept count ``w``; a waiting one has some."""
    client, found = store.client, Counter[tuple[str, str]]()
    for key in client.scan_iter(match=store.keys.dependency("children", "*")):
        parent = key.decode().split(":children:", 1)[1]
        for member in client.smembers(key):
            queue, message_id = member.decode().split("\0")
            raw = client.hget(store.keys_of(queue)["meta"], message_id)
            if raw is None:
                continue  # trimmed or purged dead: filtered wherever edges are read
            meta = json.loads(raw)
            assert parent in meta["dp"] and not meta.get("dt"), (parent, message_id)
            found[(queue, message_id)] += 1
    for queue in QUEUES:
        keys = store.keys_of(queue)
        for raw_id, raw in client.hgetall(keys["meta"]).items():
            meta = json.loads(raw)
            if "dp" not in meta or meta.get("dt"):
                continue
            assert meta["w"] == found[(queue, raw_id.decode())], (queue, raw_id, meta)
            if client.zscore(keys["waiting"], raw_id) is not None:
                assert meta["w"] > 0


def kept_structures_agree(store: RedisStore) -> None:
    for queue in QUEUES:
        levels, tasks = recount(store, queue)
        kept = store.ready_levels(queue)
        assert {p: (n, round(o * 1000)) for p, (n, o) in kept.items() if o} == levels
        index = store.client.hgetall(store.keys_of(queue)["tasks"])
        assert {k.decode() for k in index} == set(tasks)


# -- key names built inside Lua ---------------------------------------------------------
@pytest.mark.parametrize(
    ("key_prefix", "queue"),
    [("tq", "emails"), ("tq:staging", "a:b}c"), ("t q{x}", "überqueue"), ("tq", "deps")],
)
def test_key_names_built_in_lua_equal_those_of_keys_py(
    store: RedisStore, key_prefix: str, queue: str
) -> None:
    # Given the key names Lua builds from a queue's keys and a prefix
    source = "\n".join(
        [
            '--@include "queue_keys"',
            '--@include "key_names"',
            "local Q = queue_keys(1)",
            "local P = prefix_of(Q)",
            "local built = keys_of_queue(P, queue_of(Q))",
            "local out = {P, queue_of(Q)}",
            *[f"out[#out + 1] = built.{part}" for part in QUEUE_KEYS],
            *[f"out[#out + 1] = dep_key(P, '{kind}', ARGV[1])" for kind in DEPENDENCY_KEYS],
            "local q, id = split_edge(edge_of(queue_of(Q), ARGV[1]))",
            "out[#out + 1] = q",
            "out[#out + 1] = id",
            "return out",
        ]
    )
    lua = scripts._substitute("\n".join(scripts._expand(source, set(), [])), "test")
    names = KeyNames(key_prefix)
    reply = store.client.eval(lua, len(QUEUE_KEYS), *names.group(queue), "task:1")
    # Then they are the names keys.py gives
    assert [r.decode() for r in reply] == [
        names.prefix,
        queue,
        *names.group(queue),
        *[names.dependency(kind, "task:1") for kind in DEPENDENCY_KEYS],
        queue,
        "task:1",
    ]


# -- one script call, and nothing more for a plain message -------------------------------
def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(v["calls"]) for name, v in stats.items()}


def test_complete_is_one_evalsha_whatever_the_number_of_children(store: RedisStore) -> None:
    # Given 200 children of one parent across two queues (the script already loaded)
    store.complete("warm-up", True)
    for i in range(200):
        store.enqueue(QUEUES[i % 2], task(f"c{i}", f"child-{i}", ("parent",)))
    store.client.config_resetstat()
    # When the parent succeeds
    completion = store.complete("parent", True)
    # Then one EVALSHA released all of them
    calls = command_calls(store.client)
    assert calls.get("evalsha") == 1 and "eval" not in calls
    assert completion.released == 200
    assert store.counts("alpha").ready == store.counts("beta").ready == 100


def test_a_graph_of_a_hundred_nodes_across_queues_is_stored_by_one_evalsha(
    store: RedisStore,
) -> None:
    store.enqueue_many([("alpha", task("warm", "warm"))])
    store.client.config_resetstat()
    graph = [("alpha", task("n0", "node-0"))] + [
        (QUEUES[i % 2], task(f"n{i}", f"node-{i}", (f"node-{i // 2}",))) for i in range(1, 100)
    ]
    store.enqueue_many(graph)
    calls = command_calls(store.client)
    assert calls.get("evalsha") == 1 and "eval" not in calls
    assert store.counts("alpha").ready == 2  # warm and the root
    assert store.counts("alpha").waiting + store.counts("beta").waiting == 99
    edges_agree(store)


def test_a_plain_message_costs_no_dependency_command_on_enqueue_fetch_and_ack(
    store: RedisStore,
) -> None:
    store.enqueue("alpha", task("warm", "warm"))
    store.ack(store.fetch(["alpha"], 1, "c", LONG_LEASE, 5).deliveries[0].lease)
    store.client.config_resetstat()
    store.enqueue("alpha", task("m", "task-m"))
    store.ack(store.fetch(["alpha"], 1, "c", LONG_LEASE, 5).deliveries[0].lease)
    calls = command_calls(store.client)
    # (fetch's deadline check on an empty waiting set is one ZRANGE, not counted here)
    for command in ("get", "set", "sadd", "smembers", "srem", "sunionstore", "pexpire"):
        assert command not in calls, command
    assert calls.get("exists") == 1  # the layout mark of enqueue, as before dependencies


def test_a_task_that_dies_with_nothing_waiting_costs_a_record_and_one_exists(
    store: RedisStore,
) -> None:
    store.enqueue("alpha", task("m", "task-m"))
    [delivery] = store.fetch(["alpha"], 1, "c", LONG_LEASE, 5).deliveries
    store.client.config_resetstat()
    assert store.bury(delivery.lease, DeadLetter(DeadReason.FAILED, "boom"))
    calls = command_calls(store.client)
    assert calls.get("exists") == calls.get("set") == 1
    assert not {"get", "smembers", "sadd", "srem"} & set(calls)
    # and a child published later is dead at once
    store.enqueue("beta", task("c", "child", ("task-m",)))
    assert state_of(store, "beta", "c") == State.DEAD


# -- deadlines ------------------------------------------------------------------------------
def test_fetch_reports_the_next_deadline_and_times_out_a_child_with_its_dependents(
    store: RedisStore,
) -> None:
    # Given a child with a deadline, and a grandchild in another queue waiting on it
    deadline = time.time() + 0.3
    store.enqueue("alpha", task("c", "child", ("never",), dependency_deadline=deadline))
    store.enqueue("beta", task("g", "grandchild", ("child",)))
    # Then an idle fetch says when to look again
    next_due = store.fetch(["alpha"], 1, "c", LONG_LEASE, 5).next_due
    assert next_due == pytest.approx(deadline, abs=0.01)
    # When fetches run past the deadline
    until = time.monotonic() + 5
    while state_of(store, "alpha", "c") == State.WAITING and time.monotonic() < until:
        store.wait(["alpha"], 0.05)
        store.fetch(["alpha"], 1, "c", LONG_LEASE, 5)
    # Then the child is dead as dependency_timeout, the grandchild followed it
    child, grandchild = store.info("alpha", "c"), store.info("beta", "g")
    assert child is not None and child.dead_reason == "dependency_timeout"
    assert grandchild is not None and grandchild.state == State.DEAD
    assert (grandchild.dead_reason, grandchild.dead_detail) == (
        "dependency_failed",
        "parent child failed",
    )
    # and stays in its pending parent's graph as a dead dependent
    never = store.dependency_info("never")
    assert never is not None
    assert never.children == [DependencyLink("child", ParentState.FAILED, "alpha", "c")]
    edges_agree(store)


def test_a_waiting_message_scored_by_sequence_is_moved_after_every_deadline_not_killed(
    store: RedisStore,
) -> None:
    # Given a message held for an operator, scored as an earlier tq did (by sequence)
    store.enqueue("alpha", NewMessage("held", b"x", 5, waiting=True))
    store.client.zadd(store.keys_of("alpha")["waiting"], {"held": 7})
    # When a fetch runs
    result = store.fetch(["alpha"], 1, "c", LONG_LEASE, 5)
    # Then it still waits, with no deadline reported
    assert state_of(store, "alpha", "held") == State.WAITING and result.next_due is None
    score = store.client.zscore(store.keys_of("alpha")["waiting"], "held")
    assert score == CONSTANTS["NO_DEADLINE_SCORE"] + 7


# -- deaths inside fetch cascade -------------------------------------------------------------
@pytest.mark.parametrize("death", ["max_deliveries", "expired", "corrupt"])
def test_a_parent_set_aside_by_fetch_fails_its_children_in_other_queues(
    store: RedisStore, death: str
) -> None:
    # Given a parent in alpha and its child in beta
    ttl = 0.05 if death == "expired" else None
    store.enqueue("alpha", task("p", "parent", ttl_seconds=ttl))
    store.enqueue("beta", task("c", "child", ("parent",)))
    if death == "max_deliveries":
        lease = store.fetch(["alpha"], 1, "c", LONG_LEASE, 1).deliveries[0].lease
        store.requeue(lease)
    elif death == "corrupt":
        store.client.hset(store.keys_of("alpha")["meta"], "p", b'{"i": "parent"}')
    # When fetches run until the parent is set aside
    until = time.monotonic() + 5
    while state_of(store, "alpha", "p") != State.DEAD and time.monotonic() < until:
        if death == "expired":
            store.wait(["alpha"], 0.02)  # nothing wakes it: time has to pass
        store.fetch(["alpha"], 0 if death == "expired" else 1, "c", LONG_LEASE, 1)
    # Then the child is dead naming it, and the parent is recorded failed
    child = store.info("beta", "c")
    assert child is not None and child.dead_detail == "parent parent failed"
    info = store.dependency_info("parent")
    assert info is not None and info.state == ParentState.FAILED
    edges_agree(store)
    kept_structures_agree(store)


# -- replay across queues ------------------------------------------------------------
def test_replaying_a_buried_parent_revives_its_descendants_in_other_queues(
    store: RedisStore,
) -> None:
    # Given a chain parent (alpha) -> child (beta) -> grandchild (alpha), the parent buried
    store.enqueue("alpha", task("p", "parent"))
    store.enqueue("beta", task("c", "child", ("parent",)))
    store.enqueue("alpha", task("g", "grandchild", ("child",)))
    [delivery] = store.fetch(["alpha"], 1, "c", LONG_LEASE, 5).deliveries
    assert store.bury(delivery.lease, DeadLetter(DeadReason.FAILED, "boom"))
    assert (state_of(store, "beta", "c"), state_of(store, "alpha", "g")) == (State.DEAD,) * 2
    # When the parent is replayed
    assert store.replay("alpha", "p")
    # Then its descendants wait again, with their edges, and the chain then runs through
    assert (state_of(store, "beta", "c"), state_of(store, "alpha", "g")) == (State.WAITING,) * 2
    edges_agree(store)
    kept_structures_agree(store)
    assert store.complete("parent", True).released == 1
    assert store.complete("child", True).released == 1
    assert store.counts("alpha").ready == 2 and store.counts("beta").ready == 1
    edges_agree(store)
    kept_structures_agree(store)


# -- records expire ----------------------------------------------------------------------
def test_completion_records_and_settled_edges_expire_after_the_record_ttl(
    store: RedisStore,
) -> None:
    store.set_dependency_record_ttl(30)
    store.enqueue("alpha", task("c", "child", ("parent",)))
    store.complete("parent", True)
    for kind in ("done", "settled"):
        ttl = store.client.pttl(store.keys.dependency(kind, "parent"))
        assert 29_000 < ttl <= 30_000, kind


# -- enqueue_many is all or nothing -------------------------------------------------------
def test_an_enqueue_many_refused_by_the_script_stores_nothing(store: RedisStore) -> None:
    # Given a batch whose last message names a queue outside KEYS
    keys = store.keys.group("alpha")
    good = [1, "m1", b"x", 5, "", "auto", "t", "task-1", "", "", "dead", "", 1, "p"]
    bad = [2, "m2", b"x", 5, "", "auto", "t", "task-2", "", "", "dead", "", 0]
    # When the script runs
    with pytest.raises(StoreError, match="names no queue"):
        store._run("enqueue_many", keys, [60_000, 2, *good, *bad])
    # Then nothing was written
    assert store.client.keys("*") == []


# -- kept counts and edges stay exact under random operations ----------------------------
class DependenciesKeepEverythingExact(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.store = RedisStore.from_url(self.url)
        self.store.client.flushdb()
        self.numbers = itertools.count(1)
        self.tasks: list[str] = ["outside-1", "outside-2"]

    def teardown(self) -> None:
        self.store.close()

    @rule(
        data=st.data(),
        queue=st.sampled_from(QUEUES),
        policy=st.sampled_from(["dead", "run"]),
        eta=st.booleans(),
        overdue=st.booleans(),
    )
    def enqueue_child(
        self, data: st.DataObject, queue: str, policy: str, eta: bool, overdue: bool
    ) -> None:
        number = next(self.numbers)
        parents = data.draw(st.sets(st.sampled_from(self.tasks), min_size=0, max_size=3))
        message = task(
            f"m{number}",
            f"task-{number}",
            tuple(sorted(parents)),
            on_parent_failure=policy,
            eta=time.time() + 3600 if eta else None,
            # a deadline already past: the next fetch of its queue times it out
            dependency_deadline=time.time() - 1 if overdue else None,
        )
        self.store.enqueue(queue, message)
        self.tasks.append(f"task-{number}")

    @rule(data=st.data(), succeeded=st.booleans())
    def complete(self, data: st.DataObject, succeeded: bool) -> None:
        self.store.complete(data.draw(st.sampled_from(self.tasks)), succeeded)

    @rule(data=st.data(), queue=st.sampled_from(QUEUES))
    def administer(self, data: st.DataObject, queue: str) -> None:
        state = data.draw(st.sampled_from([State.READY, State.WAITING, State.DEAD]))
        listed = self.store.list_messages(queue, state, 0, 50)
        if not listed:
            return
        message_id = data.draw(st.sampled_from([info.message_id for info in listed]))
        action = data.draw(st.sampled_from(["cancel", "bury", "replay", "release"]))
        if action == "cancel":
            self.store.cancel(queue, message_id)
        elif action == "bury":
            self.store.bury_payload(
                queue,
                NewMessage(message_id, b"x", 5),
                DeadLetter(DeadReason.FAILED, "by hand"),
            )
        elif action == "replay":
            self.store.replay(queue, message_id)
        else:
            self.store.release_waiting(queue, message_id)

    @rule(queue=st.sampled_from(QUEUES), state=st.sampled_from([State.WAITING, State.DEAD]))
    def purge(self, queue: str, state: State) -> None:
        self.store.purge(queue, state)

    @rule(queue=st.sampled_from(QUEUES))
    def fetch_and_fail(self, queue: str) -> None:
        for delivery in self.store.fetch([queue], 1, "c", LONG_LEASE, 5).deliveries:
            self.store.bury(delivery.lease, DeadLetter(DeadReason.FAILED, "boom"))

    @invariant()
    def counts_tasks_and_edges_agree_with_a_recount(self) -> None:
        kept_structures_agree(self.store)
        edges_agree(self.store)


def test_kept_counts_and_edges_agree_with_a_recount_under_dependency_operations(
    redis_url: str,
) -> None:
    machine = type("Machine", (DependenciesKeepEverythingExact,), {"url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
