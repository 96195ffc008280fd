"""What every tq command shares: the command class, options, the Admin of the app,
errors as one line with an exit code, tables and readable fields."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from celery.bin.base import CeleryCommand

from tq_kombu.admin import Admin, UnknownQueue, message_fields
from tq_kombu.errors import ConfigurationError, MessageNotFound, PriorityError, TQError
from tq_kombu.store.model import MessageInfo

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

    def cell(name: str, value: Any) -> Any:
        if name in times:
            return when(value)
        if name == "limits":
            return limit_tags(value)
        return "-" if value is None else value

    return [{LABELS.get(k, k): cell(k, v) for k, v in row.items()} for row in rows]


def limit_tags(tags: Any) -> str:
    """A message's limits, short: ``rate api_calls[tenant-a], concurrency reports``."""
    if not tags:
        return "-"
    return ", ".join(
        f"{t['kind']} {t['name']}" + (f"[{t['key']}]" if t.get("key") else "") for t in tags
    )


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
        ("limits", limit_tags(shown.get("limits"))),
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
