"""``celery -A app tq ...``: see and act on what the tq broker holds.

    tq stats | ls | show | cancel [--cascade] | reprioritize | purge
    tq graph ID [--dot]
    tq workers [--live] [--forget-lost]
    tq limits ls | limits set NAME RATE|--concurrency N | limits rm NAME
    tq dlq ls | dlq show | dlq retry | dlq purge
    tq keygen

Readable output by default, ``--json`` for scripts. Exit codes: 0 done, 1 not found
(unknown message id, or a message not in a state the command acts on), 2 usage
error (bad option, unknown queue, bad filter). Errors are one line on stderr, and
a command that fails changes nothing.
"""

from __future__ import annotations

import click

from tq_kombu.errors import ConfigurationError

from . import dead_letters, dependencies, limits, messages, workers  # noqa: F401  (they register commands)
from .group import tq
from .output import EXIT_USAGE, Command, fail

__all__ = ["tq"]


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
