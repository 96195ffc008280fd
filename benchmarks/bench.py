"""tq against kombu's stock Redis transport and Celery's own ceiling, in one run.

    python benchmarks/bench.py            # 20,000 messages per figure
    python benchmarks/bench.py --quick    # 2,000, a smoke run

Figures per transport (stock = ``redis://``, tq = ``tq+redis://`` with encryption on,
tq-plain = tq with ``encryption="off"``, all on one private redis-server; ceiling =
kombu's in-memory transport with a solo worker in the publishing process, see
``ceiling.py``: no network, no store, Celery alone):

- publish: ``apply_async`` calls per second, and the median latency of one call;
- publish with 3 parents (tq): the same calls with ``depends_on`` naming three task ids
  (the child is stored waiting), to show what a dependency costs at publish;
- drain: no-op tasks per second consumed by a real ``celery worker`` (prefork -c 2, and
  solo) from a backlog, timed from the first message taken until the queue is empty
  and nothing is left unacknowledged (read from the broker every 5 ms, the same way
  for every transport); the ceiling times its in-process solo worker from the first
  task's start to the last one's.

Each figure is the best of ``--rounds`` runs; the transports take turns, in an order
that rotates every round. Ratios are
tq/stock for rates and stock/tq for latency, so above 1 always means tq is better.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench:" + base64.b64encode(b"benchmark key, not a secret....!").decode()
TRANSPORTS = {
    "stock": ("redis://127.0.0.1:{port}/0", ""),
    "tq": ("tq+redis://127.0.0.1:{port}/0", ""),
    "tq-plain": ("tq+redis://127.0.0.1:{port}/0", "encryption=off"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        time.sleep(0.005)


class PrivateRedis:
    """A redis-server of our own on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="tq-bench-")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        wait_until(self._up, 10, "redis-server")

    def _up(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def environment(name: str, port: int) -> dict[str, str]:
    url, options = TRANSPORTS[name]
    return {
        **os.environ,
        "BENCH_BROKER_URL": url.format(port=port),
        "BENCH_OPTIONS": options,
        "TQ_ENCRYPTION_KEYS": BENCH_KEY,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
    }


def publish(name: str, port: int, count: int, parents: int = 0) -> dict[str, float]:
    """Publish ``count`` tasks from a fresh process (each depending on ``parents`` task
    ids); return its rate and p50 latency."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--publisher",
            str(count),
            "--parents",
            str(parents),
        ],
        env=environment(name, port),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_publisher(count: int, parents: int) -> None:
    """In the child: time ``count`` apply_async calls after a warm-up one."""
    import uuid

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
    print(
        json.dumps(
            {
                "rate": (count - 1) / elapsed,
                "p50_ms": statistics.median(latencies) * 1000,
            }
        )
    )


def ceiling(phase: str, count: int) -> dict[str, float]:
    """Celery's own ceiling (``ceiling.py``) for one phase, in a fresh process."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ceiling.py"), phase, str(count)],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def backlog(name: str, client: redis.Redis) -> int:
    """Messages ready or unacknowledged in the broker, read the same way for each run."""
    if name == "stock":
        return int(client.llen("celery")) + int(client.hlen("unacked"))
    ready, inflight = "{tq:celery}:ready", "{tq:celery}:inflight"
    return int(client.zcard(ready)) + int(client.zcard(inflight))


def start_worker(env: dict[str, str], pool: list[str], runner: list[str] | None = None) -> Any:
    """A ``celery worker`` of the bench app in its own session (``runner``: the Python
    command line to start it with, e.g. under cProfile)."""
    return subprocess.Popen(
        [
            *(runner or [sys.executable]),
            "-m",
            "celery",
            "-A",
            "benchmarks.bench_app",
            "worker",
            *pool,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def drain(name: str, server: PrivateRedis, count: int, pool: list[str]) -> float:
    """Tasks per second a worker drains from a backlog of ``count``."""
    server.client.flushall()
    publish(name, server.port, count)
    assert backlog(name, server.client) == count, "the backlog was not fully published"
    worker = start_worker(environment(name, server.port), pool)
    try:
        wait_until(lambda: backlog(name, server.client) < count, 60, "the worker to start")
        started = time.perf_counter()
        wait_until(lambda: backlog(name, server.client) == 0, 600, "the backlog to drain")
        return count / (time.perf_counter() - started)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import celery
    import kombu

    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, redis-server {redis_version}, "
        f"celery {celery.__version__}, kombu {kombu.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="messages per figure")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    parser.add_argument("--rounds", type=int, default=2, help="runs per figure; the best counts")
    parser.add_argument("--only", choices=["publish", "drain"], help="run one phase only")
    parser.add_argument("--publisher", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parents", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        return run_publisher(args.publisher, args.parents)
    count, rounds = (2_000, 1) if args.quick else (args.n, args.rounds)

    server = PrivateRedis()
    results: dict[str, dict[str, float]] = {name: {} for name in [*TRANSPORTS, "ceiling"]}

    def keep(name: str, figure: str, value: float, better: Any = max) -> None:
        results[name][figure] = better(results[name].get(figure, value), value)

    try:
        print(
            f"machine: {machine()}\nmessages per figure: {count}, best of {rounds}\n",
            flush=True,
        )
        names = [*TRANSPORTS, "ceiling"]
        for round_number in range(rounds):
            # rotate the order each round so that no transport always runs first or last
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                if name == "ceiling":
                    if args.only in (None, "publish"):
                        figures = ceiling("publish", count)
                        keep(name, "publish/s", figures["rate"])
                        keep(name, "publish p50 ms", figures["p50_ms"], min)
                    if args.only in (None, "drain"):
                        keep(name, "drain/s solo", ceiling("drain", count)["drain"])
                    print(f"  {name}: {results[name]}", flush=True)
                    continue
                if args.only in (None, "publish"):
                    server.client.flushall()
                    figures = publish(name, server.port, count)
                    keep(name, "publish/s", figures["rate"])
                    keep(name, "publish p50 ms", figures["p50_ms"], min)
                    if name == "tq":
                        server.client.flushall()
                        figures = publish(name, server.port, count, parents=3)
                        keep(name, "publish 3 parents p50 ms", figures["p50_ms"], min)
                if args.only in (None, "drain"):
                    keep(
                        name,
                        "drain/s prefork -c 2",
                        drain(name, server, count, ["--pool", "prefork", "-c", "2"]),
                    )
                    keep(
                        name,
                        "drain/s solo",
                        drain(name, server, count, ["--pool", "solo"]),
                    )
                print(f"  {name}: {results[name]}", flush=True)
    finally:
        server.stop()
    report(results)


def ratio(figure: str, tq: float | None, other: float | None) -> str:
    """tq against ``other`` for one figure (above 1: tq is better), or blank."""
    if other is None or tq is None or "parents" in figure:
        return f"{'':>10}"
    return f"{(other / tq if 'ms' in figure else tq / other):>10.2f}"


def report(results: dict[str, dict[str, float]]) -> None:
    names = ("stock", "tq", "tq-plain", "ceiling")
    print(f"\n{'figure':<26}" + "".join(f"{n:>10}" for n in names), end="")
    print(f"{'tq/stock':>10}{'tq/plain':>10}{'tq/ceil':>10}")
    for figure in results["tq"]:
        stock, tq, plain, ceil = values = [results[name].get(figure) for name in names]
        cells = "".join(f"{'-':>10}" if v is None else f"{v:>10.2f}" for v in values)
        print(
            f"{figure:<26}{cells}{ratio(figure, tq, stock)}{ratio(figure, tq, plain)}"
            f"{ratio(figure, tq, ceil)}"
        )
    plain_p50 = results["tq"].get("publish p50 ms")
    child_p50 = results["tq"].get("publish 3 parents p50 ms")
    if plain_p50 and child_p50:
        print(
            f"\na child with 3 parents costs {child_p50 / plain_p50:.2f}x a plain tq publish (p50)"
        )
    print("ratios above 1 mean tq (encrypted) is better; tq/plain is encryption's cost;")
    print("tq/ceil is the share of Celery's own in-memory ceiling that tq reaches")


if __name__ == "__main__":
    main()
