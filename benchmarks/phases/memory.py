"""Worker memory: the idle RSS of a worker's whole process tree."""

from __future__ import annotations

import time

import psutil

from .servers import Target, child, start_worker, stop_worker, wait_until


def tree_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of ``pid`` and its descendants, and how many processes that is."""
    root = psutil.Process(pid)
    total, processes = 0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
            processes += 1
        except psutil.NoSuchProcess:
            continue
    return total, processes


def idle_rss(
    target: Target, pool: list[str], after_work: bool = False, settle_seconds: float = 2.0
) -> float:
    """MB of RSS of an idle worker on an empty queue, once its process tree has stopped
    growing: the same count of processes and RSS within 256 KB for ``settle_seconds``.
    ``after_work``: once it has run two tasks (tq's lease renewer companion starts on a
    worker's first lease, so a worker that never worked does not have it yet)."""
    target.flush()
    worker = start_worker(target.environment(), pool)
    try:
        if after_work:
            child(target, "publish", "2", "0")
            wait_until(lambda: target.backlog() == 0, 120, f"the {target.name} worker to work")
        started = time.monotonic()
        deadline, last, stable_since = started + 90, (0, 0), started
        while time.monotonic() < deadline:
            time.sleep(0.25)  # a sampling period: what is polled is the tree's size
            now = tree_rss(worker.pid)
            if now[1] != last[1] or abs(now[0] - last[0]) > 256 * 1024:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= settle_seconds:
                return now[0] / 2**20
        raise TimeoutError(f"benchmark: the {target.name} worker's RSS never settled")
    finally:
        stop_worker(worker)
