"""What an app's settings and tasks say about limits: the definitions and, per task, a plan.

Settings (Celery style, on ``app.conf``)::

    tq_rate_limits = {"api_calls": "100/m", "search": {"rate": "10/s", "burst": 5}}
    tq_concurrency_limits = {"heavy_reports": 2}

Task attributes (``@app.task(...)`` options)::

    tq_rate_limit="api_calls"       a name from tq_rate_limits (task types may share it),
                  "10/s"            or an inline rate: a limit of this task type alone,
                                    named "@<task name>" (names in settings never start with "@")
    tq_concurrency_limit="heavy_reports"    a name from tq_concurrency_limits
    tq_limit_key=lambda args, kwargs: kwargs["tenant"]   or "package.module.function":
                                    the limits apply to each key separately

A task naming an unknown limit, a malformed rate or concurrency, or a key function
that cannot be loaded is a :class:`~tq_kombu.errors.ConfigurationError` naming the task
or the setting; :mod:`.startup` raises it when a worker starts.
"""

from __future__ import annotations

import difflib
import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celery.local import Proxy
from kombu.utils.imports import symbol_by_name

from tq_kombu.errors import ConfigurationError
from tq_kombu.limit_headers import MAX_NAME_CHARS

from .rates import Rate, parse_rate

RATE_SETTING = "tq_rate_limits"
CONCURRENCY_SETTING = "tq_concurrency_limits"
TASK_RATE = "tq_rate_limit"
TASK_CONCURRENCY = "tq_concurrency_limit"
TASK_KEY = "tq_limit_key"
#: Inline rates are named after their task with this prefix.
INLINE_PREFIX = "@"
MAX_CONCURRENCY = 1_000_000

KeyFunction = Callable[[Any, Any], object]


class Kind(enum.StrEnum):
    RATE = "rate"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True)
class LimitRef:
    """One limit a task is under."""

    kind: Kind
    name: str


@dataclass(frozen=True)
class TaskPlan:
    """The limits one task type is under, and how a message's key is computed."""

    task_name: str
    limits: tuple[LimitRef, ...]
    #: ``(args, kwargs) -> str``; None: one key ("") for every message.
    key_function: KeyFunction | None = None


@dataclass(frozen=True)
class Definitions:
    """The limits an app defines (inline rates included, under their ``@`` names)."""

    rates: Mapping[str, Rate]
    concurrency: Mapping[str, int]


def read_definitions(conf: Any) -> Definitions:
    """The named limits in ``tq_rate_limits`` and ``tq_concurrency_limits``."""
    rates = {
        name: parse_rate(value, f"{RATE_SETTING}[{name!r}]")
        for name, value in _setting(conf, RATE_SETTING).items()
    }
    concurrency = {
        name: checked_concurrency(value, f"{CONCURRENCY_SETTING}[{name!r}]")
        for name, value in _setting(conf, CONCURRENCY_SETTING).items()
    }
    return Definitions(rates, concurrency)


def _setting(conf: Any, setting: str) -> dict[str, Any]:
    value = conf.get(setting) if hasattr(conf, "get") else getattr(conf, setting, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{setting} = {value!r} is not a dict: map limit names to limits, "
            "e.g. {'api_calls': '100/m'}"
        )
    for name in value:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise ConfigurationError(
                f"{setting} has the name {name!r}: a limit name is a non-empty string "
                f"of at most {MAX_NAME_CHARS} characters"
            )
        if name.startswith(INLINE_PREFIX):
            raise ConfigurationError(
                f"{setting} has the name {name!r}: names starting with "
                f"{INLINE_PREFIX!r} are kept for inline rates; rename it"
            )
    return dict(value)


def checked_concurrency(value: object, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"{setting} = {value!r} is not a concurrency: give how many may run at once, "
            f"a whole number in 1..{MAX_CONCURRENCY}, e.g. 2"
        )
    return value


def plan_task(task: Any, definitions: Definitions) -> tuple[TaskPlan | None, Rate | None]:
    """The plan of one task (None: no limits) and its inline rate, if it has one."""
    if isinstance(task, Proxy):  # a task of an app not finalized yet
        task = task._get_current_object()
    name = str(task.name)
    limits: list[LimitRef] = []
    inline: Rate | None = None
    rate_limit = getattr(task, TASK_RATE, None)
    if rate_limit is not None:
        if isinstance(rate_limit, str) and rate_limit in definitions.rates:
            limits.append(LimitRef(Kind.RATE, rate_limit))
        elif isinstance(rate_limit, Mapping) or (isinstance(rate_limit, str) and "/" in rate_limit):
            inline = parse_rate(rate_limit, f"task {name!r}: {TASK_RATE}")
            limits.append(LimitRef(Kind.RATE, INLINE_PREFIX + name))
        else:
            raise unknown_limit(name, TASK_RATE, rate_limit, RATE_SETTING, definitions.rates)
    concurrency = getattr(task, TASK_CONCURRENCY, None)
    if concurrency is not None:
        if not isinstance(concurrency, str) or concurrency not in definitions.concurrency:
            raise unknown_limit(
                name, TASK_CONCURRENCY, concurrency, CONCURRENCY_SETTING, definitions.concurrency
            )
        limits.append(LimitRef(Kind.CONCURRENCY, concurrency))
    key_function = _key_function(name, _unbound(task, TASK_KEY))
    if not limits:
        if key_function is not None:
            raise ConfigurationError(
                f"task {name!r} has {TASK_KEY} but no limit to apply it to: give it "
                f"{TASK_RATE} or {TASK_CONCURRENCY} as well, or drop {TASK_KEY}"
            )
        return None, None
    return TaskPlan(name, tuple(limits), key_function), inline


def unknown_limit(
    task: str, attribute: str, value: object, setting: str, defined: Mapping[str, Any]
) -> ConfigurationError:
    """The error for a task naming a limit its app does not define."""
    if isinstance(value, str) and defined:
        names = difflib.get_close_matches(value, list(defined), n=len(defined), cutoff=0.0)
        listed = f"defined there: {', '.join(map(repr, names))}"
    else:
        listed = "none is defined there"
    example = " (or an inline rate such as '10/s')" if attribute == TASK_RATE else ""
    return ConfigurationError(
        f"task {task!r} has {attribute}={value!r}, which is not a limit in {setting} "
        f"({listed}); name one of them{example} or add it to {setting}"
    )


def _unbound(task: Any, attribute: str) -> object:
    """A task attribute as it was given: Celery makes task options class attributes, so
    ``getattr`` would bind a function given as ``tq_limit_key`` to the task."""
    value = inspect.getattr_static(task, attribute, None)
    return value.__func__ if isinstance(value, (staticmethod, classmethod)) else value


def _key_function(task: str, value: object) -> KeyFunction | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = symbol_by_name(value)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"task {task!r} has {TASK_KEY}={value!r}, which cannot be imported ({exc}); "
                "give a dotted path 'package.module.function' or a callable"
            ) from None
    if not callable(value):
        raise ConfigurationError(
            f"task {task!r} has {TASK_KEY}={value!r}, which is not callable; give a "
            "function (args, kwargs) -> str or its dotted path"
        )
    function: KeyFunction = value
    return function


@dataclass(frozen=True)
class AppLimits:
    """Every limit of an app and the plan of every task under one."""

    definitions: Definitions
    plans: Mapping[str, TaskPlan]


def app_limits(app: Any) -> AppLimits:
    """Read and check an app's settings and all its registered tasks (raises the first
    :class:`ConfigurationError`)."""
    definitions = read_definitions(app.conf)
    plans: dict[str, TaskPlan] = {}
    rates = dict(definitions.rates)
    for name in sorted(app.tasks):
        plan, inline = plan_task(app.tasks[name], definitions)
        if plan is None:
            continue
        plans[name] = plan
        if inline is not None:
            rates[INLINE_PREFIX + name] = inline
    return AppLimits(Definitions(rates, dict(definitions.concurrency)), plans)
