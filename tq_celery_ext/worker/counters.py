"""Counts one worker keeps about itself, shared by recycling and heartbeats.

A solo or threads worker that restarts itself in place (``os.execv``) carries its
recycle count over in the environment variable :data:`RECYCLES_ENV`.
"""

from __future__ import annotations

import os
import threading

RECYCLES_ENV = "TQ_WORKER_RECYCLES"

_lock = threading.Lock()
_recycles = int(os.environ.get(RECYCLES_ENV, "0") or 0)


def recycles() -> int:
    """How many times this worker recycled a process (prefork children included)."""
    return _recycles


def note_recycle() -> int:
    """Count one recycle; returns the new count."""
    global _recycles
    with _lock:
        _recycles += 1
        return _recycles
