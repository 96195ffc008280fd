"""Poison input against a real `celery -A tests.e2e_app worker`, on both stores: forged,
malformed, Celery-crashing, oversized, garbage and corrupt-metadata messages mixed with
good tasks. Every good task runs exactly once (the tasks' own journal file says so),
every bad one is a dead letter with its reason and never runs, and the worker stays up.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from tq_kombu.envelope import Envelope, dumps
from tq_kombu.keyring import keyring_from_options
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import NewMessage, QueueCounts, State

from .workers import Journal, Worker, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.e2e_app"
NOTE = f"{APP}.note"
MiB = 1024 * 1024


class Poisoner:
    """Publishes good tasks like a user and bad messages like an attacker or a bug would,
    remembering which reason each bad one must be set aside with (by task id)."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.store_url = store_url
        self.broker_url = f"tq+{store_url}"
        self.store: Store = open_store(store_url)
        self.envelope = Envelope(keyring_from_options({}))
        self.client = Celery("poison-client", broker=self.broker_url)
        self.client.conf.broker_transport_options = {"lease_seconds": 4}
        self.forger = Celery("forger", broker=self.broker_url)
        self.forger.conf.broker_transport_options = {"encryption": "off", "lease_seconds": 4}
        self.good: list[str] = []
        self.bad: dict[str, str] = {}
        self.never_run: list[str] = []

    def close(self) -> None:
        self.client.close()
        self.forger.close()
        self.store.close()

    def good_task(self, label: str) -> None:
        self.client.send_task(NOTE, args=[label])
        self.good.append(label)

    def forged(self, label: str) -> None:
        """A task published without a key into the encrypted store."""
        result = self.forger.send_task(NOTE, args=[label])
        self.bad[result.id] = "undecryptable"
        self.never_run.append(label)

    def injected(self, payload: bytes, reason: str) -> None:
        task_id = uuid.uuid4().hex
        self.store.enqueue("celery", NewMessage(uuid.uuid4().hex, payload, 5, None, NOTE, task_id))
        self.bad[task_id] = reason

    def malformed(self, message: Any) -> None:
        """A message sealed with the right key, of a shape nothing can consume."""
        task_id = uuid.uuid4().hex
        message_id = uuid.uuid4().hex
        payload = self.envelope._seal(message_id, dumps(message).encode())
        self.store.enqueue("celery", NewMessage(message_id, payload, 5, None, NOTE, task_id))
        self.bad[task_id] = "malformed"

    def celery_crashing(self, label: str) -> None:
        """Well-formed for kombu, but Celery's Request raises on it (no task id header)."""
        body = [[label], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        self.malformed(
            {
                "body": base64.b64encode(json.dumps(body).encode()).decode(),
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": {"lang": "py", "task": NOTE, "argsrepr": repr([label])},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": "", "routing_key": "celery"},
                    "delivery_mode": 2,
                    "priority": 5,
                },
            }
        )
        self.never_run.append(label)

    def oversized(self) -> None:
        """66 MiB once decompressed (the default bound is 64 MiB), ~66 KB stored."""
        message_id = uuid.uuid4().hex
        bomb = Envelope(
            keyring_from_options({}), compress_min_bytes=0, max_message_bytes=1 << 30
        )._seal(message_id, b" " * (66 * MiB))
        task_id = uuid.uuid4().hex
        self.store.enqueue("celery", NewMessage(message_id, bomb, 5, None, NOTE, task_id))
        self.bad[task_id] = "too_large"

    def corrupt_metadata(self, label: str) -> None:
        """A good task whose store record is then damaged from outside tq (while it waits
        for its countdown, so that no running worker takes it first)."""
        task_id = self.client.send_task(NOTE, args=[label], countdown=1.5).id
        delayed = self.store.list_messages("celery", State.DELAYED, 0, 1000)
        [info] = [m for m in delayed if m.task_id == task_id]
        if self.store_url.startswith("redis"):
            client = redis.Redis.from_url(self.store_url)
            client.hset("{tq:celery}:meta", info.message_id, b"{not json")
            client.close()
        else:
            with sqlite3.connect(self.store_url.removeprefix("sqlite:///")) as db:
                db.execute("UPDATE messages SET priority = 'high' WHERE id = ?", (info.message_id,))
        self.bad[info.message_id] = "corrupt"  # Redis cannot read the task id back
        self.never_run.append(label)

    def dead_reasons(self) -> dict[str, str | None]:
        """The reason of each dead letter, by the key ``bad`` knows it by (task or message id)."""
        dead = self.store.list_messages("celery", State.DEAD, 0, 1000)
        by_id = {m.message_id: m.dead_reason for m in dead}
        by_id.update({m.task_id: m.dead_reason for m in dead if m.task_id})
        return {key: by_id[key] for key in self.bad if key in by_id}


@pytest.fixture
def poisoner(store_url: str, tmp_path: Path) -> Iterator[Poisoner]:
    run = Poisoner(store_url, tmp_path)
    yield run
    run.close()


def test_poison_mixed_with_good_tasks_never_runs_and_never_stops_the_worker(
    store_url: str, tmp_path: Path, poisoner: Poisoner
) -> None:
    journal = Journal(tmp_path / "journal.txt")
    # Given a queue where good tasks alternate with every kind of bad message
    bad_kinds = [
        lambda n: poisoner.forged(f"forged-{n}"),
        lambda n: poisoner.malformed({"properties": {}}),
        lambda n: poisoner.malformed({"properties": "x", "body": ""}),
        lambda n: poisoner.malformed({"headers": {"task": [NOTE]}, "body": "", "properties": {}}),
        lambda n: poisoner.celery_crashing(f"crashing-{n}"),
        lambda n: poisoner.oversized(),
        lambda n: poisoner.injected(os.urandom(300), "undecryptable"),
        lambda n: poisoner.corrupt_metadata(f"corrupt-{n}"),
    ]
    for n, bad in enumerate(bad_kinds):
        poisoner.good_task(f"good-{n}")
        bad(n)
    # When a worker starts on it, and more good and bad messages arrive while it runs
    env = {
        **os.environ,
        "TQ_BROKER_URL": poisoner.broker_url,
        "TQ_LEASE_SECONDS": "4",
        "TQ_JOURNAL": str(journal.path),
        "TQ_RESULT_BACKEND": "",
        "PYTHONWARNINGS": "ignore",
    }
    worker = Worker(APP, env, tmp_path / "worker.log")
    worker.start(
        "-n", "poison@%h", "--pool", "prefork", "-c", "2",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    )  # fmt: skip
    try:
        for n, bad in enumerate(bad_kinds, start=len(bad_kinds)):
            bad(n)
            poisoner.good_task(f"good-{n}")
        # Then every good task runs, and every bad message is set aside with its reason
        wait_for(lambda: set(poisoner.good) <= set(journal.lines()), 60, "every good task")
        wait_for(
            lambda: len(poisoner.dead_reasons()) == len(poisoner.bad),
            30,
            f"every bad one dead: {poisoner.bad}",
        )
        assert poisoner.dead_reasons() == poisoner.bad
        # And each good task ran exactly once, no bad one ran, and the worker is still up
        assert sorted(journal.lines()) == sorted(poisoner.good)
        assert not set(poisoner.never_run) & set(journal.lines())
        assert worker.process is not None and worker.process.poll() is None, worker.output()
        assert "Unrecoverable error" not in worker.output()
        counts = poisoner.store.counts("celery")
        assert counts == QueueCounts(dead=len(poisoner.bad))
    finally:
        worker.stop()
        print(f"--- {worker.log}\n{worker.output()[-8000:]}")
