"""Tasks that fail for good -> tq's dead-letter store, with their (sealed) traceback.

Why it works this way. When a task fails, Celery keeps nothing of its message:
an early-acked task was acknowledged (deleted from the broker) before it ran, a
late-acked one is acknowledged (or rejected) right after the failure, and with the
prefork pool the ``task_failure`` signal fires in the pool process, which holds no
lease on the message. So the recorder, on ``task_failure`` in whichever process
sends it:

1. reads where the message lives from the ``tq_delivery`` property the transport
   adds to every delivered message (queue, store message id, delivery count,
   first-seen time; Celery hands the properties to the task's request);
2. rebuilds the task message from the request — same task id, name, args,
   kwargs, retries, ETA, expiry, links, chain and chord, custom headers — with
   ``app.amqp.as_task_v2``, seals it and the failure record (exception type,
   message, traceback, attempts) with the broker's key ring;
3. calls :meth:`~tq_kombu.store.base.Store.bury_payload` with the original message
   id. If the store still holds the message (late ack: it is in flight), it moves
   to dead in place, original bytes, first-seen time and delivery count kept, and
   the worker's following ack or reject finds nothing left to settle. If the
   message is gone (early ack), the rebuilt one is stored as dead under that id,
   with the delivery count and first-seen time from the property.

Either way there is one dead letter per failure, and replaying it publishes the
task message again: the task runs again with the same id and arguments.

Reasons: ``max_retries_exceeded`` when the task had retried and used up its
``max_retries`` (or raised ``MaxRetriesExceededError``), ``failed`` otherwise; and
``expired`` for a task whose ``expires`` passed before it ran (``task_revoked``), and
``memory_limit`` for a task stopped over ``tq_worker_memory_hard_limit``.
A task raising ``Reject(requeue=False)`` is kept by the transport as ``rejected``.
Eager (``task.apply()``) runs are not messages and are not recorded.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

from celery.app.task import Context
from celery.exceptions import MaxRetriesExceededError, Reject
from celery.signals import task_failure, task_revoked
from kombu.serialization import dumps

from tq_kombu.admin import Admin, failure_record
from tq_kombu.errors import ConfigurationError
from tq_kombu.priority import DEFAULT_PRIORITY
from tq_kombu.store.contract import Store
from tq_kombu.store.model import DeadLetter, DeadReason, State
from tq_kombu.transport import DELIVERY_PROPERTY, HOSTNAME

from .completions import CompletionOutbox, connect_flushes
from .worker.memory import MemoryLimitExceeded

logger = logging.getLogger(__name__)


class FailureRecorder:
    """Keeps tasks of one app that failed for good (or expired) in the dead-letter store."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._admin: Admin | None = None
        self._pid = 0
        self._disabled = False
        #: Task outcomes for the dependency graph (see :mod:`.completions`).
        self.completions = CompletionOutbox(self._store)

    def connect(self) -> None:
        uid = f"tq-dlq-{id(self.app)}"
        task_failure.connect(self.on_task_failure, weak=False, dispatch_uid=uid)
        task_revoked.connect(self.on_task_revoked, weak=False, dispatch_uid=uid)
        connect_flushes(self.completions, uid)

    def _store(self) -> Store | None:
        admin = self.admin
        return None if admin is None else admin.store

    @property
    def admin(self) -> Admin | None:
        """This process's Admin (a fresh one after fork); None when the broker is not tq."""
        if self._disabled:
            return None
        if self._admin is None or self._pid != os.getpid():
            try:
                self._admin = Admin.from_app(self.app)
            except ConfigurationError as exc:
                logger.warning("tq: failed tasks are not kept as dead letters: %s", exc)
                self._disabled = True
                return None
            self._pid = os.getpid()
        return self._admin

    # -- signal receivers ------------------------------------------------------
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
        if not self._ours(sender) or exception is None or isinstance(exception, Reject):
            return  # a rejected message is set aside by the transport (reason "rejected")
        request = sender.request
        if request is None or request.id != task_id:
            # Sent from the worker's main process without the task's request (a hard
            # time limit): what the signal carries is all there is.
            if sender.acks_late and not _acks_on_timeout(sender):
                return  # the message is requeued and runs again
            request = Context(id=task_id, args=args, kwargs=kwargs, called_directly=False)
        if request.is_eager or request.called_directly:
            return
        try:
            self.record(
                sender, request, self.reason(sender, request, exception), exception, traceback
            )
        except Exception:  # noqa: BLE001 - a failing recorder must not break the worker
            logger.exception("tq: could not keep failed task %s in the dead-letter store", task_id)

    def on_task_revoked(
        self, sender: Any = None, request: Any = None, expired: bool = False, **_: Any
    ) -> None:
        if not expired or not self._ours(sender) or request is None:
            return
        try:
            self.record(sender, request, DeadReason.EXPIRED)
        except Exception:  # noqa: BLE001 - a failing recorder must not break the worker
            logger.exception("tq: could not keep expired task %s as a dead letter", request.id)

    def _ours(self, task: Any) -> bool:
        return task is not None and getattr(task, "app", None) is self.app

    @staticmethod
    def reason(task: Any, request: Any, exc: BaseException) -> DeadReason:
        retries = int(request.retries or 0)
        used_up = task.max_retries is not None and 0 < task.max_retries <= retries
        if isinstance(exc, MemoryLimitExceeded):
            return DeadReason.MEMORY_LIMIT
        if isinstance(exc, MaxRetriesExceededError) or used_up:
            return DeadReason.MAX_RETRIES_EXCEEDED
        return DeadReason.FAILED

    # -- recording ---------------------------------------------------------------
    def record(
        self,
        task: Any,
        request: Any,
        reason: DeadReason,
        exc: BaseException | None = None,
        tb: Any = None,
    ) -> tuple[str, State | None] | None:
        """Set the task of ``request`` aside as dead; return its message id and the state
        its message was in before (None: it had been acknowledged), or None when the
        broker is not tq."""
        admin = self.admin
        if admin is None:
            return None
        where = dict((request.properties or {}).get(DELIVERY_PROPERTY) or {})
        delivery_info = request.delivery_info or {}
        queue = where.get("queue") or delivery_info.get("routing_key") or self.routed_queue(task)
        attempts = int(request.retries or 0) + 1
        if exc is None:
            detail = f"expired at {request.expires}" if request.expires else "expired"
            failure = None
        else:
            detail = type(exc).__name__
            failure = {**failure_record(exc, tb), "attempts": attempts}
        dead = DeadLetter(
            reason,
            detail,
            hostname=request.hostname or HOSTNAME,
            attempts=attempts if exc is not None else None,
            delivery_count=where.get("delivery_count"),
            first_seen=where.get("first_seen"),
        )
        message = self.rebuild_message(task, request, queue)
        buried = admin.bury_task(queue, message, dead, failure, where.get("message_id"))
        if request.id:  # its dependents go dead (or run) now; recording again is harmless
            self.completions.record(request.id, False, f"{reason.value}: {detail}", wait=True)
        return buried

    def routed_queue(self, task: Any) -> str:
        """The queue Celery's router sends ``task`` to."""
        route = self.app.amqp.router.route({}, task.name, (), {})
        queue = route.get("queue")
        return str(getattr(queue, "name", queue) or self.app.conf.task_default_queue)

    def rebuild_message(self, task: Any, request: Any, queue: str) -> dict[str, Any]:
        """The kombu message that runs this task again, as the virtual channel stores it."""
        hard, soft = (list(request.timelimit or ()) + [None, None])[:2]
        stamped = list(request.stamped_headers or [])
        stamps = {k: v for k, v in (request.stamps or {}).items() if k in stamped}
        built = self.app.amqp.as_task_v2(
            request.id,
            task.name,
            args=list(request.args or ()),
            kwargs=dict(request.kwargs or {}),
            eta=request.eta,
            expires=request.expires,
            group_id=request.group,
            group_index=request.group_index,
            retries=int(request.retries or 0),
            chord=request.chord,
            callbacks=request.callbacks,
            errbacks=request.errbacks,
            reply_to=request.reply_to,
            time_limit=hard,
            soft_time_limit=soft,
            root_id=request.root_id,
            parent_id=request.parent_id,
            shadow=request.shadow,
            chain=request.chain,
            origin=request.origin,
            ignore_result=bool(request.ignore_result),
            replaced_task_nesting=int(request.replaced_task_nesting or 0),
            stamped_headers=stamped or None,
            **stamps,
        )
        headers = {**(request.headers or {}), **built.headers}
        content_type, encoding, data = dumps(built.body, serializer=task.serializer)
        raw = data.encode() if isinstance(data, str) else data
        priority = (request.delivery_info or {}).get("priority")
        return {
            "body": base64.b64encode(raw).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                **built.properties,
                "priority": DEFAULT_PRIORITY if priority is None else priority,
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }


def _acks_on_timeout(task: Any) -> bool:
    """Whether Celery acknowledges (rather than requeues) a late-acked task that timed out."""
    for flag in (task.acks_on_timeout, task.acks_on_failure_or_timeout):
        if flag is not None:
            return bool(flag)
    return True
