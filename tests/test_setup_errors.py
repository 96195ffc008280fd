"""A tq setup error reaches the user as one clear line and a hint, not a traceback: for a
real `celery worker` and for the `tq` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port
from .workers import ROOT, wait_for

pytestmark = pytest.mark.e2e

APP = "tests.setup_app"
TRANSPORT = "tq_kombu.transport:Transport"


def environment(
    url: str | None,
    options: dict[str, Any] | None = None,
    key: bool = True,
    retry: bool = False,
    transport: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQ_SETUP_")}
    env["PYTHONWARNINGS"] = "ignore"  # Celery's warning about running as root
    if not key:
        env.pop("TQ_ENCRYPTION_KEYS", None)
    if url is not None:
        env["TQ_SETUP_URL"] = url
    if transport is not None:
        env["TQ_SETUP_TRANSPORT"] = transport
    env["TQ_SETUP_OPTIONS"] = json.dumps(options or {})
    env["TQ_SETUP_RETRY"] = "1" if retry else "0"
    return env


def celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def worker_args() -> list[str]:
    return ["worker", "-P", "solo", "--without-mingle", "--without-gossip", "-l", "INFO"]


def unwritable(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return f"tq+sqlite:///{blocker}/queue.db"


CASES = {
    "no encryption key": (lambda tmp: f"tq+sqlite:///{tmp / 'q.db'}", {}, False, "no encryption key"),
    "a URL with a host": (lambda tmp: "tq+sqlite://host/x.db", {}, True, "names a host"),
    "an unknown scheme": (lambda tmp: "tq+foo://x", {}, True, "unknown scheme 'foo'"),
    "a bad option value": (
        lambda tmp: f"tq+sqlite:///{tmp / 'q.db'}",
        {"lease_seconds": 0},
        True,
        "lease_seconds=0",
    ),
    "an unreachable store": (
        lambda tmp: f"tq+redis://127.0.0.1:{free_port()}/0",
        {},
        True,
        "Redis is unreachable",
    ),
    "a SQLite file that cannot be created": (unwritable, {}, True, "cannot create the directory"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_worker_that_cannot_start_says_why_in_one_line(tmp_path: Path, case: str) -> None:
    url_of, options, key, problem = CASES[case]
    # When a worker starts with this setup
    done = celery(environment(url_of(tmp_path), options, key), *worker_args())
    # Then it exits 1 with the error and a hint, and no traceback
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 2, output
    assert lines[0].startswith("error: tq cannot start: ") and problem in lines[0], output
    assert lines[1].startswith("  (") and lines[1].endswith(")"), output


def test_the_settings_only_form_without_a_url_does_not_start() -> None:
    done = celery(environment(None, transport=TRANSPORT), *worker_args())
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip()
    assert output.startswith("error: tq cannot start: tq has no broker URL"), output


@pytest.mark.parametrize("case", [c for c in CASES if c != "no encryption key"])
def test_a_tq_command_says_why_in_one_line(tmp_path: Path, case: str) -> None:
    # (without a key the commands still show metadata: only payloads stay sealed)
    url_of, options, key, problem = CASES[case]
    done = celery(environment(url_of(tmp_path), options, key), "tq", "stats")
    assert done.returncode in (1, 2), done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and problem in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr


def test_a_worker_waits_for_an_unreachable_store_when_retrying_on_startup(tmp_path: Path) -> None:
    # Given retries on startup (Celery's default) and a Redis that is not there yet
    env = environment(f"tq+redis://127.0.0.1:{free_port()}/0", retry=True)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, *worker_args()],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Then the worker keeps trying, one line per attempt, instead of exiting
        wait_for(lambda: "Cannot connect to tq+redis://" in log.read_text(), 30, "a retry line")
        assert process.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
