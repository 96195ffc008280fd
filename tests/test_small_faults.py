"""The small faults of issue #7 point 10: key ids, key prefixes, the commands' field names,
`dlq show` and replays into declared queues."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import pytest
from celery import Celery

import tq_kombu  # noqa: F401
from tq_kombu.admin import Admin
from tq_kombu.appconf import declared_queues
from tq_kombu.errors import ConfigurationError
from tq_kombu.keyring import KEY_ID, generate_key_line, parse_env
from tq_kombu.store.base import Binding, DeadLetter, DeadReason, NewMessage
from tq_kombu.store.redis import RedisStore, prefix_in_keys

from .workers import run_celery

KEY = base64.b64encode(b"k" * 32).decode()


# -- key ids ---------------------------------------------------------------------------


def test_generated_key_ids_differ_even_within_one_second() -> None:
    ids = [generate_key_line().split(":", 1)[0] for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(KEY_ID.match(key_id) for key_id in ids)


def test_a_key_id_given_twice_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="'k1' twice"):
        parse_env(f"k1:{KEY},k2:{KEY},k1:{KEY}")
    keys, active = parse_env(f"k2:{KEY},k1:{KEY}")
    assert (sorted(keys), active) == (["k1", "k2"], "k2")


# -- key prefixes ------------------------------------------------------------------------


def test_the_default_prefix_keeps_its_key_names(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    assert store.keys_of("emails")["ready"] == "{tq:emails}:ready"
    assert prefix_in_keys("app_1.v-2~") == "app_1.v-2~"
    assert prefix_in_keys("tq:staging") == "tq%3Astaging"
    store.close()


def test_two_prefixes_never_read_each_others_queues(redis_url: str) -> None:
    # Given prefix "tq" with queue "staging:emails" and prefix "tq:staging" with "emails"
    plain = RedisStore.from_url(redis_url, key_prefix="tq")
    staging = RedisStore.from_url(redis_url, key_prefix="tq:staging")
    plain.enqueue("staging:emails", NewMessage("from-plain", b"p", 5))
    staging.enqueue("emails", NewMessage("from-staging", b"s", 5))
    # Then each sees its own message only
    assert plain.counts("staging:emails").ready == 1
    assert staging.counts("emails").ready == 1
    [mine] = staging.fetch(["emails"], 10, "c", 30, 5).deliveries
    assert mine.lease.message_id == "from-staging"
    assert plain.queues() == ["staging:emails"] and staging.queues() == ["emails"]
    # And their bindings and worker heartbeats do not mix either
    odd = RedisStore.from_url(redis_url, key_prefix="tq:bindings")
    plain.bind(Binding("workers", "rk", "", "q"))
    odd.heartbeat("w1", 30, {})
    assert [b.queue for b in plain.bindings("workers")] == ["q"]
    assert [w.worker for w in odd.workers()] == ["w1"] and plain.workers() == []
    for store in (plain, staging, odd):
        store.close()


# -- replays into declared queues --------------------------------------------------------


def archive() -> None:
    return None


def test_every_queue_the_app_names_is_declared() -> None:
    app = Celery("declared", set_as_current=False)
    app.conf.task_default_queue = "default"
    app.conf.task_routes = [
        {"a.report": {"queue": "reports"}, "a.*": "wildcards"},
        {"a.bill": {"queue": "billing"}},
    ]
    app.task(name="a.archive", queue="archive")(archive)
    assert set(declared_queues(app)) >= {"default", "reports", "wildcards", "billing", "archive"}
    app.close()


def test_dlq_retry_accepts_an_empty_queue_the_app_routes_to(store_url: str) -> None:
    # Given the e2e app (queue "emails" named only in task_routes, empty) and a dead letter
    env = {**os.environ, "TQ_BROKER_URL": f"tq+{store_url}", "PYTHONWARNINGS": "ignore"}
    with Admin(f"tq+{store_url}", ["celery"]) as admin:
        admin.store.enqueue("celery", NewMessage("m1", b"x", 5))
        [delivery] = admin.store.fetch(["celery"], 1, "c", 30, 5).deliveries
        assert admin.store.bury(delivery.lease, DeadLetter(DeadReason.REJECTED))
        # When it is replayed into "emails"
        done = run_celery("tests.e2e_app", env, "tq", "dlq", "retry", "m1", "--to-queue", "emails")
        # Then it is there
        assert done.returncode == 0, done.stderr
        assert admin.store.counts("emails").ready == 1


# -- the commands' output ----------------------------------------------------------------


def test_ls_and_show_name_the_fields_of_a_message_the_same_way(store_url: str) -> None:
    env = {**os.environ, "TQ_BROKER_URL": f"tq+{store_url}", "PYTHONWARNINGS": "ignore"}
    publisher = Celery("publisher", broker=env["TQ_BROKER_URL"], set_as_current=False)
    try:
        past = datetime(2001, 9, 9, tzinfo=UTC)
        result = publisher.send_task("tests.e2e_app.note", ("hello",), eta=past)
        listed = run_celery("tests.e2e_app", env, "tq", "ls", "--json")
        shown = run_celery("tests.e2e_app", env, "tq", "show", result.id, "--json")
        assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
        [row] = json.loads(listed.stdout)
        detail = json.loads(shown.stdout)
        assert set(row) <= set(detail)
        assert {k: detail[k] for k in row} == row
        assert row["task_id"] == result.id and row["message_id"]
        # And dlq show prints each field once (the eta header is the eta above)
        with Admin(env["TQ_BROKER_URL"], ["celery"]) as admin:
            [delivery] = admin.store.fetch(["celery"], 1, "c", 30, 5).deliveries
            assert admin.store.bury(delivery.lease, DeadLetter(DeadReason.REJECTED))
        dead = run_celery("tests.e2e_app", env, "tq", "dlq", "show", result.id)
        assert dead.returncode == 0, dead.stderr
        labels = [line.split()[0] for line in dead.stdout.splitlines() if line.strip()]
        assert labels.count("eta") == 1, dead.stdout
        assert len(labels) == len(set(labels)), dead.stdout
    finally:
        publisher.close()
