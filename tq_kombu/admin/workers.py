"""Worker processes as their heartbeats show them, and which one holds a message.

A message in flight is leased by a consumer (a channel of a worker's main process);
each process's beat lists its consumer ids, so the lease names its worker. A task
acknowledged when it started (Celery's default) is no longer held: the process whose
beat lists it among its running tasks names it then.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..store import Store
from ..store.model import MessageInfo, WorkerBeat

ROLE_ORDER = {"main": 0, "child": 1}


def worker_fields(beat: WorkerBeat, now: float) -> dict[str, Any]:
    """One worker process as JSON-ready fields: its beat's info, its state and age."""
    info = beat.info
    return {
        "worker": beat.worker,
        "hostname": info.get("hostname") or beat.worker.rpartition("/")[0] or beat.worker,
        "pid": info.get("pid"),
        "role": info.get("role"),
        "parent_pid": info.get("parent_pid"),
        "state": "lost" if beat.lost else "live",
        "pool": info.get("pool"),
        "concurrency": info.get("concurrency"),
        "queues": info.get("queues") or [],
        "rss_bytes": info.get("rss_bytes"),
        "tasks_done": info.get("tasks_done", 0),
        "tasks_failed": info.get("tasks_failed", 0),
        "current": info.get("current") or [],
        "recycles": info.get("recycles", 0),
        "last_seen": beat.seen_at,
        #: when the worker is (or was) taken for lost, unless it beats again before
        "lost_at": beat.expires_at,
        "last_seen_age_seconds": round(max(now - beat.seen_at, 0.0), 3),
        "interval_seconds": info.get("interval_seconds"),
        "consumers": info.get("consumers") or [],
    }


def _order(row: dict[str, Any]) -> tuple[str, int, int]:
    pid = row["pid"] if isinstance(row["pid"], int) else 0
    return (str(row["hostname"]), ROLE_ORDER.get(str(row["role"]), 2), pid)


class WorkerAdmin:
    """The worker queries of :class:`~tq_kombu.admin.Admin`."""

    store: Store

    def workers(self, include_lost: bool = True) -> list[dict[str, Any]]:
        """Every worker process with a beat (lost ones too unless told otherwise), by
        hostname, main process first."""
        now = time.time()
        rows = [worker_fields(b, now) for b in self.store.workers(include_lost=include_lost)]
        return sorted(rows, key=_order)

    def forget_lost_workers(self) -> list[str]:
        """Drop the beats of lost workers; returns their names."""
        lost = [b.worker for b in self.store.workers(include_lost=True) if b.lost]
        return [name for name in lost if self.store.forget_worker(name)]

    def holders(
        self, messages: Iterable[MessageInfo], workers: list[dict[str, Any]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """For each message held or run by a known worker process: that process (by
        message id). The leaseholder wins over a process merely running the task."""
        rows = self.workers() if workers is None else workers
        by_consumer = {c: row for row in rows for c in row["consumers"]}
        by_task = {t.get("id"): row for row in rows for t in row["current"]}
        found: dict[str, dict[str, Any]] = {}
        for info in messages:
            row = by_consumer.get(info.held_by or "") or by_task.get(info.task_id)
            if row is not None:
                found[info.message_id] = row
        return found

    def worker_of(self, held_by: str | None, task_id: str) -> dict[str, Any] | None:
        """For one message: the process holding its lease (``held_by``, a consumer id)
        and the one running its task (``task_id``), with their states; None when no
        beat names either."""
        rows = self.workers()
        holder = next((r for r in rows if held_by and held_by in r["consumers"]), None)
        runner = next(
            (r for r in rows if task_id and any(t.get("id") == task_id for t in r["current"])),
            None,
        )
        if holder is None and runner is None:
            return None
        return {
            "held_by": None if holder is None else holder["worker"],
            "held_by_state": None if holder is None else holder["state"],
            "running_in": None if runner is None else runner["worker"],
            "running_in_state": None if runner is None else runner["state"],
        }
