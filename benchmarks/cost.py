"""What draining costs per task, in figures a busy machine does not skew.

    python benchmarks/cost.py                       # stock, tq, tq-sqlite; solo; 20,000 tasks
                                                    # (measured after the first 1,000)
    python benchmarks/cost.py --n 5000 --only tq    # one transport
    python benchmarks/cost.py --pool prefork        # prefork -c 2 instead of solo
    python benchmarks/cost.py --profile /tmp/prof   # also cProfile the worker (solo)

Wall-clock throughput on a shared machine says more about the neighbours than about
the code. This drains a backlog of no-op tasks with a real ``celery worker`` (as
``bench.py`` does) and reports, per task:

- CPU ms of the worker's process tree (the worker, its pool processes and tq's lease
  renewer companion), read from ``/proc`` once ``--warmup`` tasks are done and when the
  backlog is drained (so start-up is not counted);
- CPU ms of ``redis-server`` over the same span (Redis transports);
- Redis commands per task, and Lua script calls per task, from ``INFO commandstats``
  deltas (the script's own backlog reads subtracted).

CPU times come from the kernel in clock ticks (10 ms), so use a few thousand tasks
at least. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import BENCH_KEY, ROOT, PrivateRedis, start_worker, wait_until  # noqa: E402

#: name -> (broker URL, transport options); {port} and {db} are filled in.
TRANSPORTS = {
    "stock": ("redis://127.0.0.1:{port}/0", ""),
    "tq": ("tq+redis://127.0.0.1:{port}/0", ""),
    "tq-sqlite": ("tq+sqlite:///{db}", ""),
    #: tq with ``tq_celery_ext.install(app)`` in the app (no dependency or limit used)
    "tq-ext": ("tq+redis://127.0.0.1:{port}/0", ""),
    #: tq-ext with the task under a rate limit that never binds (a million a second)
    "tq-limited": ("tq+redis://127.0.0.1:{port}/0", ""),
    #: tq-ext with memory recycling on (soft and hard limits far above the worker's
    #: RSS: the watchdog and the per-task checks run, nothing recycles)
    "tq-watched": ("tq+redis://127.0.0.1:{port}/0", ""),
    #: tq-sqlite with ``tq_celery_ext.install(app)`` in the app (no dependency or limit used)
    "tq-sqlite-ext": ("tq+sqlite:///{db}", ""),
    #: tq-sqlite-ext with the task under a rate limit that never binds (a million a second)
    "tq-sqlite-limited": ("tq+sqlite:///{db}", ""),
}
#: name -> BENCH_EXTENSION (read by bench_app.py); the others run without the extension
EXTENSIONS = {
    "tq-ext": "1",
    "tq-limited": "limited",
    "tq-watched": "watched",
    "tq-sqlite-ext": "1",
    "tq-sqlite-limited": "limited",
}
TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")
#: Seconds between two reads of the backlog.
POLL_SECONDS = 0.02


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_SECONDS


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant still running."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    return {member: cpu_seconds(member) for member in process_tree(pid)}


def is_renewer(pid: int) -> bool:
    """Whether ``pid`` is tq's lease renewer companion."""
    try:
        return b"tq_kombu.renewer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def uses_sqlite(name: str) -> bool:
    """Whether transport ``name`` stores on SQLite (no redis-server needed)."""
    return TRANSPORTS[name][0].startswith("tq+sqlite")


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


class Backlog:
    """Messages ready or unacknowledged, read the same cheap way at every poll."""

    def __init__(self, name: str, client: redis.Redis | None, db: str) -> None:
        self.name, self.client, self.reads = name, client, 0
        self.store: Any = None
        if uses_sqlite(name):
            from tq_kombu.store import open_store

            self.store = open_store(f"sqlite:///{db}")

    def __call__(self) -> int:
        self.reads += 1
        if self.store is not None:
            counts = self.store.counts("celery")
            return int(counts.ready + counts.inflight)
        assert self.client is not None
        if self.name == "stock":
            return int(self.client.llen("celery")) + int(self.client.hlen("unacked"))
        return int(self.client.zcard("{tq:celery}:ready")) + int(
            self.client.zcard("{tq:celery}:inflight")
        )

    def own_calls(self) -> dict[str, int]:
        """The commands the reads so far sent (not the worker's)."""
        if self.store is not None:
            return {}
        names = ["llen", "hlen"] if self.name == "stock" else ["zcard", "zcard"]
        calls: dict[str, int] = {}
        for command in names:
            calls[f"cmdstat_{command}"] = calls.get(f"cmdstat_{command}", 0) + self.reads
        return calls


def environment(name: str, port: int, db: str) -> dict[str, str]:
    url, options = TRANSPORTS[name]
    return {
        **os.environ,
        "BENCH_BROKER_URL": url.format(port=port, db=db),
        "BENCH_OPTIONS": options,
        "BENCH_EXTENSION": EXTENSIONS.get(name, ""),
        "TQ_ENCRYPTION_KEYS": BENCH_KEY,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
    }


def publish(env: dict[str, str], count: int) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--publisher", str(count)],
        env=env,
        capture_output=True,
        timeout=900,
        check=True,
    )


def measure(
    name: str,
    server: PrivateRedis | None,
    count: int,
    warmup: int,
    pool: list[str],
    profile: str | None,
) -> dict[str, float]:
    """Drain ``count`` no-op tasks with a worker; the costs per task after ``warmup``."""
    workdir = tempfile.mkdtemp(prefix="tq-cost-")
    db = os.path.join(workdir, "queue.db")
    port = server.port if server is not None else 0
    if server is not None:
        server.client.flushall()
    env = environment(name, port, db)
    publish(env, count)
    backlog = Backlog(name, server.client if server is not None else None, db)
    assert backlog() == count, "the backlog was not fully published"
    runner = [sys.executable]
    if profile:
        os.makedirs(profile, exist_ok=True)
        runner += ["-m", "cProfile", "-o", os.path.join(profile, f"{name}.prof")]
    worker = start_worker(env, pool, runner)
    try:
        # measured once ``warmup`` tasks are done: start-up costs (the renewer
        # companion's imports, first connections) are not the steady state
        wait_until(lambda: backlog() <= count - warmup, 300, "the worker to warm up")
        left = backlog()
        worker_before = tree_cpu(worker.pid)
        redis_before = cpu_seconds(server.process.pid) if server is not None else 0.0
        stats_before = commandstats(server.client) if server is not None else {}
        reads_before = dict(backlog.own_calls())
        started = time.perf_counter()
        deadline = time.monotonic() + 1800
        while backlog() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("cost: timed out waiting for the backlog to drain")
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
        worker_after = tree_cpu(worker.pid)
        renewers = [p for p in worker_after if is_renewer(p)]
        redis_after = cpu_seconds(server.process.pid) if server is not None else 0.0
        stats_after = commandstats(server.client) if server is not None else {}
        reads_after = backlog.own_calls()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    spent = {p: worker_after[p] - worker_before.get(p, 0.0) for p in worker_after}
    renewer_cpu = sum(spent[p] for p in renewers)
    figures = {
        "tasks": float(left),
        "wall tasks/s": left / elapsed,
        "worker CPU ms/task": sum(spent.values()) * 1000 / left,
        "of which renewer": renewer_cpu * 1000 / left,
    }
    if server is not None:
        calls = {
            command: stats_after.get(command, 0)
            - stats_before.get(command, 0)
            - (reads_after.get(command, 0) - reads_before.get(command, 0))
            for command in stats_after
        }
        calls.pop("cmdstat_info", None)
        scripts = sum(calls.get(f"cmdstat_{c}", 0) for c in ("evalsha", "eval", "fcall"))
        figures["redis CPU ms/task"] = (redis_after - redis_before) * 1000 / left
        figures["commands/task"] = sum(calls.values()) / left
        figures["scripts/task"] = scripts / left
        busiest = sorted(((n, c) for n, c in calls.items() if c > 0), key=lambda nc: -nc[1])
        figures["by command"] = {n.removeprefix("cmdstat_"): round(c / left, 3) for n, c in busiest}  # type: ignore[assignment]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="tasks to drain per transport")
    parser.add_argument("--only", choices=list(TRANSPORTS), action="append", help="transports")
    parser.add_argument("--warmup", type=int, default=1000, help="tasks drained before measuring")
    parser.add_argument("--pool", choices=["solo", "prefork"], default="solo")
    parser.add_argument("--port", type=int, help="port of the private redis-server")
    parser.add_argument("--profile", help="write <dir>/<transport>.prof (cProfile of the worker)")
    args = parser.parse_args()
    pool = ["--pool", "solo"] if args.pool == "solo" else ["--pool", "prefork", "-c", "2"]
    names = args.only or list(TRANSPORTS)
    server = PrivateRedis(args.port) if not all(uses_sqlite(n) for n in names) else None
    try:
        for name in names:
            uses_redis = None if uses_sqlite(name) else server
            figures = measure(name, uses_redis, args.n, args.warmup, pool, args.profile)
            print(json.dumps({"transport": name, "pool": args.pool, **figures}), flush=True)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
