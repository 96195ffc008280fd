"""The worker settings of tq, declared once (Celery style, on ``app.conf``)::

    tq_worker_memory_soft_limit = "200MB"        recycle a process after a task, RSS over it
    tq_worker_memory_hard_limit = "500MB"        stop the task and replace the process
    tq_worker_memory_check_interval_seconds = 1  how often the watchdog reads RSS
    tq_worker_recycle_mode = "reexec"            solo/threads: restart in place, or "exit"
    tq_worker_max_tasks = None                   recycle after this many tasks, every pool
    tq_heartbeat_seconds = 5                     how often every worker process records itself

Sizes accept bytes (an int or "1048576"), "150MB", "150 MiB", "1.5GiB", "512k" (decimal
units are powers of 1000, binary ones powers of 1024). A malformed value is a
:class:`~tq_kombu.errors.ConfigurationError` naming the setting.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from tq_kombu.errors import ConfigurationError

SOFT_LIMIT = "tq_worker_memory_soft_limit"
HARD_LIMIT = "tq_worker_memory_hard_limit"
CHECK_INTERVAL = "tq_worker_memory_check_interval_seconds"
RECYCLE_MODE = "tq_worker_recycle_mode"
MAX_TASKS = "tq_worker_max_tasks"
HEARTBEAT = "tq_heartbeat_seconds"

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class RecycleMode(enum.StrEnum):
    """What a solo or threads worker does when it must be recycled."""

    #: restart itself in place (``os.execv`` of the same command line)
    REEXEC = "reexec"
    #: exit with status 0 for its supervisor to start it again
    EXIT = "exit"


def parse_size_bytes(value: object, setting: str) -> int | None:
    """``value`` in bytes (None stays None); a clear error naming ``setting`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _size_error(value, setting)
    if isinstance(value, int):
        if value <= 0:
            raise _size_error(value, setting)
        return value
    match = SIZE_PATTERN.match(str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in SIZE_UNITS:
        raise _size_error(value, setting)
    size = int(float(match.group(1)) * SIZE_UNITS[unit])
    if size <= 0:
        raise _size_error(value, setting)
    return size


def _size_error(value: object, setting: str) -> ConfigurationError:
    return ConfigurationError(
        f"{setting} = {value!r} is not a size: give bytes (an int) or a number with a unit, "
        'such as "150MB", "200MiB" or "1.5GiB"'
    )


def _positive_seconds(value: object, setting: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or isinstance(value, bool):
        raise ConfigurationError(f"{setting} = {value!r} is not a positive number of seconds")
    return seconds


def _positive_count(value: object, setting: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{setting} = {value!r} is not a positive whole number")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    memory_soft_limit_bytes: int | None = None
    memory_hard_limit_bytes: int | None = None
    memory_check_interval_seconds: float = 1.0
    recycle_mode: RecycleMode = RecycleMode.REEXEC
    max_tasks: int | None = None
    heartbeat_seconds: float = 5.0

    def recycles(self) -> bool:
        """Whether a memory limit or a task count recycles worker processes."""
        return (
            self.memory_soft_limit_bytes is not None
            or self.memory_hard_limit_bytes is not None
            or self.max_tasks is not None
        )


def worker_settings(conf: Any) -> WorkerSettings:
    """The checked worker settings of an app's ``conf`` (defaults where unset)."""
    defaults = WorkerSettings()
    mode = conf.get(RECYCLE_MODE) or defaults.recycle_mode.value
    try:
        recycle_mode = RecycleMode(str(mode))
    except ValueError:
        choices = ", ".join(repr(m.value) for m in RecycleMode)
        raise ConfigurationError(f"{RECYCLE_MODE} = {mode!r}: use one of {choices}") from None
    interval = conf.get(CHECK_INTERVAL)
    heartbeat = conf.get(HEARTBEAT)
    return WorkerSettings(
        memory_soft_limit_bytes=parse_size_bytes(conf.get(SOFT_LIMIT), SOFT_LIMIT),
        memory_hard_limit_bytes=parse_size_bytes(conf.get(HARD_LIMIT), HARD_LIMIT),
        memory_check_interval_seconds=(
            defaults.memory_check_interval_seconds
            if interval is None
            else _positive_seconds(interval, CHECK_INTERVAL)
        ),
        recycle_mode=recycle_mode,
        max_tasks=_positive_count(conf.get(MAX_TASKS), MAX_TASKS),
        heartbeat_seconds=(
            defaults.heartbeat_seconds
            if heartbeat is None
            else _positive_seconds(heartbeat, HEARTBEAT)
        ),
    )
