"""The ``tq`` command group that every tq command belongs to."""

from __future__ import annotations

import click
from celery.bin.base import handle_preload_options


@click.group(name="tq")
@click.pass_context
@handle_preload_options
def tq(ctx: click.Context) -> None:
    """Inspect and administer the tq broker: queues, messages, dead letters, keys."""
