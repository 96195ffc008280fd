"""Limits on SQLite: consumer processes sharing one file never hold more concurrency
slots than the limit allows, and a plain message pays (almost) nothing for limits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tq_kombu.store import open_store
from tq_kombu.store.model import LimitDefinition, LimitTag, NewMessage, QueueCounts

from .store_contract import PROJECT_ROOT

Q = "limited"
SLOTS = 2

CONSUMER = r"""
import json, sys, time
from tq_kombu.store import open_store

url, consumer = sys.argv[1], sys.argv[2]
store = open_store(url)
store.ping()
print("ready", flush=True)
sys.stdin.readline()  # start together with the other consumers
held = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    result = store.fetch(["limited"], 2, consumer, 60.0, 5)
    for delivery in result.deliveries:
        got = time.time()
        time.sleep(0.01)  # the task's work, while the slot is held
        done = time.time()
        held.append([delivery.lease.message_id, got, done])
        if not store.ack(delivery.lease):
            sys.exit("ack refused for " + delivery.lease.message_id)
    counts = store.counts("limited")
    if counts.ready == 0 and counts.inflight == 0:
        break
    if not result.deliveries:
        store.wait(["limited"], 0.2)
store.close()
print(json.dumps(held), flush=True)
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:  # an end sorts before a start at the same instant
        current += step
        most = max(most, current)
    return most


def test_processes_sharing_a_sqlite_file_never_hold_more_slots_than_the_limit(
    sqlite_url: str,
) -> None:
    # Given a concurrency limit of 2 and 40 messages under it, in one SQLite file
    store = open_store(sqlite_url)
    store.define_limits([LimitDefinition("heavy", "concurrency", slots=SLOTS)])
    tag = LimitTag("concurrency", "heavy", "tenant")
    for n in range(40):
        store.enqueue(Q, NewMessage(f"m{n:02}", b"x", 5, task_name="tasks.heavy", limits=(tag,)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # When three consumer processes fetch and ack concurrently
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, sqlite_url, f"process-{n}"],
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
    # Then every message ran once, and each held its slot inside its lease, so no
    # moment saw more than 2 of these intervals at once
    assert sorted(m for m, _, _ in held) == [f"m{n:02}" for n in range(40)]
    assert max_overlap([(got, done) for _, got, done in held]) <= SLOTS
    assert store.counts(Q) == QueueCounts()
    store.close()


def test_a_plain_message_on_sqlite_pays_one_lookup_of_lanes_per_fetch(tmp_path: Path) -> None:
    from tq_kombu.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "q.db")
    store.define_limits([LimitDefinition("heavy", "concurrency", slots=1)])
    store.enqueue("other", NewMessage("held", b"x", 5, limits=(LimitTag("concurrency", "heavy"),)))
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.enqueue("plain", NewMessage("plain", b"x", 5))
        enqueued = len(statements)
        delivery = store.fetch(["plain"], 1, "c", 60.0, 5).deliveries[0]
        fetched = len(statements)
        assert store.ack(delivery.lease)
    finally:
        conn.set_trace_callback(None)
    limit_tables = re.compile(
        r"\b(lanes|limits|limit_state|limit_slots|limit_starts|limited_\w+)\b"
    )
    touching = [(n, sql) for n, sql in enumerate(statements) if limit_tables.search(sql)]
    # enqueue and ack never touch them (nor fire their triggers); fetch asks once
    # whether its queues have lanes
    assert [n for n, _ in touching if n < enqueued or n >= fetched] == [], touching
    assert len(touching) == 1, touching
