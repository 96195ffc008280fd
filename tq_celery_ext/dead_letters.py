"""Failed tasks into the dead-letter store.

Celery acks an early-acked task before it runs, and acks a late-acked one after it
fails, so the broker keeps nothing of a failed task. On ``task_failure`` (in the
process that ran the task, pool children included) the recorder rebuilds the task
message from the request — same task id, name, args, kwargs, queue and priority —
seals it and its failure record (exception type, message, traceback) with the
broker's key ring, and stores it dead. Replaying it publishes that message again.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from typing import Any

from celery.exceptions import MaxRetriesExceededError
from celery.signals import task_failure
from kombu.serialization import dumps

from tq_kombu.admin import Admin, failure_record
from tq_kombu.priority import DEFAULT_PRIORITY
from tq_kombu.store.base import DeadLetter, DeadReason

logger = logging.getLogger(__name__)


class FailureRecorder:
    """Keeps tasks of one app that failed for good in the dead-letter store."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._admin: Admin | None = None
        self._pid = 0

    def connect(self) -> None:
        task_failure.connect(
            self.on_task_failure, weak=False, dispatch_uid=f"tq-dlq-{id(self.app)}"
        )

    @property
    def admin(self) -> Admin:
        """This process's Admin (a fresh one after fork)."""
        if self._admin is None or self._pid != os.getpid():
            self._admin = Admin.from_app(self.app)
            self._pid = os.getpid()
        return self._admin

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        traceback: Any = None,
        **_: Any,
    ) -> None:
        if sender is None or getattr(sender, "app", None) is not self.app or exception is None:
            return
        try:
            self.record(sender, task_id or "", exception, args, kwargs, traceback)
        except Exception:  # noqa: BLE001 - a failing recorder must not break the worker
            logger.exception("tq: could not keep failed task %s in the dead-letter store", task_id)

    def record(
        self, task: Any, task_id: str, exc: BaseException, args: Any, kwargs: Any, tb: Any
    ) -> str:
        request = task.request
        retried_out = isinstance(exc, MaxRetriesExceededError) or (
            task.max_retries is not None and 0 < task.max_retries <= (request.retries or 0)
        )
        reason = DeadReason.MAX_RETRIES_EXCEEDED if retried_out else DeadReason.FAILED
        delivery_info = request.delivery_info or {}
        queue = delivery_info.get("routing_key") or self.app.conf.task_default_queue
        message = self.rebuild_message(task, task_id, args, kwargs, queue, delivery_info)
        dead = DeadLetter(reason, type(exc).__name__, hostname=request.hostname or "")
        failure = {**failure_record(exc, tb), "attempts": (request.retries or 0) + 1}
        return self.admin.bury_message(queue, message, dead, failure)

    def rebuild_message(
        self,
        task: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        queue: str,
        delivery_info: dict[str, Any],
    ) -> dict[str, Any]:
        """The kombu message that runs this task again, as the virtual channel stores it."""
        request = task.request
        built = self.app.amqp.as_task_v2(
            task_id,
            task.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            root_id=request.root_id,
            parent_id=request.parent_id,
            group_id=request.group,
        )
        content_type, encoding, data = dumps(built.body, serializer=task.serializer)
        raw = data.encode() if isinstance(data, str) else data
        priority = delivery_info.get("priority")
        return {
            "body": base64.b64encode(raw).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": built.headers,
            "properties": {
                **built.properties,
                "priority": DEFAULT_PRIORITY if priority is None else priority,
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_tag": uuid.uuid4().hex,
            },
        }
