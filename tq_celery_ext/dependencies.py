"""Task dependencies on the Celery side: publish options and completion records.

Publishing. ``task.apply_async(args, depends_on=[r1, r2], on_parent_failure="run",
dependency_timeout_seconds=60)``: Celery passes options it does not know to kombu as
message properties, where tq's channel checks them and keeps them as headers (see
:mod:`tq_kombu.dependencies`; bad input raises ``DependencyError`` from
``apply_async``). Before that, the ``before_task_publish`` receiver here turns
AsyncResults into task ids and fills in the timeout: the task's
``tq_dependency_timeout_seconds`` attribute, else the app setting of that name, else
24 h (the signal names no app: each installed app fills in the timeout of the tasks it
registers). A retry of a task does not wait again on its parents (they succeeded).

Completion. In whichever process runs the task (prefork children included), a
``task_success`` records the success (``Store.complete(task_id, True)``), which
releases the children whose parents are all done: through the process's
:class:`~tq_celery_ext.completions.CompletionOutbox`, in batches for early-acknowledged
tasks, before the acknowledgement for ``acks_late`` ones. A task failing for good is
recorded as failed by the dead-letter recorder (see :mod:`tq_celery_ext.dead_letters`).
A retrying task records nothing; eager runs record nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery.result import AsyncResult
from celery.signals import before_task_publish, task_success

from tq_kombu.dependencies import DEFAULT_TIMEOUT_SECONDS, HEADERS, PARENTS_HEADER, TIMEOUT_HEADER

if TYPE_CHECKING:
    from .dead_letters import FailureRecorder

logger = logging.getLogger(__name__)

#: The app setting (and task attribute) naming the default dependency timeout.
TIMEOUT_SETTING = "tq_dependency_timeout_seconds"


def as_task_ids(parents: Any) -> Any:
    """``parents`` with every AsyncResult replaced by its task id (others left as they
    are, for the transport to refuse with a clear error)."""
    if isinstance(parents, list | tuple | set | frozenset):
        return [as_task_ids(parent) for parent in parents]
    if isinstance(parents, AsyncResult):
        return parents.id
    return parents


class DependencyRecorder:
    """Publish-side defaults and completion records of one app's tasks."""

    def __init__(self, app: Any, failures: FailureRecorder) -> None:
        self.app = app
        #: Shares the failure recorder's per-process Admin (fresh after fork).
        self.failures = failures

    def connect(self) -> None:
        uid = f"tq-deps-{id(self.app)}"
        before_task_publish.connect(self.on_before_publish, weak=False, dispatch_uid=uid)
        task_success.connect(self.on_task_success, weak=False, dispatch_uid=uid)

    def timeout_seconds(self, task_name: str) -> Any:
        """The dependency timeout of ``task_name``: task attribute, app setting, 24 h."""
        task = self.app.tasks.get(task_name) if task_name else None
        value = getattr(task, TIMEOUT_SETTING, None)
        if value is None:
            value = self.app.conf.get(TIMEOUT_SETTING)
        return DEFAULT_TIMEOUT_SECONDS if value is None else value

    def on_before_publish(
        self,
        sender: Any = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if headers is None or properties is None:
            return
        if int(headers.get("retries") or 0) > 0:  # a retry: its parents already succeeded
            for option, header in HEADERS.items():
                properties.pop(option, None)
                headers.pop(header, None)
            return
        if properties.get("depends_on") is None and headers.get(PARENTS_HEADER) is None:
            return
        if "depends_on" in properties:
            properties["depends_on"] = as_task_ids(properties["depends_on"])
        if properties.get("dependency_timeout_seconds") is None and TIMEOUT_HEADER not in headers:
            if sender in self.app.tasks:  # the signal names no app: this app's tasks only
                properties["dependency_timeout_seconds"] = self.timeout_seconds(str(sender))

    def on_task_success(self, sender: Any = None, **_: Any) -> None:
        if sender is None or getattr(sender, "app", None) is not self.app:
            return
        request = sender.request
        if request is None or not request.id or request.is_eager or request.called_directly:
            return
        late = bool(sender.acks_late or sender.app.conf.task_acks_late)
        self.complete(request.id, True, wait=late)

    def complete(self, task_id: str, succeeded: bool, detail: str = "", wait: bool = True) -> None:
        """Record a task's outcome (now, when ``wait``); never raises: a store that
        cannot take it now gets it later (see :mod:`.completions`)."""
        try:
            if succeeded:
                self.failures.completions.record_success(task_id, wait=wait)
            else:
                self.failures.completions.record(task_id, False, detail, wait=wait)
        except Exception:  # noqa: BLE001 - a failing recorder must not break the worker
            logger.exception("tq: could not record the outcome of task %s", task_id)
