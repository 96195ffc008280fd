"""tq against kombu's stock Redis transport and Celery's own ceiling, in one run.

    python benchmarks/bench.py                # every phase but depth (~15 min on 2 cores)
    python benchmarks/bench.py --quick        # 2,000 messages, one round (a smoke run)
    python benchmarks/bench.py --only depth   # a million ready messages (slow: minutes)
    python benchmarks/bench.py --only drain --only latency --rounds 3

Transports (one private redis-server; a fresh SQLite file per figure): stock =
``redis://``, tq = ``tq+redis://`` with encryption on, tq-plain = tq with
``encryption="off"``, tq-sqlite = ``tq+sqlite://`` (encrypted); ceiling = kombu's
in-memory transport with a solo worker in the publishing process (``ceiling.py``).

Phases (``--only``, repeatable; the default is all but depth):

- publish: ``apply_async`` calls per second and the median call (tq: also with three
  ``depends_on`` parents);
- bulk: messages per second through ``tq_kombu.bulk(app)`` and through
  ``group(...).apply_async()`` (blocks of 10,000), checked all stored, and Redis
  ``used_memory`` bytes per queued message;
- drain: no-op tasks per second a real ``celery worker`` (prefork -c 2, solo; tq-sqlite
  also prefork -c 2 with ``worker_prefetch_multiplier=1``) takes from a backlog, timed
  from the first message taken until nothing is ready or unacknowledged;
- latency: a solo worker idle on an empty queue, one task published at a time: p50 and
  p95 from just before the publish to the task's start;
- memory: idle RSS of the worker's whole process tree (solo, prefork -c 2), fresh and
  after two tasks (tq's lease renewer companion starts on the first lease);
- depth (not by default: building and draining a million messages takes minutes per
  store): drain rate of a solo worker over the first ``--depth-window`` tasks of a
  backlog of 1,000 and of ``--depth`` (bulk-published), and Redis bytes per message.

publish, bulk and drain keep the best of ``--rounds`` runs, the transports taking turns
in an order that rotates every round; latency, memory and depth run once. The end of
the output checks each figure against the floors of issue #12.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.phases import drain, latency, memory, publish
from benchmarks.phases.report import Results, report
from benchmarks.phases.servers import (  # noqa: F401  (cost.py imports these from here)
    BENCH_KEY,
    ROOT,
    TRANSPORTS,
    PrivateRedis,
    Target,
    start_worker,
    wait_until,
)

PHASES = ("publish", "bulk", "drain", "latency", "memory", "depth")
DEFAULT_PHASES = PHASES[:-1]
PREFORK, SOLO = ["--pool", "prefork", "-c", "2"], ["--pool", "solo"]


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


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import celery
    import kombu

    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, redis-server {redis_version}, "
        f"celery {celery.__version__}, kombu {kombu.__version__}; load average {load}"
    )


class Run:
    """One benchmark run: the transports, the phases chosen, the best figures so far."""

    def __init__(self, args: argparse.Namespace, server: PrivateRedis, folder: str) -> None:
        self.args, self.phases = args, set(args.only or DEFAULT_PHASES)
        self.count = 2_000 if args.quick else args.n
        self.targets = {name: Target(name, server, f"{folder}/{name}.db") for name in TRANSPORTS}
        self.results: Results = {name: {} for name in [*TRANSPORTS, "ceiling"]}

    def keep(
        self, name: str, figure: str, value: float, better: Callable[..., float] = max
    ) -> None:
        self.results[name][figure] = better(self.results[name].get(figure, value), value)

    def keep_all(self, name: str, prefix: str, figures: dict[str, float]) -> None:
        for key, value in figures.items():
            per_second = key == "rate"
            figure = f"{prefix}/s" if per_second else f"{prefix} {key.replace('_', ' ')}"
            self.keep(name, figure, value, max if per_second else min)

    def rotating(self, name: str) -> None:
        """The phases that keep the best of the rounds, for one transport."""
        count, target = self.count, self.targets.get(name)
        if name == "ceiling":
            if "publish" in self.phases:
                self.keep_all(name, "publish", ceiling("publish", count))
            if "drain" in self.phases:
                self.keep(name, "drain/s solo", ceiling("drain", count)["drain"])
            return
        assert target is not None
        if "publish" in self.phases:
            self.keep_all(name, "publish", publish.one_by_one(target, count))
            if name == "tq":
                figures = publish.one_by_one(target, count, parents=3)
                self.keep(name, "publish 3 parents p50 ms", figures["p50_ms"], min)
        if "bulk" in self.phases and name != "tq-plain":
            for how in ("bulk", "group") if name != "stock" else ("group",):
                self.keep_all(name, how, publish.in_bulk(target, count, how))
        if "drain" in self.phases:
            self.keep(name, "drain/s prefork -c 2", drain.drain(target, count, PREFORK))
            self.keep(name, "drain/s solo", drain.drain(target, count, SOLO))
            if name == "tq-sqlite":
                rate = drain.drain(target, count, PREFORK, prefetch=1)
                self.keep(name, "drain/s prefork -c 2 prefetch 1", rate)

    def once(self, name: str) -> None:
        """The phases measured once, for one transport."""
        target = self.targets[name]
        if "latency" in self.phases and name != "tq-plain":
            samples = 40 if self.args.quick else self.args.samples
            self.keep_all(name, "pickup", latency.pickup(target, samples))
        if "memory" in self.phases and name != "tq-plain":
            for label, pool in (("solo", SOLO), ("prefork -c 2", PREFORK)):
                self.keep(name, f"idle RSS MB {label}", memory.idle_rss(target, pool), min)
                rss = memory.idle_rss(target, pool, after_work=True)
                self.keep(name, f"idle RSS MB {label} after work", rss, min)
        if "depth" in self.phases and name in ("tq", "tq-sqlite"):
            for size in (1_000, self.args.depth):
                figures = drain.depth(target, size, self.args.depth_window)
                self.keep(name, f"depth {size} drain/s", figures["rate"])
                if "bytes/msg" in figures:
                    self.keep(name, f"depth {size} bytes/msg", figures["bytes/msg"], min)

    def execute(self) -> None:
        rounds = 1 if self.args.quick else self.args.rounds
        names = [*TRANSPORTS, "ceiling"]
        if self.phases & {"publish", "bulk", "drain"}:
            for number in range(rounds):
                # rotate the order each round so that no transport always runs first or last
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    self.rotating(name)
                    print(f"  round {number + 1} {name}: {self.results[name]}", flush=True)
        for name in TRANSPORTS:
            self.once(name)
            print(f"  {name}: {self.results[name]}", flush=True)
        for target in self.targets.values():
            target.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="messages per figure")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    parser.add_argument("--rounds", type=int, default=2, help="runs per figure; the best counts")
    parser.add_argument("--only", action="append", choices=PHASES, help="run this phase (repeat)")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per store")
    parser.add_argument("--depth", type=int, default=1_000_000, help="the deep backlog")
    parser.add_argument("--depth-window", type=int, default=20_000, help="tasks timed at depth")
    parser.add_argument("--publisher", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:  # cost.py publishes its backlog this way
        from benchmarks.phases.children import publish as publish_child

        print(json.dumps(publish_child(args.publisher, 0)), flush=True)
        return
    print(f"machine: {machine()}", flush=True)
    print(f"phases: {', '.join(p for p in PHASES if p in (args.only or DEFAULT_PHASES))}")
    server = PrivateRedis()
    try:
        with tempfile.TemporaryDirectory(prefix="tq-bench-sqlite-") as folder:
            run = Run(args, server, folder)
            run.execute()
    finally:
        server.stop()
    print(report(run.results))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
