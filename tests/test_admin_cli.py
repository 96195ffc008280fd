"""`celery -A demo_project tq ...` against both stores, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tq_kombu import Priority
from tq_kombu.admin import Admin
from tq_kombu.store.base import State

from .workers import ROOT, Journal, Worker, wait_for


class Demo:
    """The demo app on one store: publish from here, administer through the CLI."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.journal = Journal(tmp_path / "journal.txt")
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_DEMO_JOURNAL": str(self.journal.path),
            "PYTHONWARNINGS": "ignore",
        }
        os.environ.update({k: self.env[k] for k in ("TQ_BROKER_URL", "TQ_DEMO_JOURNAL")})
        from demo_project import celery as demo

        demo.app.close()
        demo.app.amqp._producer_pool = None
        demo.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        self.tasks = demo
        self.admin = Admin.from_app(demo.app)
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

    def tq_json(self, *args: str) -> object:
        done = self.tq(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def worker(self, *args: str) -> Worker:
        worker = Worker("demo_project", self.env, self.tmp_path / f"w{len(self.workers)}.log")
        self.workers.append(worker)
        return worker.start(
            "-Q",
            "default,emails,notifications,heavy",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"w{len(self.workers)}@%h",
            *args,
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
            print(f"--- {worker.log}\n{worker.output()[-3000:]}")
        self.admin.close()


@pytest.fixture
def demo(store_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    current = Demo(store_url, tmp_path)
    yield current
    current.close()


def test_stats_counts_each_state_and_priority_level(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("a",), priority=Priority.HIGH)
    demo.tasks.crunch.apply_async(("b",), priority=Priority.HIGH)
    demo.tasks.crunch.apply_async(("c",), priority=Priority.LOW)
    demo.tasks.crunch.apply_async(("d",), countdown=600)
    rows = {row["queue"]: row for row in demo.tq_json("stats")}  # type: ignore[union-attr]
    heavy = rows["heavy"]
    assert (heavy["ready"], heavy["delayed"], heavy["dead"]) == (3, 1, 0)
    assert heavy["ready_by_priority"] == {"10": 2, "1": 1}
    assert heavy["oldest_ready_age_seconds"] is not None
    table = demo.tq("stats")
    assert table.returncode == 0 and "heavy" in table.stdout and "10:2 1:1" in table.stdout


def test_ls_filters_by_state_task_and_priority_with_paging(demo: Demo) -> None:
    for i in range(5):
        demo.tasks.crunch.apply_async((f"c{i}",), priority=Priority.HIGH if i % 2 else Priority.LOW)
    demo.tasks.crunch.apply_async(("later",), countdown=600)
    ready = demo.tq_json("ls", "heavy", "--state", "ready")
    assert [m["priority"] for m in ready] == [10, 10, 1, 1, 1]  # type: ignore[union-attr]
    assert len(demo.tq_json("ls", "heavy", "--priority", "1")) == 3  # type: ignore[arg-type]
    assert len(demo.tq_json("ls", "heavy", "--state", "delayed")) == 1  # type: ignore[arg-type]
    page = demo.tq_json("ls", "heavy", "--offset", "2", "--limit", "2")
    assert [m["priority"] for m in page] == [1, 1]  # type: ignore[union-attr]
    assert demo.tq_json("ls", "heavy", "--task", "demo_project.celery.notify") == []


def test_show_decrypts_and_raw_shows_only_the_envelope(demo: Demo) -> None:
    result = demo.tasks.send_email.delay("ann@example.com", "secret subject")
    shown = demo.tq_json("show", result.id)
    assert shown["task_id"] == result.id  # type: ignore[index]
    assert shown["message"]["body"][0] == ["ann@example.com", "secret subject"]  # type: ignore[index]
    raw = demo.tq_json("show", result.id, "--raw")
    assert "message" not in raw and raw["envelope"]["key_id"] == "test-key"  # type: ignore[operator,index]


def test_cancel_persists_and_the_task_never_runs(demo: Demo) -> None:
    # Given two tasks queued while no worker runs; one is cancelled by task id
    doomed = demo.tasks.notify.delay("ann", "doomed")
    demo.tasks.notify.delay("bob", "kept")
    done = demo.tq("cancel", doomed.id)
    assert done.returncode == 0, done.stderr
    # When a worker starts, Then only the other runs
    demo.worker("--pool", "solo")
    wait_for(lambda: "notify bob kept" in demo.journal.lines(), 20, "the kept task")
    assert "notify ann doomed" not in demo.journal.lines()
    assert demo.tq("cancel", doomed.id).returncode == 1


def test_reprioritize_moves_a_message_ahead(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("first",), priority=Priority.HIGH)
    late = demo.tasks.crunch.apply_async(("second",), priority=Priority.LOW)
    assert demo.tq("reprioritize", late.id, "200").returncode == 0
    ready = demo.tq_json("ls", "heavy", "--state", "ready")
    assert [m["task_id"] for m in ready][0] == late.id  # type: ignore[index]
    assert demo.tq("reprioritize", late.id, "300").returncode == 2


def test_purge_removes_one_state_only(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("now",))
    demo.tasks.crunch.apply_async(("later",), countdown=600)
    done = demo.tq("purge", "heavy", "--state", "delayed", "-f")
    assert done.returncode == 0 and "purged 1" in done.stdout
    counts = demo.admin.store.counts("heavy")
    assert (counts.ready, counts.delayed) == (1, 0)


def test_bad_input_is_one_line_and_an_exit_code_and_changes_nothing(demo: Demo) -> None:
    demo.tasks.crunch.apply_async(("keep",))
    for args, code in [
        (("ls", "no-such-queue"), 2),
        (("show", "no-such-id"), 1),
        (("ls", "heavy", "--state", "bogus"), 2),
        (("cancel", "no-such-id"), 1),
        (("purge", "no-such-queue", "-f"), 2),
        (("dlq", "retry"), 2),
        (("dlq", "show", "no-such-id"), 1),
    ]:
        done = demo.tq(*args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert done.stderr.strip().count("\n") == 0 or code == 2, done.stderr
    assert demo.admin.store.counts("heavy").ready == 1


@pytest.mark.parametrize("task", ["fail", "fail_late"])
def test_a_failed_task_lands_in_the_dead_letters_with_its_traceback_and_replays(
    demo: Demo, task: str
) -> None:
    # Given a worker and a task that raises (acked early, or late)
    demo.worker("--pool", "prefork", "-c", "1")
    failed = getattr(demo.tasks, task).delay("order-7")
    wait_for(lambda: demo.admin.dead_letters("default"), 20, "the dead letter")
    # Then the dead-letter store shows why, with the traceback decrypted
    [row] = demo.tq_json("dlq", "ls")  # type: ignore[misc]
    assert (row["task_id"], row["reason"], row["queue"]) == (failed.id, "failed", "default")
    shown = demo.tq_json("dlq", "show", failed.id)
    assert shown["failure"]["exc_type"] == "ValueError"  # type: ignore[index]
    assert "cannot process order-7" in shown["failure"]["traceback"]  # type: ignore[index]
    assert shown["hostname"].startswith("w1@")  # type: ignore[index]
    # When it is replayed, it runs again (and fails again, into the store again)
    assert demo.tq_json("dlq", "retry", failed.id) == {
        "replayed": 1,
        "seconds": pytest.approx(0, abs=60),
    }
    wait_for(lambda: demo.journal.count(f"{task} order-7") == 2, 20, "the replayed run")
    wait_for(lambda: len(demo.admin.dead_letters("default")) == 1, 10, "the second dead letter")
    done = demo.tq("dlq", "purge", "default", "-f")
    assert done.returncode == 0 and "purged 1" in done.stdout


def test_dlq_retry_all_by_filter_into_another_queue(demo: Demo) -> None:
    store = demo.admin.store
    for i in range(3):
        demo.tasks.notify.apply_async(("u", f"n{i}"))
    [first, second, third] = [
        m.message_id for m in store.list_messages("notifications", State.READY)
    ]
    leased = store.fetch(["notifications"], 3, "test", 30, 5).deliveries
    from tq_kombu.store.base import DeadLetter

    for delivery in leased:
        reason = "rejected" if delivery.lease.message_id != third else "max_deliveries"
        store.bury(delivery.lease, DeadLetter(reason))
    replayed = demo.tq_json("dlq", "retry", "--all", "--reason", "rejected", "--to-queue", "emails")
    assert replayed["replayed"] == 2  # type: ignore[index]
    assert {m.message_id for m in store.list_messages("emails", State.READY)} == {first, second}
    assert [m.message_id for m in store.list_messages("notifications", State.DEAD)] == [third]


def test_replaying_a_thousand_dead_messages_while_workers_consume_runs_each_once(
    demo: Demo,
) -> None:
    # Given 1,000 task messages set aside as dead (rejected), and two workers running
    from tq_kombu.store.base import DeadLetter

    store = demo.admin.store
    for i in range(1000):
        demo.tasks.notify.apply_async(("u", f"m{i}"))
    while leased := store.fetch(["notifications"], 200, "setup", 60, 5).deliveries:
        for delivery in leased:
            store.bury(delivery.lease, DeadLetter("rejected"))
    assert store.counts("notifications").dead == 1000
    demo.worker("--pool", "prefork", "-c", "2")
    demo.worker("--pool", "solo")
    # When all are replayed at once
    done = demo.tq_json("dlq", "retry", "--all", "-Q", "notifications")
    assert done["replayed"] == 1000  # type: ignore[index]
    # Then each runs exactly once and nothing is left dead or queued
    wait_for(lambda: len(demo.journal.lines()) >= 1000, 90, "1,000 replayed tasks")
    wait_for(lambda: store.counts("notifications").inflight == 0, 10, "the last acks")
    lines = demo.journal.lines()
    assert len(lines) == 1000 and len(set(lines)) == 1000
    assert store.counts("notifications").dead == 0


def test_retention_settings_bound_the_dead_letters_by_count_and_age(store_url: str) -> None:
    from tq_kombu.store.base import DeadLetter, NewMessage

    admin = Admin(f"tq+{store_url}", ["q"], dead_letter_max_per_queue=3)
    for i in range(5):
        admin.store.bury_payload("q", NewMessage(f"m{i}", b"x", 5), DeadLetter("failed"))
    assert [m.message_id for m in admin.dead_letters("q")] == ["m2", "m3", "m4"]
    aged = Admin(f"tq+{store_url}", ["q"], dead_letter_ttl_seconds=0.3)
    import time

    time.sleep(0.4)  # the dead letters must grow older than the TTL
    aged.store.bury_payload("q", NewMessage("fresh", b"x", 5), DeadLetter("failed"))
    assert [m.message_id for m in aged.dead_letters("q")] == ["fresh"]
    with pytest.raises(Exception, match="dead_letter_ttl_seconds"):
        Admin(f"tq+{store_url}", ["q"], dead_letter_ttl_seconds=-1)


def test_keygen_prints_a_key_line_the_key_ring_accepts(demo: Demo) -> None:
    from tq_kombu.keyring import parse_env

    done = demo.tq("keygen", "k-new")
    assert done.returncode == 0, done.stderr
    keys, active = parse_env(done.stdout.strip())
    assert active == "k-new" and len(keys["k-new"]) == 32
    assert demo.tq("keygen", "bad id").returncode == 2
