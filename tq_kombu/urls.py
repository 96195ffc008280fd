"""Broker URLs: which store a tq broker URL names, checked before anything connects.

Every form a user can write, and what it names:

- ``tq+redis://[user:password@]host[:port][/db]`` and ``tq+rediss://...`` (TLS): Redis;
- ``tq+sqlite:///relative/path.db`` and ``tq+sqlite:////absolute/path.db``: SQLite;
- ``tq+memory://[name]``: the reference store in this process's memory (unit tests);
- the settings-only form, ``broker_transport = "tq_kombu.transport:Transport"`` with a
  plain ``redis://``, ``rediss://`` or ``sqlite:///`` URL: the same stores.

Anything else (an unknown scheme, a Redis URL without a host, a SQLite URL without a
file or with a host, no URL at all) is a :class:`~tq_kombu.errors.ConfigurationError`
naming the URL as written (password masked). Nothing ever falls back to a default host.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigurationError

#: Store schemes, after the ``tq+`` prefix (or plain, with ``broker_transport``).
SCHEMES = ("redis", "rediss", "sqlite", "memory")
FORMS = (
    "tq+redis://host:port/db, tq+rediss://host:port/db (TLS), "
    "tq+sqlite:///relative/path.db or tq+sqlite:////absolute/path.db"
)


def shown(url: str) -> str:
    """``url`` fit for an error message or a log: its password masked, nothing else changed."""
    head, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}{sep}{user}:**@{host}{slash}{path}"


def broker_url_of(client: Any) -> str:
    """The broker URL a kombu Connection was given for tq, as the user wrote it.

    The transport sets ``can_parse_url``, so kombu hands over the whole URL as the
    hostname (``tq+`` split off into ``uri_prefix``) instead of parsing it and filling
    in ``localhost`` where a part is missing."""
    hostname = client.hostname
    if not hostname:
        raise ConfigurationError(
            f"tq has no broker URL: set broker_url to one of {FORMS} "
            "(tq never assumes a default host)"
        )
    hostname = str(hostname)
    prefix = getattr(client, "uri_prefix", None)
    return f"{prefix}+{hostname}" if prefix else hostname


def store_url(broker_url: str) -> str:
    """The store URL a broker URL names, checked (``tq+redis://h/0`` -> ``redis://h/0``)."""
    head, sep, _ = broker_url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"tq broker {shown(broker_url)!r} is not a URL: use one of {FORMS}"
        )
    inner = broker_url[3:] if head.lower().startswith("tq+") else broker_url
    check_store_url(inner, broker_url)
    return inner


def check_store_url(url: str, as_written: str | None = None) -> None:
    """Raise ConfigurationError (naming ``as_written``) unless ``url`` names a store."""
    written = shown(as_written or url)
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        sqlite_path(url, as_written)
        return
    if scheme == "memory":  # the reference store, one process only (tests)
        return
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(
            f"tq cannot store on {written!r}: unknown scheme {scheme!r}; use one of {FORMS}"
        )
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigurationError(
            f"Redis URL {written!r} names no host: write it as {scheme}://host:port/db "
            "(tq never assumes localhost)"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(
            f"Redis URL {written!r} has a bad port: use a number from 1 to 65535"
        )
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigurationError(
            f"Redis URL {written!r} names database {db!r}: the path is a database "
            f"number, as in {scheme}://host:port/0"
        )


def sqlite_path(url: str, as_written: str | None = None) -> str:
    """The database path in a ``sqlite:///...`` URL (kombu/SQLAlchemy rule).

    Everything after ``sqlite:///`` is the path, percent-decoded:
    ``sqlite:///queue.db`` and ``sqlite:///data/queue.db`` are relative to the
    working directory, ``sqlite:////var/lib/tq/queue.db`` (four slashes) is
    absolute, which is what ``f"sqlite:///{absolute_path}"`` produces.
    """
    written = shown(as_written or url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ConfigurationError(
            f"{written!r} is not a SQLite URL: use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    if rest and not rest.startswith("/"):
        raise ConfigurationError(
            f"SQLite URL {written!r} names a host ({rest.split('/', 1)[0]!r}); a SQLite store "
            "is a local file: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if "?" in rest or "#" in rest:
        raise ConfigurationError(
            f"SQLite URL {written!r} has a query or fragment: tq takes SQLite options as "
            "transport options (broker_transport_options), not in the URL; "
            "percent-encode '?' and '#' if they are part of the file name"
        )
    path = unquote(rest[1:])
    if not path or path == ":memory:" or path.endswith("/"):
        raise ConfigurationError(
            f"SQLite URL {written!r} names no file: tq needs a database file that every worker "
            "process can open, e.g. sqlite:///queue.db or sqlite:////var/lib/tq/queue.db"
        )
    return path
