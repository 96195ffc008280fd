"""Reading a process's memory, and stopping a task that uses too much of it."""

from __future__ import annotations

import ctypes
import os

import psutil

from tq_kombu.errors import TQError


class MemoryLimitExceeded(TQError):
    """Raised inside a task whose process went over ``tq_worker_memory_hard_limit``;
    the task's message is set aside as dead with reason ``memory_limit``."""


def rss_bytes(pid: int | None = None) -> int:
    """The current resident set size of a process (this one by default), in bytes.

    Current, not peak: ``ru_maxrss`` never goes down, so a process that freed its
    memory would still look over a limit."""
    return int(psutil.Process(pid or os.getpid()).memory_info().rss)


def megabytes(size: int) -> str:
    """``size`` bytes as a short text for logs, e.g. ``"152.3 MB"``."""
    return f"{size / 1000**2:.1f} MB"


def raise_in_thread(thread_ident: int, exc_type: type[BaseException]) -> bool:
    """Make the thread ``thread_ident`` raise ``exc_type`` at its next Python bytecode
    (a thread blocked in C code raises once it returns). True if the thread exists."""
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_ident), ctypes.py_object(exc_type)
    )
    if changed > 1:  # never expected: undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), None)
        return False
    return bool(changed == 1)
