"""Changing limits while workers run: ``tq_celery_ext.limits_of(app)``.

    limits = tq_celery_ext.limits_of(app)
    limits.set_rate("api_calls", 50, per_seconds=60)     # or set_rate("api_calls", "50/m")
    limits.set_concurrency("heavy_reports", 4)
    limits.status("api_calls")      # LimitStatus: definition, keys, waiting, running
    limits.all()                    # every defined limit
    limits.remove("api_calls")      # back to the settings the next worker writes

(The package ``tq_celery_ext.limits`` holds the limits' code, hence the name
``limits_of``.) A change is stored in the broker and obeyed at every consumer's next
fetch; a worker starting later does not overwrite it with its settings until it is
removed.
"""

from __future__ import annotations

import os
from typing import Any

from tq_kombu.admin import Admin
from tq_kombu.errors import ConfigurationError
from tq_kombu.store.model import LimitDefinition, LimitStatus

from .config import checked_concurrency
from .definitions import concurrency_definition, rate_definition
from .rates import MAX_BURST, MAX_PERIOD_SECONDS, MICROSECONDS, Rate, parse_rate


def checked_rate(limit: int | str, per_seconds: float | None, burst: int) -> Rate:
    """A :class:`Rate` from ``(50, 60)`` or ``("50/m", None)``, checked like settings."""
    if isinstance(burst, bool) or not isinstance(burst, int) or not 0 <= burst <= MAX_BURST:
        raise ConfigurationError(f"burst must be a whole number in 0..{MAX_BURST}, got {burst!r}")
    if isinstance(limit, str):
        if per_seconds is not None:
            raise ConfigurationError(
                f"set_rate({limit!r}, per_seconds={per_seconds!r}): give a rate text such as "
                "'50/m' alone, or a count with per_seconds"
            )
        return parse_rate({"rate": limit, "burst": burst}, "set_rate")
    per = 1.0 if per_seconds is None else per_seconds
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"a rate's limit is a whole number >= 1, got {limit!r}")
    if (
        isinstance(per, bool)
        or not isinstance(per, (int, float))
        or not 0 < per <= MAX_PERIOD_SECONDS
        or round(per * MICROSECONDS) < limit
    ):
        raise ConfigurationError(
            f"per_seconds must be in (0, {MAX_PERIOD_SECONDS}] with at most 1,000,000 starts "
            f"per second, got limit={limit!r} per_seconds={per_seconds!r}"
        )
    return Rate(limit, float(per), burst)


class LimitControl:
    """The run-time limits of one app's broker (one store connection per process)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._admin: Admin | None = None
        self._pid = 0

    @property
    def admin(self) -> Admin:
        if self._admin is None or self._pid != os.getpid():
            self._admin = Admin.from_app(self.app)
            self._pid = os.getpid()
        return self._admin

    def close(self) -> None:
        if self._admin is not None and self._pid == os.getpid():
            self._admin.close()
        self._admin = None

    def set_rate(
        self, name: str, limit: int | str, per_seconds: float | None = None, burst: int = 0
    ) -> LimitDefinition:
        """At most ``limit`` starts per ``per_seconds`` (default 1), plus ``burst``."""
        definition = rate_definition(name, checked_rate(limit, per_seconds, burst), "runtime")
        self.admin.set_limit(definition)
        return definition

    def set_concurrency(self, name: str, n: int) -> LimitDefinition:
        """At most ``n`` running at once per key."""
        slots = checked_concurrency(n, f"set_concurrency({name!r})")
        definition = concurrency_definition(name, slots, "runtime")
        self.admin.set_limit(definition)
        return definition

    def remove(self, name: str) -> bool:
        """Forget a limit; False if it was not defined."""
        return self.admin.remove_limit(name)

    def status(self, name: str) -> LimitStatus | None:
        """A limit's definition, keys, waiting and running; None when not defined."""
        return self.admin.limit_status(name)

    def all(self) -> list[LimitDefinition]:
        """Every defined limit, by name."""
        return self.admin.limits()


def limits_of(app: Any) -> LimitControl:
    """The run-time limits of ``app``'s broker (kept on the app: one per app)."""
    control = getattr(app, "_tq_limit_control", None)
    if control is None:
        control = LimitControl(app)
        app._tq_limit_control = control
    return control
