"""Dead-letter retention settings, read from transport options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from .base import RetentionPolicy


def retention_from_options(options: Mapping[str, Any]) -> RetentionPolicy:
    """``dead_letter_ttl_seconds`` (default 7 days) and ``dead_letter_max_per_queue`` (10,000)."""
    default = RetentionPolicy()
    try:
        ttl = float(options.get("dead_letter_ttl_seconds", default.ttl_seconds))
        most = int(options.get("dead_letter_max_per_queue", default.max_per_queue))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"dead_letter_ttl_seconds and dead_letter_max_per_queue must be numbers: {exc}"
        ) from exc
    if ttl <= 0 or most < 1:
        raise ConfigurationError(
            "dead_letter_ttl_seconds must be > 0 and dead_letter_max_per_queue >= 1, "
            f"got {ttl} and {most}"
        )
    return RetentionPolicy(ttl_seconds=ttl, max_per_queue=most)
