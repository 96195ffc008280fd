"""Celery's control plane on tq, end to end with real `celery worker` processes on both
stores: remote control and events are consumed without acknowledgement (taken, never
held), their queues vanish once unused, and redeliveries say so to the task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tq_kombu.store import open_store
from tq_kombu.store.base import Binding, QueueCounts

from . import test_e2e_worker
from .test_e2e_worker import E2E, POOLS, SOLO
from .workers import ROOT, run_celery, wait_for

#: The same fixture as test_e2e_worker's: a store, journal, client and workers per test.
e2e = test_e2e_worker.e2e

pytestmark = pytest.mark.e2e

EMPTY = QueueCounts()
HOSTNAME = os.uname().nodename


def bindings(e2e: E2E, exchange: str) -> list[Binding]:
    store = open_store(e2e.store_url)
    try:
        return store.bindings(exchange)
    finally:
        store.close()


def test_two_hundred_inspect_pings_leave_nothing_held_in_control_or_event_queues(
    e2e: E2E,
) -> None:
    # Given a worker with mingle, gossip and heartbeats (its own no-ack consumers)
    e2e.worker(*SOLO, name="pinged", fast=False)
    name = f"pinged@{HOSTNAME}"
    inspect = e2e.client.control.inspect(destination=[name], timeout=5)
    # When it is pinged 200 times
    replies = [inspect.ping() for _ in range(200)]
    # Then each ping was answered
    assert all(reply == {name: {"ok": "pong"}} for reply in replies), replies[-1]
    # And no control or event queue holds anything in flight or left to deliver
    queues = [b.queue for b in bindings(e2e, "celery.pidbox") + bindings(e2e, "celeryev")]
    assert f"{name}.celery.pidbox" in queues
    for queue in queues:
        counts = e2e.counts(queue)
        assert counts.inflight == 0 and counts.dead == 0, (queue, counts)
    assert e2e.counts(f"{name}.celery.pidbox") == EMPTY


def test_control_commands_are_not_applied_again_to_a_restarted_worker(e2e: E2E) -> None:
    # Given worker w told to change a rate limit and to consume another queue
    first = e2e.worker(*SOLO, name="w")
    name = f"w@{HOSTNAME}"
    for command in (
        ("control", "rate_limit", "tests.e2e_app.note", "10/m"),
        ("control", "add_consumer", "extra"),
    ):
        done = run_celery("tests.e2e_app", e2e.env, *command, "-d", name, "--timeout", "5")
        assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: "Started consuming from extra" in first.output(), 10, "add_consumer")
    assert "New rate limit for tasks of type tests.e2e_app.note" in first.output()
    # When w stops cleanly and starts again under the same name
    first.stop()
    log_before = first.output()
    again = e2e.worker(*SOLO, name="w")
    done = run_celery("tests.e2e_app", e2e.env, "inspect", "ping", "-d", name, "--timeout", "5")
    assert "pong" in done.stdout, done.stdout + done.stderr
    # Then neither command ran again in the new worker
    restarted = again.output()[len(log_before) :]
    assert "New rate limit" not in restarted
    assert "Started consuming from extra" not in restarted
    assert e2e.counts(f"{name}.celery.pidbox") == EMPTY


def test_the_event_queue_of_a_killed_event_consumer_vanishes_with_its_messages(
    e2e: E2E, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given event queues that expire 2 s after their last consumer, a worker sending
    # task events, and `celery events --dump` consuming them
    monkeypatch.setenv("TQ_EVENT_QUEUE_EXPIRES", "2")
    e2e.worker(*SOLO, "-E", name="evented")
    with (tmp_path / "events.log").open("wb") as log:
        dumper = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.e2e_app", "events", "--dump"],
            cwd=ROOT,
            env=e2e.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: bindings(e2e, "celeryev") != [], 20, "the event receiver's queue")
        (queue,) = {b.queue for b in bindings(e2e, "celeryev")}
        e2e.send("note", "seen")
        wait_for(lambda: "succeeded" in (tmp_path / "events.log").read_text(), 20, "events")
        # When the consumer is killed with -9 and events keep coming
        os.killpg(dumper.pid, signal.SIGKILL)
        dumper.wait(timeout=10)
        e2e.send("note", "unseen")
        wait_for(lambda: e2e.journal.lines() == ["seen", "unseen"], 10, "the second task")
        # Then its queue goes, binding and messages with it, and collects nothing more
        wait_for(lambda: bindings(e2e, "celeryev") == [], 20, "the orphaned binding to go")
        wait_for(lambda: e2e.counts(queue) == EMPTY, 20, "the orphaned queue to go")
        e2e.send("note", "later")
        wait_for(lambda: "later" in e2e.journal.lines(), 10, "the third task")
        assert e2e.counts(queue) == EMPTY
    finally:
        if dumper.poll() is None:
            os.killpg(dumper.pid, signal.SIGKILL)
            dumper.wait(timeout=10)


def test_the_control_and_gossip_queues_of_a_worker_killed_with_9_vanish(
    e2e: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given control and event queues that expire 2 s after their last consumer, and two
    # workers, each consuming its own pidbox queue and (Redis: Celery runs gossip only on
    # the "redis" driver type) its own gossip queue
    monkeypatch.setenv("TQ_CONTROL_QUEUE_EXPIRES", "2")
    monkeypatch.setenv("TQ_EVENT_QUEUE_EXPIRES", "2")
    gossip = e2e.store_url.startswith("redis")
    e2e.worker(*SOLO, "--without-mingle", name="survivor", fast=False)
    wait_for(lambda: len(bindings(e2e, "celeryev")) == gossip, 10, "the survivor's gossip")
    survivor_queues = {b.queue for b in bindings(e2e, "celeryev")}
    victim = e2e.worker(*SOLO, "--without-mingle", name="victim", fast=False)
    victim_queues = {f"victim@{HOSTNAME}.celery.pidbox"}
    wait_for(lambda: len(bindings(e2e, "celeryev")) == 2 * gossip, 10, "the victim's gossip")
    victim_queues |= {b.queue for b in bindings(e2e, "celeryev")} - survivor_queues
    # When the victim is killed with -9 and broadcasts keep coming
    victim.kill()
    ping = e2e.client.control.inspect(timeout=1).ping
    assert set(ping() or {}) == {f"survivor@{HOSTNAME}"}
    # Then its queues go, with their bindings and everything sent to them
    survivor_pidbox = [f"survivor@{HOSTNAME}.celery.pidbox"]
    wait_for(
        lambda: [b.queue for b in bindings(e2e, "celery.pidbox")] == survivor_pidbox,
        20,
        "the victim's control binding to go",
    )
    wait_for(lambda: {b.queue for b in bindings(e2e, "celeryev")} == survivor_queues, 20, "gossip")
    for queue in victim_queues:
        wait_for(lambda q=queue: e2e.counts(q) == EMPTY, 20, f"{queue} to be deleted")
    assert set(ping() or {}) == {f"survivor@{HOSTNAME}"}
    for queue in victim_queues:
        assert e2e.counts(queue) == EMPTY


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_task_rejected_with_requeue_succeeds_when_redelivered(e2e: E2E, pool: str) -> None:
    # Given a task that raises Reject(requeue=True) unless its delivery says redelivered
    e2e.worker(*POOLS[pool])
    e2e.send("reject_first_delivery", "r")
    # Then it runs twice: rejected, then redelivered and done; nothing is left
    wait_for(lambda: len(e2e.journal.lines()) >= 2, 20, "the redelivery")
    assert e2e.journal.lines() == ["rejected r", "redelivered r"]
    wait_for(lambda: e2e.counts() == EMPTY, 5, "the store to be empty")
