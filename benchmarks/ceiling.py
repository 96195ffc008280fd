"""Celery's own ceiling: the same no-op task on kombu's in-memory transport, in one process.

No network and no store at all: what Celery itself costs per task. ``bench.py`` runs
this in a fresh process for each round and reports tq's figures against it:

- publish: ``apply_async`` calls per second and the median call, as for the others;
- drain: a solo worker started in this process (``app.Worker``), timed from the first
  task's start to the last one's, the backlog published before the worker starts.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

from celery import Celery

app = Celery("ceiling", broker="memory://")
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@app.task
def noop() -> None:
    return None


def publish(count: int) -> dict[str, float]:
    noop.apply_async()
    latencies = []
    started = time.perf_counter()
    for _ in range(count - 1):
        t0 = time.perf_counter()
        noop.apply_async()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {
        "rate": (count - 1) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
    }


def drain(count: int) -> float:
    """Tasks per second of a solo worker over a backlog of ``count`` (published here)."""
    done = threading.Event()
    starts: list[float] = []

    @app.task(name="ceiling.counted")
    def counted() -> None:
        starts.append(time.perf_counter())
        if len(starts) == count:
            done.set()

    with app.producer_or_acquire() as producer:
        for _ in range(count):
            counted.apply_async(producer=producer)
    worker = app.Worker(
        pool="solo",
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        loglevel="WARNING",
        quiet=True,
        hostname="ceiling@localhost",
        redirect_stdouts=False,
    )

    def stop_when_done() -> None:
        done.wait(600)
        result = (count - 1) / (starts[-1] - starts[0]) if len(starts) == count else 0.0
        sys.__stdout__.write(json.dumps({"drain": result}) + "\n")
        sys.__stdout__.flush()
        os._exit(0)

    threading.Thread(target=stop_when_done, daemon=True).start()
    worker.start()
    return 0.0  # not reached: the watcher ends the process


if __name__ == "__main__":
    phase, count = sys.argv[1], int(sys.argv[2])
    if phase == "publish":
        print(json.dumps(publish(count)), flush=True)
    else:
        drain(count)
