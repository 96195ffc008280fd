"""``tq_kombu.bulk(app)``: every task published inside is stored in one atomic step.

    with tq_kombu.bulk(app):
        for user in users:
            send_email.delay(user)     # buffered in this thread
    # here every message is stored, or (on an error) none is

Routing, priorities, ETA, encryption and dependencies apply exactly as for a plain
publish; only the store write is deferred to the end of the block (see
:mod:`tq_kombu.batch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .appconf import uses_tq
from .batch import Batch, batch
from .errors import ConfigurationError


@contextmanager
def bulk(app: Any) -> Iterator[Batch]:
    """Buffer what this thread publishes to ``app``'s broker; store it all at exit."""
    with app.connection_for_write() as connection:
        if not uses_tq(connection):
            raise ConfigurationError(
                f"tq_kombu.bulk needs the tq broker, but app {app.main!r} uses "
                f"{connection.transport_cls!r}: set broker_url to tq+redis:// or tq+sqlite://"
            )
    with batch() as opened:
        yield opened
