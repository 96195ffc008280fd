"""`celery -A demo_project tq ...` against both stores, in subprocesses, as a user runs it.

Messages are published with the demo app from this process; the commands run in
subprocesses; where a task has to run (or fail), real `celery worker` processes do
it. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tq_kombu import Priority
from tq_kombu.admin import Admin
from tq_kombu.store.base import DeadLetter, DeadReason, NewMessage, QueueCounts, State

from .workers import ROOT, Journal, Worker, wait_for

pytestmark = pytest.mark.e2e

QUEUES = "default,emails,notifications,heavy"


class Demo:
    """The demo app on one store: publish from here, administer through the CLI."""

    def __init__(self, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.journal = Journal(tmp_path / "journal.txt")
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_DEMO_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
        }
        for name in ("TQ_BROKER_URL", "TQ_DEMO_JOURNAL"):
            monkeypatch.setenv(name, self.env[name])
        from demo_project import celery as demo

        demo.app.close()
        demo.app.amqp._producer_pool = None
        demo.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        self.tasks = demo
        self.admin = Admin.from_app(demo.app)
        self.store = self.admin.store
        self.workers: list[Worker] = []

    def tq(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "demo_project", "tq", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def tq_json(self, *args: str) -> Any:
        done = self.tq(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def worker(self, *args: str) -> Worker:
        worker = Worker("demo_project", self.env, self.tmp_path / f"w{len(self.workers)}.log")
        self.workers.append(worker)
        return worker.start(
            "-Q",
            QUEUES,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"w{len(self.workers)}@%h",
            *args,
        )

    def bury(self, queue: str, count: int, reason: str = DeadReason.REJECTED) -> list[str]:
        """Lease ``count`` ready messages of ``queue`` and set them aside as dead."""
        buried = []
        while len(buried) < count:
            deliveries = self.store.fetch([queue], count - len(buried), "test", 60, 5).deliveries
            assert deliveries, f"only {len(buried)} of {count} messages to bury in {queue}"
            for delivery in deliveries:
                assert self.store.bury(delivery.lease, DeadLetter(reason))
                buried.append(delivery.lease.message_id)
        return buried

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
            print(f"--- {worker.log}\n{worker.output()[-3000:]}")
        self.admin.close()


@pytest.fixture
def demo(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    current = Demo(store_url, tmp_path, monkeypatch)
    yield current
    current.close()


# -- queues and messages ---------------------------------------------------------


def test_stats_counts_each_state_and_priority_level_of_every_queue(demo: Demo) -> None:
    # Given ready messages of two levels, a delayed one, and one in a queue the app
    # does not declare
    demo.tasks.crunch.apply_async(("a",), priority=Priority.HIGH)
    demo.tasks.crunch.apply_async(("b",), priority=Priority.HIGH)
    demo.tasks.crunch.apply_async(("c",), priority=Priority.LOW)
    demo.tasks.crunch.apply_async(("d",), countdown=600)
    demo.tasks.noop.apply_async(queue="reports")
    # When stats are asked for
    rows = {row["queue"]: row for row in demo.tq_json("stats")}
    # Then each queue shows its states, ready messages per level and the oldest age
    heavy = rows["heavy"]
    assert (heavy["ready"], heavy["delayed"], heavy["inflight"], heavy["dead"]) == (3, 1, 0, 0)
    assert heavy["ready_by_priority"] == {"10": 2, "1": 1}
    assert 0 <= heavy["oldest_ready_age_seconds"] < 60
    assert rows["emails"]["ready"] == 0 and rows["emails"]["oldest_ready_age_seconds"] is None
    assert rows["reports"]["ready"] == 1
    table = demo.tq("stats")
    assert table.returncode == 0, table.stderr
    assert "10:2 1:1" in table.stdout and "reports" in table.stdout
    assert [row["queue"] for row in demo.tq_json("stats", "-Q", "heavy")] == ["heavy"]


def test_ls_filters_by_state_task_and_priority_with_paging(demo: Demo) -> None:
    for i in range(5):
        demo.tasks.crunch.apply_async((f"c{i}",), priority=Priority.HIGH if i % 2 else Priority.LOW)
    demo.tasks.crunch.apply_async(("later",), countdown=600)
    demo.tasks.notify.delay("ann", "hello")
    ready = demo.tq_json("ls", "heavy", "--state", "ready")
    assert [m["priority"] for m in ready] == [10, 10, 1, 1, 1]
    assert len(demo.tq_json("ls", "heavy", "--priority", "1")) == 3
    assert len(demo.tq_json("ls", "heavy", "--state", "delayed")) == 1
    page = demo.tq_json("ls", "heavy", "--offset", "2", "--limit", "2")
    assert [m["priority"] for m in page] == [1, 1]
    assert demo.tq_json("ls", "heavy", "--task", "demo_project.celery.notify") == []
    # Without a queue, every queue is listed
    everywhere = demo.tq_json("ls", "--task", "demo_project.celery.notify")
    assert [(m["queue"], m["state"]) for m in everywhere] == [("notifications", "ready")]
    table = demo.tq("ls", "heavy", "--state", "delayed")
    assert table.returncode == 0 and "demo_project.celery.crunch" in table.stdout


def test_show_decrypts_by_task_id_and_raw_shows_only_the_envelope(demo: Demo) -> None:
    result = demo.tasks.send_email.delay("ann@example.com", "secret subject")
    shown = demo.tq_json("show", result.id)
    assert (shown["task_id"], shown["queue"], shown["state"]) == (result.id, "emails", "ready")
    assert shown["message"]["body"][0] == ["ann@example.com", "secret subject"]
    raw = demo.tq_json("show", result.id, "--raw")
    assert "message" not in raw
    assert raw["envelope"]["key_id"] == "test-key" and raw["envelope"]["encrypted"] is True
    assert "secret subject" not in json.dumps(raw)
    readable = demo.tq("show", shown["message_id"])
    assert readable.returncode == 0, readable.stderr
    assert '["ann@example.com", "secret subject"]' in readable.stdout
    # Without the key, the metadata is shown and the payload stays sealed
    stranger = {**demo.env, "TQ_ENCRYPTION_KEYS": "other:" + "A" * 43 + "="}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "demo_project", "tq", "show", result.id, "--json"],
        cwd=ROOT,
        env=stranger,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    sealed = json.loads(done.stdout)
    assert sealed["task_id"] == result.id and sealed["message"].startswith("(not decrypted")


def test_a_cancelled_task_never_runs_even_when_no_worker_was_up(demo: Demo) -> None:
    # Given tasks queued while no worker runs; one ready and one delayed are cancelled
    doomed = demo.tasks.notify.delay("ann", "doomed")
    doomed_later = demo.tasks.notify.apply_async(("cy", "doomed later"), countdown=1)
    demo.tasks.notify.delay("bob", "kept")
    for task_id in (doomed.id, doomed_later.id):
        done = demo.tq("cancel", task_id)
        assert done.returncode == 0 and "cancelled" in done.stdout, done.stderr
    # When a worker starts (after the delayed one came due), Then only the kept one runs
    demo.worker("--pool", "solo")
    demo.tasks.notify.apply_async(("bob", "after the countdown"), countdown=1.5)
    wait_for(lambda: "notify bob after the countdown" in demo.journal.lines(), 20, "the last task")
    assert demo.journal.lines() == ["notify bob kept", "notify bob after the countdown"]
    # And cancelling again finds nothing
    assert demo.tq("cancel", doomed.id).returncode == 1


def test_reprioritize_moves_a_message_ahead_and_refuses_a_bad_priority(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("first",), priority=Priority.HIGH)
    late = demo.tasks.crunch.apply_async(("second",), priority=Priority.LOW)
    done = demo.tq("reprioritize", late.id, "200")
    assert done.returncode == 0 and "1 -> 200" in done.stdout, done.stderr
    ready = demo.tq_json("ls", "heavy", "--state", "ready")
    assert [(m["task_id"], m["priority"]) for m in ready][0] == (late.id, 200)
    assert demo.tq("reprioritize", late.id, "300").returncode == 2
    assert demo.tq("reprioritize", "no-such-id", "3").returncode == 1


def test_purge_removes_one_state_only(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("now",))
    demo.tasks.crunch.apply_async(("later",), countdown=600)
    demo.tasks.crunch.apply_async(("dies",))
    demo.bury("heavy", 1)
    done = demo.tq("purge", "heavy", "--state", "delayed", "-f")
    assert done.returncode == 0 and "purged 1" in done.stdout, done.stderr
    assert demo.store.counts("heavy") == QueueCounts(ready=1, dead=1)
    assert "purged 1" in demo.tq("purge", "heavy", "--state", "dead", "-f").stdout
    assert "purged 1" in demo.tq("purge", "heavy", "-f").stdout
    assert demo.tq_json("stats", "-Q", "heavy")[0]["ready"] == 0


def test_bad_input_is_one_line_and_an_exit_code_and_changes_nothing(demo: Demo) -> None:
    # Given one ready message and one dead one
    demo.tasks.crunch.apply_async(("keep",))
    demo.tasks.notify.delay("ann", "dead")
    [dead_id] = demo.bury("notifications", 1)
    before = (demo.store.counts("heavy"), demo.store.counts("notifications"))
    cases = [
        (("ls", "no-such-queue"), 2),
        (("ls", "heavy", "--state", "bogus"), 2),
        (("ls", "heavy", "--priority", "300"), 2),
        (("ls", "heavy", "--limit", "0"), 2),
        (("ls", "heavy", "--no-such-option"), 2),
        (("stats", "-Q", "no-such-queue"), 2),
        (("show", "no-such-id"), 1),
        (("cancel", "no-such-id"), 1),
        (("purge", "no-such-queue", "-f"), 2),
        (("purge", "heavy", "--state", "inflight", "-f"), 2),
        (("dlq", "ls", "--reason", "no-such-reason"), 2),
        (("dlq", "show", "no-such-id"), 1),
        (("dlq", "retry"), 2),
        (("dlq", "retry", dead_id, "--all"), 2),
        (("dlq", "retry", dead_id, "no-such-id"), 1),
        (("dlq", "retry", dead_id, "--to-queue", "no-such-queue"), 2),
        (("dlq", "retry", dead_id, "--priority", "256"), 2),
        (("dlq", "retry", "--all", "--reason", "no-such-reason"), 2),
        (("dlq", "purge", "no-such-queue", "-f"), 2),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: demo.tq(*case[0]), cases))
    for (args, code), done in zip(cases, results, strict=True):
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), (args, done.stderr)
        assert done.stderr.strip().count("\n") == 0, (args, done.stderr)
    # A message that is not dead is not found by dlq show, and not retried
    ready_id = demo.tq_json("ls", "heavy")[0]["message_id"]
    assert demo.tq("dlq", "show", ready_id).returncode == 1
    assert demo.tq("dlq", "retry", ready_id).returncode == 1
    assert (demo.store.counts("heavy"), demo.store.counts("notifications")) == before


# -- dead letters ------------------------------------------------------------------


def test_tasks_that_fail_for_good_are_dead_letters_with_their_traceback_and_replay(
    demo: Demo,
) -> None:
    # Given tasks that fail: acked early, acked late, rejected late, out of retries,
    # and one that expired before a worker took it
    failing = {
        "fail": demo.tasks.fail.delay("order-1"),
        "fail_late": demo.tasks.fail_late.delay("order-2"),
        "fail_rejected": demo.tasks.fail_rejected.delay("order-3"),
        "flaky": demo.tasks.flaky.delay("order-4"),
    }
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    expired = demo.tasks.notify.apply_async(("ann", "too late"), expires=past)
    queued = {m["task_id"]: m for m in demo.tq_json("ls", "--limit", "100")}
    # When a (prefork) worker runs them
    demo.worker("--pool", "prefork", "-c", "1")
    wait_for(lambda: demo.store.counts("default").dead == 4, 30, "four dead letters in default")
    wait_for(lambda: demo.store.counts("notifications").dead == 1, 10, "the expired task")
    wait_for(lambda: demo.store.counts("default").inflight == 0, 10, "the last settlement")
    # Then each is one dead letter with its reason, attempts and times
    dead = {m["task_id"]: m for m in demo.tq_json("dlq", "ls")}
    assert len(dead) == 5
    for name in ("fail", "fail_late", "fail_rejected"):
        entry = dead[failing[name].id]
        original = queued[failing[name].id]
        # the same message (same id), first seen when it was published, delivered once
        assert (entry["message_id"], entry["dead_reason"], entry["dead_detail"]) == (
            original["message_id"],
            "failed",
            "ValueError",
        )
        assert (entry["attempts"], entry["delivery_count"], entry["queue"]) == (1, 1, "default")
        assert entry["created_at"] == pytest.approx(original["created_at"], abs=0.01)
        assert entry["dead_at"] >= entry["created_at"]
        assert entry["hostname"].startswith("w1@")
    retried_out = dead[failing["flaky"].id]
    assert (retried_out["dead_reason"], retried_out["attempts"]) == ("max_retries_exceeded", 2)
    assert dead[expired.id]["dead_reason"] == "expired"
    assert dead[expired.id]["queue"] == "notifications"
    # And dlq show decrypts the failure record and the task's arguments
    shown = demo.tq_json("dlq", "show", failing["fail_late"].id)
    assert shown["failure"]["exc_type"] == "ValueError"
    assert "cannot process order-2 (late ack)" in shown["failure"]["traceback"]
    assert shown["message"]["body"][0] == ["order-2"]
    readable = demo.tq("dlq", "show", failing["fail"].id)
    assert readable.returncode == 0, readable.stderr
    assert "failed: ValueError" in readable.stdout and "Traceback" in readable.stdout
    assert "ValueError: cannot process order-1" in readable.stdout
    table = demo.tq("dlq", "ls", "default", "--reason", "max_retries_exceeded")
    assert table.returncode == 0 and failing["flaky"].id in table.stdout
    # When the failed ones are replayed, each runs once more (and fails into the store again)
    assert demo.tq_json("dlq", "retry", "--all", "--reason", "failed")["replayed"] == 3
    for name, label in [
        ("fail", "order-1"),
        ("fail_late", "order-2"),
        ("fail_rejected", "order-3"),
    ]:
        line = f"{name} {label}"
        wait_for(lambda line=line: demo.journal.count(line) == 2, 20, f"{line} replayed")
    wait_for(lambda: demo.store.counts("default").dead == 4, 20, "the replays dead again")
    wait_for(lambda: demo.store.counts("default").inflight == 0, 10, "the last settlement")
    assert demo.journal.count("flaky order-4 1") == 1 and demo.journal.count("flaky order-4 2") == 1
    done = demo.tq("dlq", "purge", "default", "-f")
    assert done.returncode == 0 and "purged 4" in done.stdout
    assert demo.store.counts("default").dead == 0
    # (the worker's ack or reject of a message already set aside is no cause for alarm)
    assert "tq: could not" not in demo.workers[0].output()


def test_dlq_retry_by_id_or_filter_into_another_queue_at_another_priority(demo: Demo) -> None:
    # Given three dead messages: two rejected, one over max_deliveries
    for i in range(3):
        demo.tasks.notify.apply_async(("u", f"n{i}"), priority=Priority.LOW)
    first, second, third = demo.bury("notifications", 3)
    demo.store.replay("notifications", third)
    demo.bury("notifications", 1, DeadReason.MAX_DELIVERIES)
    # When the rejected ones are replayed into emails at priority 200
    replayed = demo.tq_json(
        "dlq", "retry", "--all", "--reason", "rejected", "--to-queue", "emails", "--priority", "200"
    )
    # Then they are ready there, at that priority, delivery count reset
    assert replayed["replayed"] == 2
    emails = demo.store.list_messages("emails", State.READY)
    assert {(m.message_id, m.priority, m.delivery_count) for m in emails} == {
        (first, 200, 0),
        (second, 200, 0),
    }
    assert [m.message_id for m in demo.store.list_messages("notifications", State.DEAD)] == [third]
    # And one replayed by id goes back to its own queue at its own priority
    task_id = demo.store.info("notifications", third).task_id  # type: ignore[union-attr]
    assert demo.tq_json("dlq", "retry", task_id)["replayed"] == 1
    [back] = demo.store.list_messages("notifications", State.READY)
    assert (back.message_id, back.priority) == (third, Priority.LOW)


def test_replaying_a_thousand_dead_messages_while_workers_consume_runs_each_once(
    demo: Demo,
) -> None:
    # Given 1,000 task messages set aside as dead, and two workers consuming
    for i in range(1000):
        demo.tasks.notify.apply_async(("u", f"m{i}"))
    demo.bury("notifications", 1000)
    assert demo.store.counts("notifications").dead == 1000
    demo.worker("--pool", "prefork", "-c", "2")
    demo.worker("--pool", "solo")
    # When all are replayed at once
    done = demo.tq_json("dlq", "retry", "--all", "-Q", "notifications")
    assert done["replayed"] == 1000
    # Then each runs exactly once and nothing is left dead or queued
    wait_for(lambda: len(demo.journal.lines()) >= 1000, 90, "1,000 replayed tasks")
    wait_for(lambda: demo.store.counts("notifications").inflight == 0, 10, "the last acks")
    lines = demo.journal.lines()
    assert len(lines) == 1000 and len(set(lines)) == 1000
    assert demo.store.counts("notifications") == QueueCounts()


def test_retention_bounds_the_dead_letters_by_count_and_by_age(store_url: str) -> None:
    # Given a queue keeping at most three dead messages: five die, the oldest two go
    with Admin(f"tq+{store_url}", ["q"], dead_letter_max_per_queue=3) as admin:
        for i in range(5):
            admin.store.bury_payload("q", NewMessage(f"m{i}", b"x", 5), DeadLetter("failed"))
        assert [m.message_id for m in admin.dead_letters("q")] == ["m2", "m3", "m4"]
    # Given a short TTL: once the dead letters are older than it, they go when the
    # next one dies, and a listing applies the policy too
    with Admin(f"tq+{store_url}", ["q"], dead_letter_ttl_seconds=0.3) as aged:
        wait_for(
            lambda: aged.store.list_messages("q", State.DEAD)[0].dead_at + 0.3 < time.time(),  # type: ignore[operator]
            5,
            "the dead letters to age past the TTL",
        )
        aged.store.bury_payload("q", NewMessage("fresh", b"x", 5), DeadLetter("failed"))
        assert [m.message_id for m in aged.store.list_messages("q", State.DEAD)] == ["fresh"]
        wait_for(lambda: aged.dead_letters("q") == [], 5, "the listing to drop 'fresh'")
    with pytest.raises(Exception, match="dead_letter_ttl_seconds"):
        Admin(f"tq+{store_url}", ["q"], dead_letter_ttl_seconds=-1)


def test_keygen_prints_a_key_line_the_key_ring_accepts(demo: Demo) -> None:
    from tq_kombu.keyring import parse_env

    done = demo.tq("keygen", "k-new")
    assert done.returncode == 0, done.stderr
    keys, active = parse_env(done.stdout.strip())
    assert active == "k-new" and len(keys["k-new"]) == 32
    assert demo.tq("keygen", "bad id").returncode == 2
