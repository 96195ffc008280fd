"""Cluster-wide rate and concurrency limits, per key, fair, held in the broker.

This package holds what does not depend on storage: rates and their parsing
(:mod:`.rates`), the GCRA every store mirrors (:mod:`.gcra`), the concurrency and
fairness models (:mod:`.concurrency`), an app's settings and tasks read into per-task
plans (:mod:`.config`), each message's limits and key put in its headers at publish
(:mod:`.keys`) and the check at worker start (:mod:`.startup`). How the stores will
apply them is described in docs/architecture.md ("Limits: what the stores will do").
"""

from __future__ import annotations

from typing import Any

from tq_kombu.errors import LimitKeyError
from tq_kombu.limit_headers import LIMIT_ERROR_HEADER, LIMITS_HEADER

from .config import AppLimits, Definitions, Kind, LimitRef, TaskPlan, app_limits
from .gcra import Grant, decide, take
from .keys import PublishTagger
from .rates import Rate, parse_rate
from .startup import StartupCheck

__all__ = [
    "LIMITS_HEADER",
    "LIMIT_ERROR_HEADER",
    "AppLimits",
    "Definitions",
    "Grant",
    "Kind",
    "LimitKeyError",
    "LimitRef",
    "PublishTagger",
    "Rate",
    "StartupCheck",
    "TaskPlan",
    "app_limits",
    "connect",
    "decide",
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
