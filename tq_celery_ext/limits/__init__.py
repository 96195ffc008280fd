"""Cluster-wide rate and concurrency limits, per key, fair, held in the broker.

This package holds what does not depend on storage: rates and their parsing
(:mod:`.rates`), the GCRA every store mirrors (:mod:`.gcra`), the concurrency and
fairness models (:mod:`.concurrency`), an app's settings and tasks read into per-task
plans (:mod:`.config`), each message's limits and key put in its headers at publish
(:mod:`.keys`), the check at worker start that then stores the app's limits
(:mod:`.startup`, :mod:`.definitions`) and run-time changes (:mod:`.runtime`,
``tq_celery_ext.limits_of(app)``). The store applies them at fetch (see
:mod:`tq_kombu.store.contract.limits`).
"""

from __future__ import annotations

from typing import Any

from tq_kombu.errors import LimitKeyError
from tq_kombu.limit_headers import LIMIT_ERROR_HEADER, LIMITS_HEADER

from .config import AppLimits, Definitions, Kind, LimitRef, TaskPlan, app_limits
from .gcra import Grant, decide, take
from .keys import PublishTagger
from .rates import Rate, parse_rate
from .runtime import LimitControl, limits_of
from .startup import StartupCheck

__all__ = [
    "LIMITS_HEADER",
    "LIMIT_ERROR_HEADER",
    "AppLimits",
    "Definitions",
    "Grant",
    "Kind",
    "LimitKeyError",
    "LimitControl",
    "LimitRef",
    "PublishTagger",
    "Rate",
    "StartupCheck",
    "TaskPlan",
    "app_limits",
    "connect",
    "decide",
    "limits_of",
    "parse_rate",
    "take",
]


def connect(app: Any) -> tuple[PublishTagger, StartupCheck]:
    """Tag this app's published messages with their limits, and check its limits when a
    worker starts."""
    tagger = PublishTagger(app)
    tagger.connect()
    check = StartupCheck(app)
    check.connect()
    return tagger, check
