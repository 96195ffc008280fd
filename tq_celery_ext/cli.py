"""``celery -A app tq ...``: see and act on what the tq broker holds.

    tq stats | ls | show | cancel | reprioritize | purge
    tq dlq ls | dlq show | dlq retry | dlq purge
    tq keygen

Readable output by default, ``--json`` for scripts. Exit codes: 0 done, 1 not found
(unknown message id, or a message not in a state the command acts on), 2 usage
error (bad option, unknown queue, bad filter). Errors are one line on stderr, and
a command that fails changes nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from celery.bin.base import CeleryCommand, handle_preload_options

from tq_kombu.admin import Admin, UnknownQueue, message_fields
from tq_kombu.errors import ConfigurationError, MessageNotFound, PriorityError, TQError
from tq_kombu.store.base import MessageInfo

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


class Command(CeleryCommand):
    """A Celery command whose usage errors are one line on stderr and exit code 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            path = " ".join(p for p in (parent.command_path if parent else "", info_name) if p)
            fail(f"{exc.format_message()} (see: {path} --help)", EXIT_USAGE)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
queue_option = click.option(
    "--queue", "-Q", "queues", multiple=True, help="Only this queue (repeatable; default: all)."
)
paging = [
    click.option("--offset", type=int, default=0, show_default=True, help="Skip this many."),
    click.option(
        "--limit", type=int, default=50, show_default=True, help="Show at most this many."
    ),
]


def with_paging(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(paging):
        command = option(command)
    return command


@contextmanager
def admin_for(ctx: click.Context) -> Iterator[Admin]:
    """The app's Admin; tq errors become one line on stderr and an exit code."""
    try:
        admin = Admin.from_app(ctx.obj.app)
    except TQError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        yield admin
    except MessageNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except (UnknownQueue, ConfigurationError, PriorityError) as exc:
        fail(str(exc), EXIT_USAGE)
    except TQError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    finally:
        admin.close()


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def check_paging(offset: int, limit: int) -> None:
    if offset < 0 or limit < 1:
        fail(f"--offset must be >= 0 and --limit >= 1, got {offset} and {limit}", EXIT_USAGE)


def dash(value: Any) -> Any:
    return "-" if value is None else value


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


#: Short column labels of the tables, by field name (JSON keeps the field names, the
#: same in ``ls``, ``dlq ls`` and ``show``: those of MessageInfo).
LABELS = {
    "message_id": "id",
    "task_name": "task",
    "delivery_count": "deliveries",
    "created_at": "first_seen",
    "dead_reason": "reason",
    "dead_detail": "detail",
}


def message_rows(messages: list[MessageInfo]) -> list[dict[str, Any]]:
    """Messages as JSON objects, with the field names ``show --json`` uses too."""
    return [message_fields(m) for m in messages]


def readable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a table: short labels, times as UTC dates, blanks for what is unknown."""
    times = ("eta", "created_at", "dead_at")
    return [
        {
            LABELS.get(k, k): when(v) if k in times else ("-" if v is None else v)
            for k, v in row.items()
        }
        for row in rows
    ]


def emit(as_json: bool, data: Any, show: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        show()


def describe(shown: dict[str, Any]) -> None:
    """One message, readable: metadata, envelope, then the decrypted task and failure."""
    state = shown["state"]
    if shown.get("dead_reason"):
        state += f" ({shown['dead_reason']}: {shown.get('dead_detail') or '-'})"
    envelope = shown.get("envelope", {})
    sealed = f"key {envelope['key_id']}" if "key_id" in envelope else "not encrypted"
    lines = [
        ("message", shown["message_id"]),
        ("queue", shown["queue"]),
        ("state", state),
        ("task", f"{shown.get('task_name') or '-'} [{shown.get('task_id') or '-'}]"),
        ("priority", shown["priority"]),
        ("deliveries", shown.get("delivery_count") or 0),
        ("attempts", dash(shown.get("attempts"))),
        ("first seen", when(shown.get("created_at"))),
        ("eta", when(shown.get("eta"))),
        ("dead at", when(shown.get("dead_at"))),
        ("hostname", dash(shown.get("hostname"))),
        (
            "envelope",
            f"v{envelope.get('version', '?')}, {sealed}, "
            f"{envelope.get('compression', '?')}, {envelope.get('bytes', 0)} bytes",
        ),
    ]
    message = shown.get("message")
    if isinstance(message, str):
        lines.append(("payload", message))
    elif isinstance(message, dict):
        body = message.get("body")
        if isinstance(body, (list, tuple)) and len(body) == 3:
            args, kwargs, embed = body
            lines += [("args", json.dumps(args, default=str)), ("kwargs", json.dumps(kwargs))]
            links = {k: v for k, v in (embed or {}).items() if v}
            if links:
                lines.append(("links", json.dumps(links, default=str)))
        else:
            lines.append(("body", json.dumps(body, default=str)))
        headers = message.get("headers") or {}
        # (the eta header is the eta shown above)
        for key in ("retries", "expires", "root_id", "parent_id", "group"):
            if headers.get(key) not in (None, 0, ""):
                lines.append((key, headers[key]))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        click.echo(f"{label.ljust(width)}  {value}")
    failure = shown.get("failure")
    if failure:
        click.echo(
            f"{'failure'.ljust(width)}  {failure.get('exc_type')}: {failure.get('exc_message')}"
        )
        click.echo("")
        click.echo(str(failure.get("traceback", "")).rstrip())


@click.group(name="tq")
@click.pass_context
@handle_preload_options
def tq(ctx: click.Context) -> None:
    """Inspect and administer the tq broker: queues, messages, dead letters, keys."""


@tq.command(cls=Command)
@queue_option
@json_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Per queue: ready (by priority), delayed, waiting, in flight, dead, oldest ready age."""
    with admin_for(ctx) as admin:
        rows = [s.as_dict() for s in admin.stats(list(queues) or None)]

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
        rows = message_rows(admin.messages(queue, state, task_name, priority, offset, limit))
    columns = ["id", "queue", "state", "priority", "task", "task_id", "deliveries", "eta"]
    emit(as_json, rows, lambda: table(readable(rows), columns))


@tq.command(cls=Command)
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
    emit(as_json, shown, lambda: describe(shown))


@tq.command(cls=Command)
@click.argument("message_id")
@queue_option
@click.pass_context
def cancel(ctx: click.Context, message_id: str, queues: tuple[str, ...]) -> None:
    """Cancel a ready, delayed or waiting message: it never runs (this persists)."""
    with admin_for(ctx) as admin:
        info = admin.cancel(list(queues) or None, message_id)
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


@tq.command(cls=Command)
@click.argument("key_id", required=False)
def keygen(key_id: str | None) -> None:
    """Print a fresh encryption key line for TQ_ENCRYPTION_KEYS."""
    from tq_kombu.keyring import ENV_VAR, generate_key_line

    try:
        line = generate_key_line(key_id)
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(line)
    click.echo(f"# export {ENV_VAR}='{line}'  (put a new key first to rotate)", err=True)
