"""``tq workers``: the worker processes as their heartbeats show them; and the worker
holding a message, for ``tq ls`` and ``tq show``."""

from __future__ import annotations

from typing import Any

import click

from tq_kombu.admin import Admin
from tq_kombu.store.model import MessageInfo

from .group import tq
from .output import Command, admin_for, emit, table

COLUMNS = [
    "worker",
    "pid",
    "role",
    "state",
    "pool",
    "queues",
    "rss",
    "done",
    "failed",
    "recycles",
    "running",
    "last seen",
]


@tq.command(cls=Command)
@click.option("--live", is_flag=True, help="Only live workers (default: lost ones too).")
@click.option("--forget-lost", is_flag=True, help="Drop the beats of lost workers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def workers(ctx: click.Context, live: bool, forget_lost: bool, as_json: bool) -> None:
    """Every worker process (main, and each prefork child) with its last heartbeat: pool,
    queues, memory, tasks done and failed, running tasks, recycles. A worker that missed
    3 beats in a row is shown as lost."""
    with admin_for(ctx) as admin:
        if forget_lost:
            for name in admin.forget_lost_workers():
                click.echo(f"forgot lost worker {name}", err=True)
        rows = admin.workers(include_lost=not live)
    emit(as_json, rows, lambda: table([readable_worker(row) for row in rows], COLUMNS))


def readable_worker(row: dict[str, Any]) -> dict[str, Any]:
    """A worker row for the table: sizes in MB, running tasks with their run time."""
    seen = row["last_seen"]
    running = ", ".join(
        f"{t.get('name')} [{str(t.get('id'))[:8]}] {max(seen - t.get('started_at', seen), 0):.1f}s"
        for t in row["current"]
    )
    rss = row["rss_bytes"]
    return {
        "worker": row["hostname"],
        "pid": row["pid"],
        "role": row["role"] or "-",
        "state": row["state"].upper() if row["state"] == "lost" else row["state"],
        "pool": row["pool"] or "-",
        "queues": ",".join(row["queues"]) or "-",
        "rss": "-" if rss is None else f"{rss / 1e6:.0f} MB",
        "done": row["tasks_done"],
        "failed": row["tasks_failed"],
        "recycles": row["recycles"],
        "running": running or "-",
        "last seen": f"{row['last_seen_age_seconds']:.1f}s ago",
    }


def readable_holders(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Message rows for a table: the holding worker marked LOST when it missed its beats."""
    return [
        {**row, "worker": f"{row['worker']} (LOST)"}
        if row.get("worker_state") == "lost" and row.get("worker")
        else row
        for row in rows
    ]


def with_holders(admin: Admin, messages: list[MessageInfo], rows: list[dict[str, Any]]) -> None:
    """Add to each in-flight message row the worker holding it (``worker``, and
    ``worker_state``: live, lost, or unknown when no beat names its lease)."""
    inflight = [m for m in messages if m.state.value == "inflight"]
    if not inflight:
        return
    found = admin.holders(inflight)
    for info, row in zip(messages, rows, strict=True):
        if info.state.value != "inflight":
            continue
        holder = found.get(info.message_id)
        row["worker"] = None if holder is None else holder["worker"]
        row["worker_state"] = "unknown" if holder is None else holder["state"]


def describe_worker(worker: dict[str, Any] | None, width: int = 10) -> None:
    if worker is None:
        return
    parts = []
    if worker["held_by"]:
        state = " (LOST)" if worker["held_by_state"] == "lost" else ""
        parts.append(f"held by {worker['held_by']}{state}")
    if worker["running_in"] and worker["running_in"] != worker["held_by"]:
        state = " (LOST)" if worker["running_in_state"] == "lost" else ""
        parts.append(f"running in {worker['running_in']}{state}")
    click.echo(f"{'worker'.ljust(width)}  {', '.join(parts)}")
