"""What runs in a fresh publishing process, under the broker of ``BENCH_BROKER_URL``.

    python -m benchmarks.phases.children publish COUNT PARENTS
    python -m benchmarks.phases.children bulk COUNT CHUNK      # tq_kombu.bulk(app)
    python -m benchmarks.phases.children group COUNT CHUNK     # group(...).apply_async()
    python -m benchmarks.phases.children latency SAMPLES       # idle pickup, a worker running

Each prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid


def publish(count: int, parents: int) -> dict[str, float]:
    """``count`` apply_async calls after a warm-up one: rate and median call."""
    from benchmarks.bench_app import noop

    options = {"depends_on": [str(uuid.uuid4()) for _ in range(parents)]} if parents else {}
    noop.apply_async(**options)
    latencies = []
    started = time.perf_counter()
    for _ in range(count - 1):
        t0 = time.perf_counter()
        noop.apply_async(**options)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"rate": (count - 1) / elapsed, "p50_ms": statistics.median(latencies) * 1000}


def bulk(count: int, chunk: int, how: str) -> dict[str, float]:
    """``count`` messages in blocks of ``chunk``, each block one ``tq_kombu.bulk`` or one
    ``group(...).apply_async()``; messages per second, the warm-up publish excluded."""
    from celery import group

    from benchmarks.bench_app import app, noop

    noop.apply_async()  # connections and scripts loaded before the clock starts
    started = time.perf_counter()
    done = 0
    while done < count:
        size = min(chunk, count - done)
        if how == "bulk":
            import tq_kombu

            with tq_kombu.bulk(app):
                for _ in range(size):
                    noop.delay()
        else:
            group(noop.s() for _ in range(size)).apply_async()
        done += size
    return {"rate": count / (time.perf_counter() - started)}


def latency(samples: int) -> dict[str, float]:
    """Publish one task at a time to an idle worker; the delay from just before the
    publish to the task's start, as the task reports it (``bench_app.stamp``)."""
    import redis

    from benchmarks.bench_app import stamp

    report = redis.Redis.from_url(os.environ["BENCH_REPORT_URL"])
    delays: list[float] = []
    for number in range(samples + 5):
        stamp.apply_async(args=(time.time(),))
        # the first one also waits for the worker to start
        got = report.blpop(["bench:latency"], timeout=90 if number == 0 else 30)
        if got is None:
            raise TimeoutError("benchmark: a latency task did not start within 30 s")
        if number >= 5:  # the first five warm the worker up
            delays.append(float(got[1]))
        time.sleep(0.02)  # the worker settles the task and goes idle again
    delays.sort()
    return {
        "p50_ms": statistics.median(delays) * 1000,
        "p95_ms": delays[int(len(delays) * 0.95) - 1] * 1000,
    }


def main() -> None:
    mode, numbers = sys.argv[1], [int(arg) for arg in sys.argv[2:]]
    if mode == "publish":
        figures = publish(*numbers)
    elif mode in ("bulk", "group"):
        figures = bulk(numbers[0], numbers[1], mode)
    else:
        figures = latency(numbers[0])
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
