"""What every phase shares: the private redis-server, the transports under test, workers."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH_KEY = "bench:" + base64.b64encode(b"benchmark key, not a secret....!").decode()
#: name -> (broker URL, transport options); ``{port}`` and ``{db}`` are filled per run
TRANSPORTS = {
    "stock": ("redis://127.0.0.1:{port}/0", ""),
    "tq": ("tq+redis://127.0.0.1:{port}/0", ""),
    "tq-plain": ("tq+redis://127.0.0.1:{port}/0", "encryption=off"),
    "tq-sqlite": ("tq+sqlite:///{db}", ""),
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
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        wait_until(self._up, 10, "redis-server")

    def _up(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Target:
    """One transport under test on this run's private Redis (or its own SQLite file)."""

    name: str
    server: PrivateRedis
    db: str
    _store: Any = None

    @property
    def sqlite(self) -> bool:
        return self.name == "tq-sqlite"

    def environment(self, **extra: str) -> dict[str, str]:
        url, options = TRANSPORTS[self.name]
        return {
            **os.environ,
            "BENCH_BROKER_URL": url.format(port=self.server.port, db=self.db),
            "BENCH_OPTIONS": options,
            "BENCH_REPORT_URL": f"redis://127.0.0.1:{self.server.port}/1",
            "TQ_ENCRYPTION_KEYS": BENCH_KEY,
            "PYTHONPATH": str(ROOT),
            "PYTHONWARNINGS": "ignore",
            **extra,
        }

    def flush(self) -> None:
        """Empty the store: FLUSHALL, or a fresh SQLite file."""
        self.close()
        self.server.client.flushall()
        for suffix in ("", "-wal", "-shm"):
            Path(self.db + suffix).unlink(missing_ok=True)

    def backlog(self) -> int:
        """Messages ready or unacknowledged, read the same cheap way at every poll."""
        client = self.server.client
        if self.sqlite:
            counts = self._sqlite_store().counts("celery")
            return int(counts.ready + counts.inflight)
        if self.name == "stock":
            return int(client.llen("celery")) + int(client.hlen("unacked"))
        ready, inflight = "{tq:celery}:ready", "{tq:celery}:inflight"
        return int(client.zcard(ready)) + int(client.zcard(inflight))

    def _sqlite_store(self) -> Any:
        """The store the backlog is read through, opened on the first read after a flush."""
        from tq_kombu.store import open_store

        if self._store is None:
            self._store = open_store(f"sqlite:///{self.db}")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def start_worker(env: dict[str, str], pool: list[str], runner: list[str] | None = None) -> Any:
    """A ``celery worker`` of the bench app in its own session (``runner``: the Python
    command line to start it with, e.g. under cProfile)."""
    return subprocess.Popen(
        [*(runner or [sys.executable]), "-m", "celery", "-A", "benchmarks.bench_app", "worker"]
        + [*pool, "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_worker(worker: Any) -> None:
    """TERM the worker's session, KILL it if it is still there 20 s later."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=20)


def child(target: Target, *args: str, **extra: str) -> dict[str, float]:
    """Run ``children.py`` with ``args`` under ``target``'s broker; its last JSON line."""
    import json

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.phases.children", *args],
        env=target.environment(**extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child {args} failed under {target.name}:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
