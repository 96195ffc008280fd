"""``celery -A app tq ...``: see and act on what the tq broker holds.

Exit codes: 0 done, 1 not found, 2 usage error (bad option, unknown queue, bad filter).
Tables by default, ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from celery.bin.base import CeleryCommand, handle_preload_options

from tq_kombu.admin import Admin, UnknownQueue
from tq_kombu.errors import ConfigurationError, MessageNotFound, PriorityError, TQError
from tq_kombu.store.base import MessageInfo

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
queue_option = click.option("--queue", "-Q", "queues", multiple=True, help="Queue (repeatable).")


@contextmanager
def admin_for(ctx: click.Context) -> Iterator[Admin]:
    """The app's Admin; tq errors become one line on stderr and an exit code."""
    try:
        admin = Admin.from_app(ctx.obj.app)
    except TQError as exc:
        fail(str(exc), 2)
    try:
        yield admin
    except MessageNotFound as exc:
        fail(str(exc), 1)
    except (UnknownQueue, ConfigurationError, PriorityError) as exc:
        fail(str(exc), 2)
    except TQError as exc:
        fail(str(exc), 1)
    finally:
        admin.close()


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def message_rows(messages: list[MessageInfo]) -> list[dict[str, Any]]:
    return [
        {
            "id": m.message_id,
            "queue": m.queue,
            "state": m.state.value,
            "priority": m.priority,
            "task": m.task_name,
            "task_id": m.task_id,
            "deliveries": m.delivery_count,
            "eta": when(m.eta),
            "reason": m.dead_reason or "",
            "dead_at": when(m.dead_at),
        }
        for m in messages
    ]


def emit(as_json: bool, data: Any, show: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        show()


@click.group(name="tq")
@click.pass_context
@handle_preload_options
def tq(ctx: click.Context) -> None:
    """Inspect and administer the tq broker: queues, messages, dead letters, keys."""


@tq.command(cls=CeleryCommand)
@queue_option
@json_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Per queue: ready (by priority), delayed, waiting, in flight, dead, oldest ready age."""
    with admin_for(ctx) as admin:
        result = admin.stats(list(queues) or None)
    rows = [s.as_dict() for s in result]

    def show() -> None:
        table(
            [
                {
                    **row,
                    "by priority": " ".join(f"{p}:{n}" for p, n in row["ready_by_priority"].items())
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
                "delayed",
                "waiting",
                "inflight",
                "dead",
                "by priority",
                "oldest ready",
            ],
        )

    emit(as_json, rows, show)


@tq.command(name="ls", cls=CeleryCommand)
@click.argument("queue")
@click.option("--state", help="ready, delayed, waiting, inflight or dead (default: all).")
@click.option("--task", "task_name", help="Only messages of this task name.")
@click.option("--priority", type=int, help="Only messages of this priority.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_context
def list_messages(
    ctx: click.Context,
    queue: str,
    state: str | None,
    task_name: str | None,
    priority: int | None,
    offset: int,
    limit: int,
    as_json: bool,
) -> None:
    """List a queue's messages, with filters and paging."""
    with admin_for(ctx) as admin:
        found = admin.messages(queue, state, task_name, priority, offset, limit)
    rows = message_rows(found)
    emit(
        as_json,
        rows,
        lambda: table(rows, ["id", "state", "priority", "task", "task_id", "deliveries", "eta"]),
    )


@tq.command(cls=CeleryCommand)
@click.argument("message_id")
@queue_option
@click.option("--raw", is_flag=True, help="Only the stored metadata and envelope header.")
@json_option
@click.pass_context
def show(
    ctx: click.Context, message_id: str, queues: tuple[str, ...], raw: bool, as_json: bool
) -> None:
    """Show one message (by message id or task id), decrypted when the key is at hand."""
    with admin_for(ctx) as admin:
        shown = admin.show(message_id, list(queues) or None, raw=raw)
    emit(as_json, shown, lambda: click.echo(json.dumps(shown, indent=2, default=str)))


@tq.command(cls=CeleryCommand)
@click.argument("message_id")
@queue_option
@click.pass_context
def cancel(ctx: click.Context, message_id: str, queues: tuple[str, ...]) -> None:
    """Cancel a ready, delayed or waiting message: it never runs (this persists)."""
    with admin_for(ctx) as admin:
        info = admin.find(message_id, list(queues) or None)
        admin.cancel(info.queue, info.message_id)
    click.echo(f"cancelled {info.message_id} ({info.task_name}) in {info.queue}")


@tq.command(cls=CeleryCommand)
@click.argument("message_id")
@click.argument("priority", type=int)
@queue_option
@click.pass_context
def reprioritize(
    ctx: click.Context, message_id: str, priority: int, queues: tuple[str, ...]
) -> None:
    """Change the priority (0..255) of a queued message."""
    with admin_for(ctx) as admin:
        info = admin.find(message_id, list(queues) or None)
        admin.reprioritize(info.queue, info.message_id, priority)
    click.echo(f"{info.message_id} in {info.queue}: priority {info.priority} -> {priority}")


@tq.command(cls=CeleryCommand)
@click.argument("queue")
@click.option(
    "--state",
    type=click.Choice(["ready", "delayed", "waiting", "dead"]),
    default="ready",
    show_default=True,
)
@click.option("--force", "-f", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queue: str, state: str, force: bool) -> None:
    """Delete a queue's ready, delayed, waiting or dead messages."""
    if not force and not click.confirm(f"Delete every {state} message of {queue}?", default=False):
        fail("nothing deleted", 1)
    with admin_for(ctx) as admin:
        removed = admin.purge(queue, state)
    click.echo(f"purged {removed} {state} message(s) from {queue}")


@tq.group(cls=click.Group)
def dlq() -> None:
    """Dead letters: list, show, retry (replay) and purge."""


@dlq.command(name="ls", cls=CeleryCommand)
@click.argument("queue", required=False)
@click.option("--reason", help="Only this reason (failed, rejected, max_deliveries, ...).")
@click.option("--task", "task_name", help="Only this task name.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
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
    """List dead messages, oldest first (of QUEUE, or of every queue)."""
    with admin_for(ctx) as admin:
        rows = message_rows(admin.dead_letters(queue, reason, task_name, offset, limit))
    emit(
        as_json,
        rows,
        lambda: table(rows, ["id", "queue", "task", "task_id", "reason", "deliveries", "dead_at"]),
    )


@dlq.command(name="show", cls=CeleryCommand)
@click.argument("message_id")
@queue_option
@click.option("--raw", is_flag=True, help="Only the stored metadata and envelope header.")
@json_option
@click.pass_context
def dlq_show(
    ctx: click.Context, message_id: str, queues: tuple[str, ...], raw: bool, as_json: bool
) -> None:
    """Show a dead message with its reason and (decrypted) failure and traceback."""
    with admin_for(ctx) as admin:
        shown = admin.show(message_id, list(queues) or None, raw=raw)
        if shown.get("state") != "dead":
            raise MessageNotFound(f"message {message_id!r} is {shown.get('state')}, not dead")
    emit(as_json, shown, lambda: click.echo(json.dumps(shown, indent=2, default=str)))


@dlq.command(name="retry", cls=CeleryCommand)
@click.argument("message_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead message matching the filters.")
@queue_option
@click.option("--reason", help="Only this reason.")
@click.option("--task", "task_name", help="Only this task name.")
@click.option("--to-queue", help="Replay into this queue instead of the original one.")
@click.option("--priority", type=int, help="Replay at this priority instead of the original.")
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
    """Replay dead messages: the given ids, or --all matching the filters."""
    if bool(message_ids) == retry_all:
        fail("give message ids or --all (with optional --reason/--task/-Q filters), not both", 2)
    started = time.monotonic()
    with admin_for(ctx) as admin:
        scope: list[str | None] = [*queues] or [None]
        replayed = sum(
            admin.retry_dead(q, list(message_ids) or None, reason, task_name, to_queue, priority)
            for q in scope
        )
    result = {"replayed": replayed, "seconds": round(time.monotonic() - started, 3)}
    emit(as_json, result, lambda: click.echo(f"replayed {replayed} message(s)"))


@dlq.command(name="purge", cls=CeleryCommand)
@click.argument("queue", required=False)
@click.option("--force", "-f", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dlq_purge(ctx: click.Context, queue: str | None, force: bool) -> None:
    """Delete dead messages (of QUEUE, or of every queue)."""
    if not force and not click.confirm("Delete these dead messages for good?", default=False):
        fail("nothing deleted", 1)
    with admin_for(ctx) as admin:
        removed = admin.purge_dead(queue)
    click.echo(f"purged {removed} dead message(s)")


@tq.command(cls=CeleryCommand)
@click.argument("key_id", required=False)
def keygen(key_id: str | None) -> None:
    """Print a fresh encryption key line for TQ_ENCRYPTION_KEYS."""
    from tq_kombu.keyring import ENV_VAR, generate_key_line

    try:
        line = generate_key_line(key_id)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(line)
    click.echo(f"# export {ENV_VAR}='{line}'  (put a new key first to rotate)", err=True)
