"""Dead-letter retention settings, read from transport options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import OPTIONS, check_option
from .model import RetentionPolicy


def retention_from_options(options: Mapping[str, Any]) -> RetentionPolicy:
    """``dead_letter_ttl_seconds`` (default 7 days) and ``dead_letter_max_per_queue`` (10,000),
    checked as :data:`tq_kombu.options.OPTIONS` says."""
    values = {}
    for name in ("dead_letter_ttl_seconds", "dead_letter_max_per_queue"):
        given = options.get(name)
        values[name] = OPTIONS[name].default if given is None else check_option(name, given)
    return RetentionPolicy(
        ttl_seconds=values["dead_letter_ttl_seconds"],
        max_per_queue=values["dead_letter_max_per_queue"],
    )
