"""Drain figures: a real worker over a backlog, and the same at depth (a million ready)."""

from __future__ import annotations

import time

from .publish import in_bulk
from .servers import Target, child, start_worker, stop_worker, wait_until


def drain(target: Target, count: int, pool: list[str], prefetch: int = 4) -> float:
    """Tasks per second a worker drains from a backlog of ``count`` published one by one,
    timed from the moment the backlog first shrinks until nothing is ready or unacked."""
    target.flush()
    child(target, "publish", str(count), "0")
    if target.backlog() != count:
        raise RuntimeError(f"{target.name}: the backlog of {count} was not fully published")
    return _timed(target, count, count, pool, prefetch)


def depth(target: Target, depth: int, window: int) -> dict[str, float]:
    """Drain rate of a solo worker over the first ``window`` tasks of a backlog of
    ``depth`` (built with ``tq_kombu.bulk``), and on Redis the ``used_memory`` bytes per
    queued message."""
    built = in_bulk(target, depth - 1, "bulk")  # plus the warm-up message: depth
    rate = _timed(target, depth, min(window, depth), ["--pool", "solo"], 4)
    return {"rate": rate, **({"bytes/msg": built["bytes/msg"]} if "bytes/msg" in built else {})}


def _timed(target: Target, count: int, window: int, pool: list[str], prefetch: int) -> float:
    worker = start_worker(target.environment(BENCH_PREFETCH=str(prefetch)), pool)
    try:
        wait_until(lambda: target.backlog() < count, 120, f"the {target.name} worker to start")
        started = time.perf_counter()
        wait_until(lambda: target.backlog() <= count - window, 1800, "the backlog to drain")
        return window / (time.perf_counter() - started)
    finally:
        stop_worker(worker)
