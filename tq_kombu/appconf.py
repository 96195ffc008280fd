"""What a Celery app's settings say about its tq broker, read the way kombu reads them.

- :func:`broker_of`: the broker URL, transport options and TLS options of the app's
  kombu connection (so ``tq+redis://...`` and the settings-only form agree);
- :func:`declared_queues`: every queue the app names (``task_queues``, the default
  queue, routes, tasks' own ``queue``), whether it holds messages or not;
- :func:`check_worker_setup`: connected to Celery's ``celeryd_init`` (sent by
  ``celery worker`` before it builds anything), it checks the broker URL, the transport
  options, the key ring and the store, and turns a setup error into one line on stderr
  and exit code 1 instead of a long traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from .errors import ConfigurationError, StoreUnavailable, TQError
from .urls import broker_url_of, shown

#: Exit code of a worker that cannot start because tq is set up wrong.
EXIT_SETUP = 1


def uses_tq(connection: Any) -> bool:
    """Whether a kombu Connection goes through the tq transport."""
    from .transport import Transport

    try:
        cls = connection.get_transport_cls()
    except Exception:  # noqa: BLE001 - an unloadable transport is not tq
        return False
    return isinstance(cls, type) and issubclass(cls, Transport)


def broker_of(app: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The broker URL (as written), transport options and TLS options of a Celery app."""
    connection = app.connection_for_write()
    if not uses_tq(connection):
        written = app.conf.broker_write_url or app.conf.broker_url
        raise ConfigurationError(
            f"the broker {shown(str(written))!r} is not a tq broker: set broker_url to "
            "'tq+redis://...' or 'tq+sqlite:///...' (after `import tq_kombu`), or "
            "broker_transport = 'tq_kombu.transport:Transport'"
        )
    ssl = connection.ssl if isinstance(connection.ssl, dict) else {}
    return broker_url_of(connection), dict(connection.transport_options or {}), dict(ssl)


def _route_queues(routes: Any) -> Iterable[str]:
    for route in routes if isinstance(routes, (list, tuple)) else [routes]:
        if not isinstance(route, dict):
            continue  # a router function or class: its queues cannot be listed
        for target in route.values():
            queue = target.get("queue") if isinstance(target, dict) else target
            name = getattr(queue, "name", queue)
            if isinstance(name, str) and name:
                yield name


def declared_queues(app: Any) -> list[str]:
    """Every queue the app names: ``task_queues`` (or the default queue), routes given
    as dicts, and tasks' own ``queue`` attribute, in that order, without repeats."""
    conf = app.conf
    names: list[str] = [*sorted(app.amqp.queues), conf.task_default_queue]
    names += _route_queues(conf.task_routes or ())
    for task in list(app.tasks.values()):
        queue = getattr(task, "queue", None)
        if isinstance(queue, str) and queue:
            names.append(queue)
    return list(dict.fromkeys(n for n in names if n))


def check_worker_setup(
    sender: Any = None, conf: Any = None, instance: Any = None, **_: Any
) -> None:
    """``celeryd_init`` handler: a tq setup error ends the worker with one line.

    A store that cannot be reached is left to Celery (it retries, as
    ``broker_connection_retry_on_startup`` says) unless that retry is off."""
    app = getattr(instance, "app", None)
    if app is None:
        return
    try:
        connection = app.connection_for_read()
        if not uses_tq(connection):
            return
        transport = connection.transport  # checks the URL, the options and the key ring
        try:
            transport.store.ping()
        except StoreUnavailable:
            if _retries_on_startup(app.conf):
                return
            raise
        finally:
            transport.store.close()
            connection.release()
    except TQError as exc:
        written = app.conf.broker_read_url or app.conf.broker_url
        url = shown(str(written)) if written else ""
        if isinstance(exc, StoreUnavailable):
            hint = (
                f"is the store at {url!r} up? set broker_connection_retry_on_startup=True "
                "to wait for it"
            )
        else:
            hint = f"broker {url!r}: " if url else ""
            hint += "check broker_url and broker_transport_options"
        sys.stderr.write(f"error: tq cannot start: {exc}\n  ({hint})\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_SETUP) from None


def _retries_on_startup(conf: Any) -> bool:
    retry = conf.broker_connection_retry_on_startup
    return bool(conf.broker_connection_retry if retry is None else retry)


def connect_worker_setup_check() -> None:
    """Check tq's setup when ``celery worker`` starts (Celery's ``celeryd_init``)."""
    try:
        from celery.signals import celeryd_init
    except ImportError:  # kombu without Celery: nothing to do
        return
    celeryd_init.connect(check_worker_setup, weak=False, dispatch_uid="tq-worker-setup")
