"""The code stays lint-clean, formatted and type-checked (ruff and mypy, as configured)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing_to_fix() -> None:
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_code_is_formatted() -> None:
    done = run("ruff", "format", "--check", "tq_kombu", "tq_celery_ext")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_passes_on_the_packages() -> None:
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
