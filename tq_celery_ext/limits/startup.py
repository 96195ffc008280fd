"""Checking an app's limits when ``celery worker`` starts, before it consumes anything.

Connected to Celery's ``worker_init`` (sent once the worker imported every task
module, ``-I`` includes too): a limit setup error ends the worker with one line on
stderr and exit code 1, as tq's broker setup errors do (:mod:`tq_kombu.appconf`).
Checked limits are then written to the store (``define_limits``, origin ``settings``),
where every consumer's fetch applies them; a limit set at run time is kept.

A concurrency slot is held by the message's lease until it is acknowledged, so a task
under a concurrency limit is made ``acks_late`` here (acknowledged when it ends, not
when it starts): otherwise its slot would free as it starts running.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from tq_kombu.appconf import EXIT_SETUP
from tq_kombu.errors import ConfigurationError

from .config import CONCURRENCY_SETTING, RATE_SETTING, AppLimits, app_limits
from .definitions import store_definitions

logger = logging.getLogger(__name__)

HINT = (
    f"check {RATE_SETTING}, {CONCURRENCY_SETTING} and the tasks' "
    "tq_rate_limit, tq_concurrency_limit and tq_limit_key"
)


class StartupCheck:
    """``worker_init`` receiver for one app: its limits, checked; kept for later use."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.limits: AppLimits | None = None

    def connect(self) -> None:
        from celery.signals import worker_init

        worker_init.connect(
            self.on_worker_init, weak=False, dispatch_uid=f"tq-limits-{id(self.app)}"
        )

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        try:
            self.limits = app_limits(self.app)
        except ConfigurationError as exc:
            sys.stderr.write(f"error: tq cannot start: {exc}\n  ({HINT})\n")
            sys.stderr.flush()
            raise SystemExit(EXIT_SETUP) from None
        hold_slots_while_running(self.app, self.limits)
        write_definitions(self.app, self.limits)


def hold_slots_while_running(app: Any, limits: AppLimits) -> None:
    """Make every task under a concurrency limit ``acks_late`` (its slot lasts its run)."""
    for name, plan in limits.plans.items():
        task = app.tasks[name]
        if any(ref.kind == "concurrency" for ref in plan.limits) and not task.acks_late:
            task.acks_late = True
            logger.info("tq: %s is acks_late: it holds its concurrency slot while it runs", name)


def write_definitions(app: Any, limits: AppLimits) -> None:
    """Store an app's limits for every consumer (nothing to do without a tq broker)."""
    from tq_kombu.admin import Admin
    from tq_kombu.errors import TQError

    definitions = store_definitions(limits.definitions)
    if not definitions:
        return
    try:
        admin = Admin.from_app(app)
    except ConfigurationError as exc:
        logger.warning("tq: limits are not applied (they need the tq broker): %s", exc)
        return
    try:
        admin.define_limits(definitions)
    except TQError as exc:
        logger.error("tq: could not store the limits %s: %s", [d.name for d in definitions], exc)
    finally:
        admin.close()
