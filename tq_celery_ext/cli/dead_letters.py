"""``tq dlq ls | show | retry | purge``: dead letters."""

from __future__ import annotations

import time
from collections.abc import Sequence

import click

from tq_kombu.errors import MessageNotFound

from .group import tq
from .output import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
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


@tq.group(cls=click.Group)
def dlq() -> None:
    """Dead letters: list, show, retry (replay) and purge."""


DEAD_COLUMNS = ["id", "queue", "task", "task_id", "reason", "attempts", "deliveries", "dead_at"]


@dlq.command(name="ls", cls=Command)
@click.argument("queue", required=False)
@click.option("--reason", help="Only this reason (failed, max_retries_exceeded, rejected, ...).")
@click.option("--task", "task_name", help="Only this task name.")
@with_paging
@json_option
@click.pass_context
def dlq_ls(
    ctx: click.Context,
    queue: str | None,
    reason: str | None,
    task_name: str | None,
    offset: int,
    limit: int,
    as_json: bool,
) -> None:
    """List dead messages of QUEUE (default: every queue), oldest first."""
    check_paging(offset, limit)
    with admin_for(ctx) as admin:
        rows = message_rows(admin.dead_letters(queue, reason, task_name, offset, limit))
    emit(as_json, rows, lambda: table(readable(rows), DEAD_COLUMNS))


@dlq.command(name="show", cls=Command)
@click.argument("message_id")
@queue_option
@click.option("--raw", is_flag=True, help="Only the stored metadata and envelope header.")
@json_option
@click.pass_context
def dlq_show(
    ctx: click.Context, message_id: str, queues: tuple[str, ...], raw: bool, as_json: bool
) -> None:
    """Show a dead message: reason, times, the task and its (decrypted) traceback."""
    with admin_for(ctx) as admin:
        info = admin.find(message_id, list(queues) or None)
        if info.state.value != "dead":
            raise MessageNotFound(f"message {message_id!r} is {info.state.value}, not dead")
        shown = admin.show(info.message_id, [info.queue], raw=raw)
    emit(as_json, shown, lambda: describe(shown))


@dlq.command(name="retry", cls=Command)
@click.argument("message_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead message matching the filters.")
@queue_option
@click.option("--reason", help="Only this reason (with --all).")
@click.option("--task", "task_name", help="Only this task name (with --all).")
@click.option("--to-queue", help="Replay into this queue instead of each message's own.")
@click.option("--priority", type=int, help="Replay at this priority instead of each one's own.")
@json_option
@click.pass_context
def dlq_retry(
    ctx: click.Context,
    message_ids: tuple[str, ...],
    retry_all: bool,
    queues: tuple[str, ...],
    reason: str | None,
    task_name: str | None,
    to_queue: str | None,
    priority: int | None,
    as_json: bool,
) -> None:
    """Replay dead messages — the given ids, or --all matching the filters — back to
    their queue (or --to-queue) at their priority (or --priority), delivery count reset."""
    if bool(message_ids) == retry_all:
        fail("give message ids or --all (with optional -Q/--reason/--task filters)", EXIT_USAGE)
    if message_ids and (reason or task_name):
        fail("--reason and --task filter --all; with message ids, leave them out", EXIT_USAGE)
    started = time.monotonic()
    with admin_for(ctx) as admin:
        replayed = admin.retry_dead(
            list(queues) or None, list(message_ids), reason, task_name, to_queue, priority
        )
    result = {"replayed": replayed, "seconds": round(time.monotonic() - started, 3)}
    emit(as_json, result, lambda: click.echo(f"replayed {replayed} message(s)"))


@dlq.command(name="purge", cls=Command)
@click.argument("queues", nargs=-1)
@click.option("--force", "-f", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dlq_purge(ctx: click.Context, queues: Sequence[str], force: bool) -> None:
    """Delete the dead messages of QUEUES (default: every queue) for good."""
    with admin_for(ctx) as admin:
        scope = [admin.check_queue(q) for q in queues] or None
        where = ", ".join(queues) or "every queue"
        if not force and not click.confirm(f"Delete the dead messages of {where} for good?"):
            fail("nothing deleted", EXIT_NOT_FOUND)
        removed = admin.purge_dead(scope)
    click.echo(f"purged {removed} dead message(s)")
