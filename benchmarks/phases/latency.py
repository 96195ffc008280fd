"""Idle pickup latency: a worker idle on an empty queue, one task published at a time."""

from __future__ import annotations

from .servers import Target, child, start_worker, stop_worker


def pickup(target: Target, samples: int) -> dict[str, float]:
    """p50 and p95 of publish-to-start over ``samples`` tasks to an idle solo worker."""
    target.flush()
    worker = start_worker(target.environment(), ["--pool", "solo"])
    try:
        return child(target, "latency", str(samples))
    finally:
        stop_worker(worker)
