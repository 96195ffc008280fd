"""Shared fixtures: private redis-server instances, stores of every kind."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tq_kombu.store import Store, open_store

# Every process the tests start (workers included) inherits this test-only key ring.
TEST_KEY_LINE = "test-key:" + base64.b64encode(b"tq test suite key, not a secret!").decode()
os.environ.setdefault("TQ_ENCRYPTION_KEYS", TEST_KEY_LINE)

REDIS_SERVER = shutil.which("redis-server")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server on a free loopback port, owned by one test or session."""

    def __init__(
        self, directory: Path, appendonly: bool = False, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        #: More redis-server options, e.g. ("--enable-debug-command", "local").
        self.extra_args = extra_args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if REDIS_SERVER is None:
            if IN_CI:
                pytest.fail(
                    "redis-server is not installed; CI needs it (apt-get install redis-server)"
                )
            pytest.skip("SKIPPING REDIS TESTS: no redis-server on PATH (install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start within 10 s")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session; tests flush it (it is ours alone)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store of each kind."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def memory_url() -> str:
    """A memory store of its own (this process only), for the Store contract."""
    return f"memory://{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def contract_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty store of each kind, the reference memory store included (Store contract
    suites: a module takes it as its ``store`` fixture)."""
    opened = open_store(str(request.getfixturevalue(f"{request.param}_url")))
    yield opened
    opened.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store behind ``store_url`` (SQLite and Redis), as a worker would open it."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def redis_owned(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may be killed or restarted), keeping its
    data across a restart (append-only file)."""
    server = RedisServer(
        tmp_path / "redis", appendonly=True, extra_args=("--enable-debug-command", "local")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_faults(tmp_path: Path) -> Iterator[object]:
    """``make(store_url, lease_seconds)``: a fault-injection run (see tests/faults.py),
    its workers stopped and their logs' tails printed at the end."""
    from .faults import Faults

    made: list[Faults] = []

    def make(store_url: str, lease_seconds: float) -> Faults:
        faults = Faults(tmp_path, store_url, lease_seconds)
        made.append(faults)
        return faults

    yield make
    for faults in made:
        faults.stop()
        for name, worker in faults.workers.items():
            print(f"--- {name}.log (tail)\n{worker.output()[-2000:]}")
