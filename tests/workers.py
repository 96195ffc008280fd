"""Real ``celery worker`` processes for end-to-end tests, with bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], object], timeout_seconds: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")


class Journal:
    """The file tasks append to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def count(self, line: str) -> int:
        return self.lines().count(line)


class Worker:
    """One ``celery -A <app> worker`` process group with its log file."""

    def __init__(self, app: str, env: dict[str, str], log: Path) -> None:
        self.app = app
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, ready_timeout_seconds: float = 30) -> Worker:
        command = [sys.executable, "-m", "celery", "-A", self.app, "worker", "-l", "INFO", *args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, ready_timeout_seconds, f"worker ready (log: {self.log})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.output()}")
        return " ready." in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9 the worker and its pool children."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.process = None


def run_celery(
    app: str, env: dict[str, str], *args: str, timeout_seconds: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a ``celery -A app ...`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", app, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
    )
