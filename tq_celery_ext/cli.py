"""``celery -A app tq ...``: look at what the tq broker holds."""

from __future__ import annotations

import json
from typing import Any

import click
from celery.bin.base import CeleryCommand, CeleryOption, handle_preload_options

from tq_kombu.store import Store


def open_app_store(app: Any) -> Store:
    """The Store behind the app's broker connection (tq transport only)."""
    with app.connection_for_write() as connection:
        transport = connection.transport
        store = getattr(transport, "store", None)
        if store is None:
            raise click.UsageError(
                f"the broker {connection.as_uri()!r} is not a tq broker: "
                "set broker_url = 'tq+redis://...' or 'tq+sqlite:///...'"
            )
        return store


def app_queue_names(app: Any) -> list[str]:
    queues = app.amqp.queues
    return sorted(queues) or [app.conf.task_default_queue]


@click.group(name="tq")
@click.pass_context
@handle_preload_options
def tq(ctx: click.Context) -> None:
    """Inspect and administer the tq broker."""


@tq.command(cls=CeleryCommand)
@click.option("--queue", "-Q", "queues", multiple=True, help="Queue to show (default: the app's).")
@click.option(
    "--json", "as_json", is_flag=True, cls=CeleryOption, help_group="Output", help="JSON output."
)
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Messages per queue: ready, delayed, waiting, in flight, dead."""
    app = ctx.obj.app
    store = open_app_store(app)
    names = list(queues) or app_queue_names(app)
    rows = {name: store.counts(name).__dict__ for name in names}
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'queue':<24}{'ready':>8}{'delayed':>9}{'waiting':>9}{'inflight':>10}{'dead':>7}"
    click.echo(header)
    for name, c in rows.items():
        click.echo(
            f"{name:<24}{c['ready']:>8}{c['delayed']:>9}{c['waiting']:>9}{c['inflight']:>10}{c['dead']:>7}"
        )


@tq.command(cls=CeleryCommand)
@click.argument("key_id", required=False)
def keygen(key_id: str | None) -> None:
    """Print a fresh encryption key line for TQ_ENCRYPTION_KEYS."""
    from tq_kombu.errors import ConfigurationError
    from tq_kombu.keyring import ENV_VAR, generate_key_line

    try:
        line = generate_key_line(key_id)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(line)
    click.echo(f"# export {ENV_VAR}='{line}'  (put a new key first to rotate)", err=True)
