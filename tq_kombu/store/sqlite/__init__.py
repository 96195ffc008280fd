"""SQLiteStore: the embedded default store — zero servers, one machine.

All messages live in one SQLite database file in WAL mode, so readers never block the
writer; several worker processes on one machine and several threads of one process
may share the file. The store is composed of one class per slice of the Store contract
over one :class:`~.db.Database`:

=====================  ==========================================================
module                 holds
=====================  ==========================================================
``db.py``              the Database: connections per thread, fork safety,
                       ``BEGIN IMMEDIATE``, SQLite errors translated with hints
``schema.py``          tables, indexes, the triggers keeping counts, migrations
``rows.py``            reading rows; a row that cannot be read goes dead, corrupt
``hot_path.py``        enqueue, fetch, take, renew, settle (``fetching.py``: the
                       steps of one fetch)
``waiter.py``          the wait (``PRAGMA data_version`` polling) and its waiter
``dead_letters.py``    bury by id, replay, retention, failure records
``inspection.py``      counts, levels, info, find by task, lists, payloads
``administration.py``  cancel, set priority, release waiting, purge, delete
``routing.py``         bindings and queue lifetimes
``workers.py``         heartbeats
``dependencies.py``    graphs stored at once, completions, the graph around a task
                       (``cascade.py``: its steps; ``publishing.py``: storing one
                       message, plain or dependent)
``limits.py``          limit definitions and status (``lanes.py``: limits at
                       fetch: lanes, GCRA state, concurrency slots)
=====================  ==========================================================
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from ...options import check_option, names
from ...urls import sqlite_path
from ..contract import Store
from ..retention import retention_from_options
from .administration import SQLiteAdministration
from .db import Database
from .dead_letters import SQLiteDeadLetters
from .dependencies import SQLiteDependencies
from .hot_path import SQLiteHotPath
from .inspection import SQLiteInspection
from .limits import SQLiteLimits
from .routing import SQLiteRouting
from .schema import SCHEMA_VERSION
from .waiter import SQLiteWaiting
from .workers import SQLiteWorkers

__all__ = ["SCHEMA_VERSION", "Database", "SQLiteStore", "path_from_url"]


def path_from_url(url: str) -> str:
    """The database path in a ``sqlite:///...`` URL (see :func:`tq_kombu.urls.sqlite_path`):
    ``sqlite:///queue.db`` is relative, ``sqlite:////var/lib/tq/queue.db`` absolute."""
    return sqlite_path(url)


class SQLiteStore(
    SQLiteWaiting,
    SQLiteHotPath,
    SQLiteDeadLetters,
    SQLiteInspection,
    SQLiteAdministration,
    SQLiteRouting,
    SQLiteWorkers,
    SQLiteDependencies,
    SQLiteLimits,
    Store,
):
    """A :class:`~tq_kombu.store.contract.Store` in one SQLite file (WAL mode)."""

    driver_type = "sqlite"

    #: Seconds a statement waits for another connection's write lock before failing.
    busy_timeout_seconds: float = 30.0
    #: ``PRAGMA synchronous``: FULL survives power loss; NORMAL is faster and in WAL
    #: mode still loses nothing when a process crashes.
    synchronous: str = "FULL"

    #: Options :meth:`from_url` takes (see :data:`tq_kombu.options.OPTIONS`); any other
    #: option is ignored.
    options = names("sqlite")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval_seconds: float | None = None,
        busy_timeout_seconds: float | None = None,
        synchronous: str | None = None,
    ) -> None:
        """Open (lazily) the database at ``path``; a relative path is taken relative to
        the current working directory now, not when the file is first opened."""
        if poll_interval_seconds is not None:
            self.poll_interval_seconds = check_option(
                "poll_interval_seconds", poll_interval_seconds
            )
        if busy_timeout_seconds is not None:
            self.busy_timeout_seconds = check_option("busy_timeout_seconds", busy_timeout_seconds)
        if synchronous is not None:
            self.synchronous = check_option("synchronous", synchronous)
        self.path = os.path.abspath(os.fspath(path))
        self.db = Database(
            self.path,
            busy_timeout_seconds=self.busy_timeout_seconds,
            synchronous=self.synchronous,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Open the store a ``sqlite:///path`` URL names.

        Everything after ``sqlite:///`` is the path: ``sqlite:///queue.db`` is relative
        to the working directory, ``sqlite:////var/lib/tq/queue.db`` is absolute (see
        :func:`path_from_url`). Takes the options listed in :attr:`options`; ignores
        every other option, since the transport passes all of its transport options
        through.
        """
        known = {name: options[name] for name in cls.options if options.get(name) is not None}
        store = cls(path_from_url(url), **known)
        store.retention = retention_from_options(options)
        return store

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (tests and diagnostics)."""
        return self.db.connection()

    def ping(self) -> None:
        """Open the database (creating it if needed) and run a trivial query."""
        with self.db.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection this process opened; the next call reconnects."""
        self.db.close()
