"""Before a warm shutdown lets go of the prefork pool's jobs, hear what the pool said.

When a warm shutdown begins, Celery's event loop stops reading the pool processes'
messages, and the consumer then discards every job whose "accepted" message it has not
read (``AsynPool.flush``), counting on the broker to deliver it again. But a job already
written to a pool process runs there anyway: its acknowledgement (early acks) or its
result (``acks_late``) is never read, the process waits 30 s for the main process to
read it, and the message goes back to its queue to run a second time.

:class:`DrainPoolMessages`, a worker bootstep, reads those messages first: it waits (up
to :data:`DRAIN_SECONDS`) until every job written to a pool process has been accepted,
so that Celery acknowledges what started and tq gives back only what never did.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)

#: Longest wait for the pool processes to accept the jobs written to them.
DRAIN_SECONDS = 2.0
_POLL_SECONDS = 0.01


def _read_available(pool: Any) -> None:
    """Hand Celery every whole message the pool processes have written (non-blocking)."""
    from celery.concurrency.asynpool import setblocking

    handler = pool._result_handler
    for fd, process in list(pool._fileno_to_outq.items()):
        if handler._finish_partial_read(fd, process):
            continue
        reader = process.outq._reader
        for _ in range(1000):  # bounded: a process writes a few messages per job
            try:
                if not reader.poll(0):
                    break
                setblocking(reader, 1)
                try:
                    message = reader.recv()
                finally:
                    setblocking(reader, 0)
            except (OSError, EOFError):
                break
            if message:
                handler.on_state_change(message)


def _written_not_accepted(pool: Any) -> list[Any]:
    return [
        job
        for job in list(pool._cache.values())
        if getattr(job, "_write_to", None) is not None and not getattr(job, "_accepted", True)
    ]


def drain(pool: Any, timeout_seconds: float = DRAIN_SECONDS) -> None:
    """Read the pool processes' messages until every job written to one is accepted."""
    if not all(hasattr(pool, name) for name in ("_result_handler", "_fileno_to_outq", "_cache")):
        return  # not Celery's prefork AsynPool: nothing to drain
    deadline = time.monotonic() + timeout_seconds
    while True:
        _read_available(pool)
        waiting = _written_not_accepted(pool)
        if not waiting:
            return
        if time.monotonic() >= deadline:
            logger.warning(
                "tq: %d job(s) written to pool processes were not accepted within %.1f s of "
                "the warm shutdown; their messages go back to their queue",
                len(waiting),
                timeout_seconds,
            )
            return
        time.sleep(_POLL_SECONDS)


class DrainPoolMessages(bootsteps.StartStopStep):
    """Worker bootstep: drain the prefork pool's messages when the worker closes (a
    start-stop step, so that the blueprint calls its ``close``)."""

    name = "tq drain pool messages"
    requires = ("celery.worker.components:Pool",)

    def close(self, worker: Any) -> None:
        pool = getattr(getattr(worker, "pool", None), "_pool", None)
        if pool is None:
            return
        try:
            drain(pool)
        except Exception:  # noqa: BLE001 - never stand in the way of a shutdown
            logger.exception("tq: could not read the pool processes' last messages")
