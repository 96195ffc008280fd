"""The Redis hot path's calls: scripts given only the keys they touch, run on a kept
connection of their own that survives dropped connections, flushed scripts, threads
and forks by handing over to redis-py's own path."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

import pytest
import redis

from tq_kombu.store.model import NewMessage
from tq_kombu.store.redis import RedisStore
from tq_kombu.store.redis.caller import pack
from tq_kombu.store.redis.keys import KEY_SUBSETS, QUEUE_KEYS, KeyNames
from tq_kombu.store.redis.scripts import script_source

QUEUE = "hot"


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    yield opened
    opened.close()


def fetch_and_ack(store: RedisStore, message_id: str) -> bool:
    store.enqueue(QUEUE, NewMessage(message_id, b"payload", 5))
    (delivery,) = store.fetch([QUEUE], 1, "me", 60, 5).deliveries
    return store.ack(delivery.lease)


# -- key subsets -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(KEY_SUBSETS))
def test_a_key_subset_names_parts_of_a_queue_in_the_order_its_include_reads(name: str) -> None:
    parts = KEY_SUBSETS[name]
    assert set(parts) <= set(QUEUE_KEYS) and len(set(parts)) == len(parts)
    keys = KeyNames("tq").subset(QUEUE, name)
    assert keys == [KeyNames("tq").queue(QUEUE)[part] for part in parts]
    users = [n for n in ("ack", "renew") if f'--@include "{name}"' in open_lua(n)]
    assert users, f"no command includes {name}"
    for user in users:
        built = script_source(user)
        fields = re.search(rf"local function {name}\(\)\n  return {{(.*)}}", built)
        assert fields is not None
        expected = ", ".join(f"{part} = KEYS[{i + 1}]" for i, part in enumerate(parts))
        assert fields.group(1) == expected


def open_lua(name: str) -> str:
    from importlib import resources

    return resources.files("tq_kombu.store.redis").joinpath("lua", f"{name}.lua").read_text()


def test_an_ack_touches_only_the_keys_of_its_subset(store: RedisStore, redis_url: str) -> None:
    # Given a delivered message, and a monitor of every key the ack's script writes
    client = redis.Redis.from_url(redis_url)
    store.enqueue(QUEUE, NewMessage("m1", b"payload", 5, task_id="t1"))
    (delivery,) = store.fetch([QUEUE], 1, "me", 60, 5).deliveries
    before = {key: client.dump(key) for key in store.keys.group(QUEUE)}
    # When it is acked
    assert store.ack(delivery.lease)
    # Then only keys of ack_keys changed
    ack_keys = set(store.keys.subset(QUEUE, "ack_keys"))
    changed = {key for key in before if client.dump(key) != before[key]}
    assert changed and changed <= ack_keys


# -- the kept connection ---------------------------------------------------------
def test_pack_writes_what_redis_py_writes_and_leaves_other_types_to_it() -> None:
    args = ["EVALSHA", "abc", 2, "{tq:q}:meta", b"\x00bytes", "", -7, "é"]
    packer = redis.Redis().connection_pool.get_connection().pack_command
    assert pack(args) == b"".join(packer(*args))
    assert pack(["EVALSHA", 1.5]) is None


def test_settles_run_on_one_kept_connection(store: RedisStore, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert fetch_and_ack(store, "warm")
    kept = store.caller._connection
    assert kept is not None
    for i in range(20):
        assert fetch_and_ack(store, f"m{i}")
    assert store.caller._connection is kept
    assert client.info("commandstats")["cmdstat_evalsha"]["calls"] >= 42


def test_a_connection_the_server_dropped_is_replaced_without_failing_a_call(
    store: RedisStore, redis_url: str
) -> None:
    # Given a store whose kept connection the server has closed
    assert fetch_and_ack(store, "before")
    client = redis.Redis.from_url(redis_url)
    killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    # When it settles again, Then the call goes through (redis-py's path reconnects),
    # and the next ones run on a new kept connection
    assert fetch_and_ack(store, "after")
    assert fetch_and_ack(store, "again")
    assert store.caller._connection is not None


def test_scripts_flushed_from_the_server_are_registered_again(
    store: RedisStore, redis_url: str
) -> None:
    assert fetch_and_ack(store, "before")
    redis.Redis.from_url(redis_url).script_flush()
    assert fetch_and_ack(store, "after")


def test_a_call_finding_the_kept_connection_busy_takes_the_pooled_path(
    store: RedisStore,
) -> None:
    assert fetch_and_ack(store, "warm")
    kept = store.caller._connection
    busy = threading.Event()
    done = threading.Event()

    def hold() -> None:  # another thread in the middle of a call
        with store.caller._lock:
            busy.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert busy.wait(10)
        assert fetch_and_ack(store, "while busy")
    finally:
        done.set()
        thread.join(10)
    assert store.caller._connection is kept
    assert fetch_and_ack(store, "after")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(
    store: RedisStore,
) -> None:
    # Given a parent whose kept connection is open
    assert fetch_and_ack(store, "parent before")
    kept = store.caller._connection
    # When a forked child settles through the same store object
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            ok = all(fetch_and_ack(store, f"child {i}") for i in range(20))
            code = 0 if ok and store.caller._connection is not kept else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    # Then the child succeeded on its own connection, and the parent's still works
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.caller._connection is kept
    assert all(fetch_and_ack(store, f"parent after {i}") for i in range(5))
