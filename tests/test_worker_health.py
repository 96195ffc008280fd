"""Worker health end to end: real ``celery worker`` processes beat into the store,
``tq workers`` lists them, a kill -9'd one is lost within 3 beats, and ``tq show`` and
``tq ls --state inflight`` name the worker holding a message."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tq_celery_ext.worker.heartbeat import MISSED_BEATS, Heartbeat
from tq_kombu.admin import Admin

from .conftest import free_port
from .workers import Journal, Worker, run_celery, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.health_app"
BEAT = 0.5
FAST = ("--without-mingle", "--without-gossip", "--without-heartbeat")


class Health:
    """One test's broker, journal and workers; workers are stopped at the end."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.journal = Journal(tmp_path / "journal.txt")
        self.env = {
            **os.environ,
            "TQ_BROKER_URL": f"tq+{store_url}",
            "TQ_JOURNAL": str(self.journal.path),
            "TQ_HEARTBEAT_SECONDS": str(BEAT),
            "PYTHONWARNINGS": "ignore",
        }
        self.workers: list[Worker] = []

    def worker(self, name: str, *args: str) -> Worker:
        worker = Worker(APP, self.env, self.tmp_path / f"{name}.log")
        self.workers.append(worker)
        return worker.start("-n", f"{name}@%h", *FAST, *args)

    def tq(self, *args: str) -> str:
        done = run_celery(APP, self.env, "tq", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def tq_json(self, *args: str) -> Any:
        return json.loads(self.tq(*args, "--json"))

    def by_host(self, cli: bool = False) -> dict[str, list[dict[str, Any]]]:
        """The worker rows of ``tq workers --json`` (with ``cli``) or of the Admin call
        behind it (in this process: quicker to poll), by worker name."""
        if cli:
            found = self.tq_json("workers")
        else:
            with Admin(self.env["TQ_BROKER_URL"]) as admin:
                found = admin.workers()
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in found:
            rows.setdefault(row["hostname"].split("@")[0], []).append(row)
        return rows

    def publish(self, queue: str, label: str, seconds: float = 60) -> str:
        """A task that runs ``seconds`` on a worker of ``queue``; its task id."""
        return str(self.app().hold.apply_async((label, seconds), queue=queue).id)

    def app(self) -> Any:
        """The test app module, publishing to this test's broker."""
        os.environ.update({k: self.env[k] for k in ("TQ_BROKER_URL", "TQ_JOURNAL")})
        from tests import health_app

        if health_app.app.conf.broker_url != self.env["TQ_BROKER_URL"]:
            health_app.app.close()
            health_app.app.amqp._producer_pool = None
            health_app.app.conf.broker_url = self.env["TQ_BROKER_URL"]
        return health_app


@pytest.fixture
def health(store_url: str, tmp_path: Path) -> Iterator[Health]:
    current = Health(store_url, tmp_path)
    yield current
    for worker in current.workers:
        worker.stop()


def test_tq_workers_lists_live_workers_names_their_tasks_holders_and_marks_a_killed_one_lost(
    health: Health,
) -> None:
    # Given a prefork worker (two children) and a solo worker on its own queue
    health.worker("pre", "-P", "prefork", "-c", "2")
    solo = health.worker("solo", "-P", "solo", "-Q", "solo")
    wait_for(
        lambda: {h: len(rows) for h, rows in health.by_host().items()} == {"pre": 3, "solo": 1},
        10,
        "a beat from each process of both workers",
    )
    rows = health.by_host(cli=True)
    [main, *children] = rows["pre"]  # main process first
    [solo_row] = rows["solo"]
    # Then both are live, with what each process says of itself
    assert {r["state"] for r in [*rows["pre"], solo_row]} == {"live"}
    assert [r["role"] for r in rows["pre"]] == ["main", "child", "child"]
    assert [r["pool"] for r in [*rows["pre"], solo_row]] == ["prefork"] * 3 + ["solo"]
    assert [c["parent_pid"] for c in children] == [main["pid"]] * 2
    assert main["queues"] == ["celery"] and solo_row["queues"] == ["solo"]
    assert solo_row["pid"] == solo.process.pid  # type: ignore[union-attr]
    for row in [*rows["pre"], solo_row]:
        assert row["rss_bytes"] > 10_000_000
        assert (row["tasks_done"], row["tasks_failed"], row["recycles"]) == (0, 0, 0)
        assert row["current"] == [] and row["last_seen_age_seconds"] < 3 * BEAT
    table = health.tq("workers").splitlines()
    assert table[0].split() == [
        "worker", "pid", "role", "state", "pool", "queues", "rss", "done", "failed",
        "recycles", "running", "last", "seen",
    ]  # fmt: skip
    assert sorted(line.split()[:4] for line in table[1:]) == sorted(
        [
            [main["hostname"], str(main["pid"]), "main", "live"],
            *([c["hostname"], str(c["pid"]), "child", "live"] for c in children),
            [solo_row["hostname"], str(solo_row["pid"]), "main", "live"],
        ]
    )

    # When the solo worker runs a task that succeeds and one that fails
    health.publish("solo", "quick", seconds=0)
    health.app().fail.apply_async(queue="solo")
    wait_for(
        lambda: (
            [(r["tasks_done"], r["tasks_failed"]) for r in health.by_host()["solo"]] == [(1, 1)]
        ),
        10,
        "the solo worker to count one task done and one failed",
    )
    assert "start quick" in health.journal.lines()

    # When each worker runs long tasks (on prefork, one acknowledged at its start)
    running = health.publish("celery", "on-prefork")
    early = str(health.app().hold_early.apply_async(("early", 60), queue="celery").id)
    held = health.publish("solo", "on-solo")
    started = {"start on-prefork", "start early", "start on-solo"}
    wait_for(lambda: started <= set(health.journal.lines()), 15, "the tasks to start")
    wait_for(
        lambda: (
            sorted(t["id"] for r in health.by_host()["pre"] for t in r["current"])
            == sorted([running, early])
        ),
        5,
        "the children's next beats",
    )
    runner = {t["id"]: r["worker"] for r in health.by_host()["pre"] for t in r["current"]}
    assert sorted(runner.values()) == sorted(c["worker"] for c in children)
    # Then tq show names the process holding its lease and the one running it
    shown = health.tq_json("show", running)
    assert shown["worker"] == {
        "held_by": main["worker"],
        "held_by_state": "live",
        "running_in": runner[running],
        "running_in_state": "live",
    }
    assert f"held by {main['worker']}, running in {runner[running]}" in (health.tq("show", running))
    # and of a task acknowledged at its start (no message held), the one running it
    assert health.tq_json("show", early)["worker"] == {
        "held_by": None,
        "held_by_state": None,
        "running_in": runner[early],
        "running_in_state": "live",
    }
    shown_early = health.tq("show", early)
    assert "running, no message held" in shown_early
    assert f"running in {runner[early]}" in shown_early
    assert "tests.health_app.hold" in health.tq("workers")

    # When the solo worker is killed with -9
    solo.kill()
    killed_at, killed_at_wall = time.monotonic(), time.time()
    wait_for(
        lambda: health.by_host()["solo"][0]["state"] == "lost",
        MISSED_BEATS * BEAT + 5,
        "the killed worker to be marked lost",
    )
    # Then it is lost 3 beats after its last one (seen here with some slack for a busy
    # machine), the other stays live
    assert time.monotonic() - killed_at < MISSED_BEATS * BEAT + 2
    listed_workers = health.by_host(cli=True)
    [lost] = listed_workers["solo"]
    assert lost["state"] == "lost" and lost["last_seen"] <= killed_at_wall
    assert lost["lost_at"] - lost["last_seen"] == pytest.approx(MISSED_BEATS * BEAT)
    assert {r["state"] for r in listed_workers["pre"]} == {"live"}
    assert "LOST" in health.tq("workers")
    # and its in-flight message is shown as held by a lost worker
    inflight = {m["task_id"]: m for m in health.tq_json("ls", "--state", "inflight")}
    assert (inflight[held]["worker"], inflight[held]["worker_state"]) == (
        solo_row["worker"],
        "lost",
    )
    assert (inflight[running]["worker"], inflight[running]["worker_state"]) == (
        main["worker"],
        "live",
    )
    listed = health.tq("ls", "--state", "inflight")
    assert f"{solo_row['worker']} (LOST)" in listed
    assert health.tq_json("show", held)["worker"]["held_by_state"] == "lost"
    # and forgetting lost workers drops it
    health.tq("workers", "--forget-lost")
    assert "solo" not in health.by_host()


def test_a_heartbeat_with_its_store_away_logs_once_and_records_when_it_is_back(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker whose Redis store is not there (nothing listens on its port)
    app = Celery("away", broker=f"tq+redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    identity = {"hostname": "away@host", "pid": os.getpid(), "role": "main"}
    heartbeat = Heartbeat(app, identity, BEAT)
    # When it beats twice, then the store is there again
    with caplog.at_level(logging.WARNING, "tq_celery_ext.worker.heartbeat"):
        started = time.monotonic()
        assert heartbeat.beat() is False and heartbeat.beat() is False
        assert time.monotonic() - started < 10  # it does not hang
        app.conf.broker_url = f"tq+{redis_server.url}"
        assert heartbeat.beat() is True
    # Then the failure was logged once, and the beat is in the store
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "not recorded" in m]) == 1, messages
    assert any("recorded again" in m for m in messages)
    from tq_kombu.store import open_store

    store = open_store(redis_server.url)
    try:
        # (the session's Redis may hold beats of other tests' workers: look at ours)
        ours = [b.worker for b in store.workers() if b.worker.startswith("away@")]
        assert ours == [f"away@host/{os.getpid()}"]
        # and a clean stop removes it (a worker that stops is not lost)
        heartbeat.stop(forget=True)
        assert [b for b in store.workers(include_lost=True) if b.worker.startswith("away@")] == []
    finally:
        store.close()


def test_a_worker_whose_broker_is_not_tq_says_so_once_and_does_not_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery("not_tq", broker="amqp://127.0.0.1:1//", set_as_current=False)
    heartbeat = Heartbeat(app, {"hostname": "other@host", "pid": 1, "role": "main"}, BEAT)
    with caplog.at_level(logging.WARNING, "tq_celery_ext.worker.heartbeat"):
        assert heartbeat.beat() is False
        heartbeat.start()  # it stops at once instead of retrying every beat
        wait_for(lambda: not heartbeat._thread.is_alive(), 5, "the heartbeat thread to end")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "not a tq broker" in warnings[0], warnings
