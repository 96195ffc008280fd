"""A message's limits and key, computed when it is published, carried in its headers.

``before_task_publish`` (Celery 5.7, ``celery/app/amqp.py``) is sent with the very
``headers`` dict that ``producer.publish`` sends right after, and the ``body`` as
built: protocol 2 ``(args, kwargs, embed)``, protocol 1 a dict with ``args`` and
``kwargs``. :class:`PublishTagger` adds to those headers::

    tq_limits = [{"kind": "rate", "name": "api_calls", "key": "acme"}, ...]

for a task of the app under limits (nothing for the others). The signal is
process-wide and does not name the app: the most recently installed app that
registers the task name tags the message. A task
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
import weakref
from collections.abc import Mapping
from typing import Any

from tq_kombu.errors import LimitKeyError, TQError
from tq_kombu.limit_headers import LIMIT_ERROR_HEADER, LIMITS_HEADER, MAX_KEY_CHARS

from .config import Definitions, TaskPlan, plan_task, read_definitions

logger = logging.getLogger(__name__)


def limit_key(plan: TaskPlan, args: Any, kwargs: Any) -> str:
    """The key of one message of ``plan``'s task ("" when the task has no key function)."""
    if plan.key_function is None:
        return ""
    try:
        key = plan.key_function(args, kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
        raise LimitKeyError(
            f"task {plan.task_name!r}: its tq_limit_key raised {type(exc).__name__}: {exc} "
            f"for {_call_shape(args, kwargs)}; make it return a key for every call"
        ) from exc
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise LimitKeyError(
            f"task {plan.task_name!r}: its tq_limit_key returned {_shown(key)} for "
            f"{_call_shape(args, kwargs)}; it must return a non-empty string of at most "
            f"{MAX_KEY_CHARS} characters (e.g. str(kwargs['tenant']))"
        )
    return key


def _call_shape(args: Any, kwargs: Any) -> str:
    """A call's shape without its values (arguments may hold secrets; errors are logged)."""
    count = len(args) if isinstance(args, (list, tuple)) else "?"
    names = sorted(map(str, kwargs)) if isinstance(kwargs, Mapping) else "?"
    return f"a call with {count} positional argument(s) and keyword arguments {names}"


def _shown(key: object) -> str:
    """A returned key as shown in an error: what it is, never its text."""
    if isinstance(key, str):
        return "an empty string" if not key else f"a string of {len(key)} characters"
    return f"a value of type {type(key).__name__}"


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
        """Tag this app's messages from now on (the app keeps this tagger alive)."""
        self.app._tq_limits_tagger = self
        _TAGGERS[:] = [ref for ref in _TAGGERS if ref() is not None] + [weakref.ref(self)]
        from celery.signals import before_task_publish

        before_task_publish.connect(
            _on_before_task_publish, weak=False, dispatch_uid="tq-limits-publish"
        )

    def handles(self, task_name: str) -> bool:
        return task_name in self.app.tasks

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

    def tag(self, task_name: str, body: Any, headers: dict[str, Any]) -> None:
        """Set (or replace) the limit headers of one message of ``task_name``."""
        headers.pop(LIMITS_HEADER, None)
        headers.pop(LIMIT_ERROR_HEADER, None)
        try:
            plan = self.plan(task_name)
            if plan is None:
                return
            args, kwargs = task_arguments(body)
            headers[LIMITS_HEADER] = limit_entries(plan, limit_key(plan, args, kwargs))
        except TQError as exc:
            headers[LIMIT_ERROR_HEADER] = str(exc)
            logger.error("tq: %s", exc)


#: The taggers of every app installed in this process, oldest first (weakly: an app
#: that is gone takes its tagger with it).
_TAGGERS: list[weakref.ref[PublishTagger]] = []


def _on_before_task_publish(
    sender: Any = None, body: Any = None, headers: Any = None, **_: Any
) -> None:
    """``before_task_publish`` is process-wide and does not say which app publishes: the
    most recently installed app that registers the task tags its message."""
    if not isinstance(headers, dict) or not isinstance(sender, str):
        return
    for ref in reversed(_TAGGERS):
        tagger = ref()
        if tagger is not None and tagger.handles(sender):
            tagger.tag(sender, body, headers)
            return
