"""``tq limits ls | set | rm``: cluster-wide limits, and the limits part of ``tq stats``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from tq_kombu.errors import ConfigurationError
from tq_kombu.store.model import LimitStatus

from ..limits.config import checked_concurrency
from ..limits.definitions import concurrency_definition, rate_definition, rate_text
from ..limits.runtime import checked_rate
from .group import tq
from .output import EXIT_NOT_FOUND, EXIT_USAGE, Command, admin_for, emit, fail, json_option, table

COLUMNS = ["limit", "kind", "rule", "origin", "keys", "waiting", "running", "recent"]


def status_fields(status: LimitStatus) -> dict[str, Any]:
    """One limit as a JSON object: its definition, readable rule, keys and totals."""
    definition = status.definition
    return {
        **asdict(definition),
        "rule": rate_text(definition),
        "keys": [asdict(key) for key in status.keys],
        "waiting": sum(key.waiting for key in status.keys),
        "running": sum(key.running for key in status.keys),
        "recent_starts": status.recent_starts,
        "window_seconds": status.window_seconds,
    }


def limit_table(rows: list[dict[str, Any]]) -> None:
    """One line per limit: rule, origin, keys, waiting and running messages, recent rate."""
    table(
        [
            {
                **row,
                "limit": row["name"],
                "keys": len(row["keys"]),
                "recent": f"{row['recent_starts'] / row['window_seconds']:.2f}/s "
                f"({row['recent_starts']} in {row['window_seconds']:g}s)",
            }
            for row in rows
        ],
        COLUMNS,
    )


def limit_rows(admin: Any) -> list[dict[str, Any]]:
    return [status_fields(status) for status in admin.limit_statuses()]


@tq.group(name="limits")
def limits_group() -> None:
    """Cluster-wide rate and concurrency limits: list, set at run time, remove."""


@limits_group.command(name="ls", cls=Command)
@click.option("--keys", "with_keys", is_flag=True, help="Also list each limit's keys.")
@json_option
@click.pass_context
def list_limits(ctx: click.Context, with_keys: bool, as_json: bool) -> None:
    """Every defined limit: rule, origin (settings or runtime), keys, waiting, running."""
    with admin_for(ctx) as admin:
        rows = limit_rows(admin)

    def show() -> None:
        limit_table(rows)
        if with_keys:
            for row in rows:
                for key in row["keys"]:
                    click.echo(
                        f"  {row['name']} [{key['key'] or '-'}]: waiting {key['waiting']}, "
                        f"running {key['running']}"
                    )

    emit(as_json, rows, show)


@limits_group.command(name="set", cls=Command)
@click.argument("name")
@click.argument("rate", required=False)
@click.option("--burst", type=int, default=0, show_default=True, help="Starts over the rate.")
@click.option("--concurrency", type=int, help="A concurrency limit: this many at once.")
@json_option
@click.pass_context
def set_limit(
    ctx: click.Context,
    name: str,
    rate: str | None,
    burst: int,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Set NAME to RATE ('10/s', '100/m') or --concurrency N, for every worker's next fetch."""
    if (rate is None) == (concurrency is None):
        fail("give a RATE such as '10/s' or --concurrency N (one of them)", EXIT_USAGE)
    try:
        if rate is not None:
            definition = rate_definition(name, checked_rate(rate, None, burst), "runtime")
        else:
            assert concurrency is not None
            slots = checked_concurrency(concurrency, "--concurrency")
            definition = concurrency_definition(name, slots, "runtime")
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    with admin_for(ctx) as admin:
        admin.set_limit(definition)
    emit(
        as_json,
        {**asdict(definition), "rule": rate_text(definition)},
        lambda: click.echo(f"{name}: {rate_text(definition)} (runtime)"),
    )


@limits_group.command(name="rm", cls=Command)
@click.argument("name")
@json_option
@click.pass_context
def remove_limit(ctx: click.Context, name: str, as_json: bool) -> None:
    """Forget NAME (its tasks then start unlimited until a worker writes its settings)."""
    with admin_for(ctx) as admin:
        removed = admin.remove_limit(name)
    emit(
        as_json,
        {"name": name, "removed": removed},
        lambda: click.echo(f"{name}: removed" if removed else f"{name}: not defined"),
    )
    if not removed:
        raise SystemExit(EXIT_NOT_FOUND)
