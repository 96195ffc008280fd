"""``tq stats | ls | show | cancel | reprioritize | purge``: queues and their messages."""

from __future__ import annotations

import click

from tq_kombu.errors import ConfigurationError, MessageNotFound

from .dependencies import describe_dependencies
from .group import tq
from .limits import limit_rows, limit_table
from .output import (
    EXIT_NOT_FOUND,
    Command,
    admin_for,
    check_paging,
    describe,
    emit,
    fail,
    json_option,
    message_rows,
    queue_option,
    readable,
    table,
    with_paging,
)
from .workers import describe_worker, readable_holders, with_holders


@tq.command(cls=Command)
@queue_option
@json_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Per queue: ready (by priority), delayed, waiting, in flight, dead, oldest ready age;
    then each limit (JSON: the queues only; `tq limits ls --json` has the limits)."""
    with admin_for(ctx) as admin:
        rows = [s.as_dict() for s in admin.stats(list(queues) or None)]
        limits = [] if as_json else limit_rows(admin)

    def show() -> None:
        table(
            [
                {
                    **row,
                    "ready by priority": " ".join(
                        f"{p}:{n}" for p, n in row["ready_by_priority"].items()
                    )
                    or "-",
                    "oldest ready": "-"
                    if row["oldest_ready_age_seconds"] is None
                    else f"{row['oldest_ready_age_seconds']:.1f}s",
                }
                for row in rows
            ],
            [
                "queue",
                "ready",
                "ready by priority",
                "delayed",
                "waiting",
                "inflight",
                "dead",
                "oldest ready",
            ],
        )
        if limits:
            click.echo("")
            limit_table(limits)

    emit(as_json, rows, show)


@tq.command(name="ls", cls=Command)
@click.argument("queue", required=False)
@click.option("--state", help="ready, delayed, waiting, inflight or dead (default: all).")
@click.option("--task", "task_name", help="Only messages of this task name.")
@click.option("--priority", type=int, help="Only messages of this priority (0..255).")
@with_paging
@json_option
@click.pass_context
def list_messages(
    ctx: click.Context,
    queue: str | None,
    state: str | None,
    task_name: str | None,
    priority: int | None,
    offset: int,
    limit: int,
    as_json: bool,
) -> None:
    """List the messages of QUEUE (default: every queue), with filters and paging."""
    check_paging(offset, limit)
    with admin_for(ctx) as admin:
        found = admin.messages(queue, state, task_name, priority, offset, limit)
        rows = message_rows(found)
        with_holders(admin, found, rows)
    columns = ["id", "queue", "state", "priority", "task", "task_id", "deliveries", "eta"]
    if any(row["limits"] for row in rows):
        columns.append("limits")  # the messages a cluster-wide limit holds back
    columns += ["worker"] * any("worker" in row for row in rows)
    emit(as_json, rows, lambda: table(readable_holders(readable(rows)), columns))


@tq.command(cls=Command)
@click.argument("message_id")
@queue_option
@click.option("--raw", is_flag=True, help="Only the stored metadata and envelope header.")
@json_option
@click.pass_context
def show(
    ctx: click.Context, message_id: str, queues: tuple[str, ...], raw: bool, as_json: bool
) -> None:
    """Show one message (by message id or task id), decrypted when the key is at hand,
    with the worker holding or running it and its parents and children when it has
    dependencies."""
    with admin_for(ctx) as admin:
        try:
            shown = admin.show(message_id, list(queues) or None, raw=raw)
            summary = admin.dependency_summary(shown.get("task_id") or message_id)
        except MessageNotFound:  # a task no longer held: running, or its outcome if known
            summary = admin.dependency_summary(message_id)
            if summary is None and admin.worker_of(None, message_id) is None:
                raise
            shown = {"task_id": message_id}
        worker = admin.worker_of(shown.get("held_by"), shown.get("task_id") or message_id)
    if summary is not None:
        shown["dependencies"] = summary
    if worker is not None:
        shown["worker"] = worker

    def show_all() -> None:
        if "message_id" in shown:
            describe(shown)
        elif worker is not None:
            click.echo(f"task {message_id}: running, no message held (acknowledged at start)")
        else:
            click.echo(f"task {message_id}: no message held (finished or never published here)")
        describe_worker(worker)
        if summary is not None:
            describe_dependencies(summary)

    emit(as_json, shown, show_all)


@tq.command(cls=Command)
@click.argument("message_id")
@queue_option
@click.option(
    "--cascade",
    is_flag=True,
    help="Cancel its waiting dependents too (without it they go dead, or run, by policy).",
)
@click.pass_context
def cancel(ctx: click.Context, message_id: str, queues: tuple[str, ...], cascade: bool) -> None:
    """Cancel a ready, delayed or waiting message: it never runs (this persists). Tasks
    that depend on it go dead as dependency_failed (or run, by their policy)."""
    with admin_for(ctx) as admin:
        if cascade:
            cancelled = admin.cancel_cascade(list(queues) or None, message_id)
        else:
            cancelled = [admin.cancel(list(queues) or None, message_id)]
    for info in cancelled:
        click.echo(f"cancelled {info.message_id} ({info.task_name or '-'}) in {info.queue}")


@tq.command(cls=Command)
@click.argument("message_id")
@click.argument("priority", type=int)
@queue_option
@click.pass_context
def reprioritize(
    ctx: click.Context, message_id: str, priority: int, queues: tuple[str, ...]
) -> None:
    """Change the priority (0..255, higher first) of a ready, delayed or waiting message."""
    with admin_for(ctx) as admin:
        info = admin.reprioritize(list(queues) or None, message_id, priority)
    click.echo(f"{info.message_id} in {info.queue}: priority {info.priority} -> {priority}")


@tq.command(cls=Command)
@click.argument("queue")
@click.option(
    "--state", default="ready", show_default=True, help="ready, delayed, waiting or dead."
)
@click.option("--force", "-f", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queue: str, state: str, force: bool) -> None:
    """Delete the ready, delayed, waiting or dead messages of QUEUE (one state at a time)."""
    with admin_for(ctx) as admin:
        admin.check_queue(queue)
        if state not in ("ready", "delayed", "waiting", "dead"):
            raise ConfigurationError(f"purge takes ready, delayed, waiting or dead, not {state!r}")
        if not force and not click.confirm(f"Delete every {state} message of {queue}?"):
            fail("nothing deleted", EXIT_NOT_FOUND)
        removed = admin.purge(queue, state)
    click.echo(f"purged {removed} {state} message(s) from {queue}")
