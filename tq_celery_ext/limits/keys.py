"""A message's limits and key, computed when it is published, carried in its headers.

``before_task_publish`` (Celery 5.7, ``celery/app/amqp.py``) is sent with the very
``headers`` dict that ``producer.publish`` sends right after, and the ``body`` as
built: protocol 2 ``(args, kwargs, embed)``, protocol 1 a dict with ``args`` and
``kwargs``. :class:`PublishTagger` adds to those headers::

    tq_limits = [{"kind": "rate", "name": "api_calls", "key": "acme"}, ...]

for a task of the app under limits (nothing for the others). The signal is
process-wide: each app's tagger handles the task names that app registers. A task
published by name only (``send_task``) from a process that does not register it gets
no limits here (see docs/architecture.md, "Limits"). Every publish counts: a retry
(``task.retry`` publishes again) and an ETA task alike; a store decides when a message
*starts*, not when it is published.

Celery logs and swallows an exception raised by a signal receiver, and publishes
anyway. So a key that cannot be computed (the key function raises, or returns
something other than a non-empty string) is logged here as an error naming the task,
*and* written to the ``tq_limit_error`` header: the transport refuses such a message
at publish (``LimitKeyError``) instead of running it unlimited.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from tq_kombu.errors import TQError

from .config import Definitions, TaskPlan, plan_task, read_definitions

logger = logging.getLogger(__name__)

#: Header naming the limits of a message and its key in each.
LIMITS_HEADER = "tq_limits"
#: Header telling the transport why the message's limits could not be computed.
LIMIT_ERROR_HEADER = "tq_limit_error"
#: Longest key a key function may return.
MAX_KEY_CHARS = 200


class LimitKeyError(TQError, ValueError):
    """A task's ``tq_limit_key`` failed or returned no usable key for one message."""


def limit_key(plan: TaskPlan, args: Any, kwargs: Any) -> str:
    """The key of one message of ``plan``'s task ("" when the task has no key function)."""
    if plan.key_function is None:
        return ""
    try:
        key = plan.key_function(args, kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
        raise LimitKeyError(
            f"task {plan.task_name!r}: its tq_limit_key raised {type(exc).__name__}: {exc} "
            f"for args={args!r} kwargs={kwargs!r}; make it return a key for every call"
        ) from exc
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise LimitKeyError(
            f"task {plan.task_name!r}: its tq_limit_key returned {key!r} for args={args!r} "
            f"kwargs={kwargs!r}; it must return a non-empty string of at most "
            f"{MAX_KEY_CHARS} characters (e.g. str(kwargs['tenant']))"
        )
    return key


def limit_entries(plan: TaskPlan, key: str) -> list[dict[str, str]]:
    """The ``tq_limits`` header value of a message of ``plan``'s task under ``key``."""
    return [{"kind": str(ref.kind), "name": ref.name, "key": key} for ref in plan.limits]


def task_arguments(body: Any) -> tuple[Any, Any]:
    """``(args, kwargs)`` of a task message body, protocol 2 or 1."""
    if isinstance(body, (tuple, list)) and len(body) >= 2:
        return body[0], body[1]
    if isinstance(body, Mapping):
        return body.get("args", ()), body.get("kwargs", {})
    return (), {}


class PublishTagger:
    """Adds ``tq_limits`` to the headers of every task message an app publishes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._definitions: Definitions | None = None
        self._plans: dict[str, TaskPlan | None] = {}
        self._lock = threading.Lock()

    def connect(self) -> None:
        from celery.signals import before_task_publish

        before_task_publish.connect(
            self.on_before_task_publish, weak=False, dispatch_uid=f"tq-limits-{id(self.app)}"
        )

    def plan(self, task_name: str) -> TaskPlan | None:
        """The plan of a task this app knows (None: unknown task or no limits)."""
        try:
            return self._plans[task_name]
        except KeyError:
            pass
        with self._lock:
            if self._definitions is None:
                self._definitions = read_definitions(self.app.conf)
            task = self.app.tasks.get(task_name)
            plan = None if task is None else plan_task(task, self._definitions)[0]
            self._plans[task_name] = plan
        return plan

    def on_before_task_publish(
        self, sender: Any = None, body: Any = None, headers: Any = None, **_: Any
    ) -> None:
        if not isinstance(headers, dict) or not isinstance(sender, str):
            return
        if sender not in self.app.tasks:
            return  # another app's task (the signal is process-wide), or one sent by name
        headers.pop(LIMITS_HEADER, None)
        headers.pop(LIMIT_ERROR_HEADER, None)
        try:
            plan = self.plan(sender)
            if plan is None:
                return
            args, kwargs = task_arguments(body)
            headers[LIMITS_HEADER] = limit_entries(plan, limit_key(plan, args, kwargs))
        except TQError as exc:
            headers[LIMIT_ERROR_HEADER] = str(exc)
            logger.error("tq: %s", exc)
