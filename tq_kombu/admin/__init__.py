"""Queue administration and the dead-letter store, for people and scripts.

    admin = Admin.from_app(app)                    # or Admin("tq+redis://...", **options)
    admin.stats()                                  # counts per queue and priority level
    admin.messages("emails", state="delayed")      # list, with paging and filters
    admin.cancel("emails", message_id)             # it never runs, worker or not
    admin.dead_letters("emails", reason="failed")  # what died, and why
    admin.retry_dead("emails")                     # back to their queues, atomically

Every method that takes a message id also takes a Celery task id. Payloads stay
encrypted at rest; ``show`` decrypts them (and a dead task's failure record) when the
key ring is at hand. Bad input raises :class:`~tq_kombu.errors.TQError` subclasses
before anything changes: :class:`UnknownQueue`, :class:`~tq_kombu.errors.MessageNotFound`,
:class:`~tq_kombu.errors.ConfigurationError` (a bad filter) and
:class:`~tq_kombu.errors.PriorityError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from ..appconf import broker_of, declared_queues
from ..envelope import Envelope, EnvelopeError, envelope_from_settings
from ..errors import ConfigurationError, MessageNotFound, TQError
from ..options import STORE_LAYERS, names, settings
from ..priority import normalize_priority
from ..store import Store, open_store
from ..store.model import DeadLetter, MessageInfo, NewMessage, QueueCounts, State
from ..urls import store_url
from .dependencies import DependencyAdmin, DependencyGraph, GraphNode
from .limits import LimitAdmin
from .records import (
    decode_body,
    envelope_header,
    failure_record,
    message_fields,
    page_of,
    parse_reason,
    parse_state,
)
from .workers import WorkerAdmin

#: Transport options the store reads.
__all__ = [
    "Admin",
    "DependencyGraph",
    "GraphNode",
    "LimitAdmin",
    "QueueStats",
    "UnknownQueue",
    "decode_body",
    "envelope_header",
    "failure_record",
    "message_fields",
    "parse_reason",
    "parse_state",
]

STORE_OPTIONS = names(*STORE_LAYERS)

#: The order in which states are listed when none is asked for.
STATE_ORDER = (State.READY, State.DELAYED, State.WAITING, State.INFLIGHT, State.DEAD)
#: The states ``purge`` takes (in-flight messages belong to a worker: they are not purged).
PURGEABLE = (State.READY, State.DELAYED, State.WAITING, State.DEAD)
PAGE = 500

#: One queue, several, or None for every queue.
QueueScope = str | Sequence[str] | None


class UnknownQueue(TQError, LookupError):
    """A queue the app does not declare and the store holds nothing for."""


@dataclass(frozen=True)
class QueueStats:
    queue: str
    ready: int
    delayed: int
    waiting: int
    inflight: int
    dead: int
    #: Ready messages per priority level, most urgent first.
    ready_by_priority: dict[int, int] = field(default_factory=dict)
    #: Seconds since the oldest ready message arrived (None when nothing is ready).
    oldest_ready_age_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Admin(DependencyAdmin, LimitAdmin, WorkerAdmin):
    """One method per administrative operation, on the store behind a tq broker.

    ``queues`` are the queues the app declares: always listed, even when empty. Any
    other queue holding messages in the store is found and listed too.
    """

    def __init__(
        self,
        url: str,
        queues: list[str] | None = None,
        *,
        ssl: Mapping[str, Any] | None = None,
        **transport_options: Any,
    ) -> None:
        """``url``: the broker URL (``tq+redis://...``, ``tq+sqlite:///...``, or the plain
        form); ``ssl``: redis-py TLS options (Celery's ``broker_use_ssl``)."""
        self.settings = settings(transport_options)
        store_options = {k: v for k, v in self.settings.items() if k in STORE_OPTIONS}
        self.store: Store = open_store(store_url(url), **store_options, **dict(ssl or {}))
        self.store.set_dependency_record_ttl(self.settings["dependency_record_ttl_seconds"])
        self.transport_options = transport_options
        #: Queues the app declares: always known, even when empty.
        self.known_queues = list(dict.fromkeys(queues or []))
        self._envelope: Envelope | None = None

    @classmethod
    def from_app(cls, app: Any) -> Admin:
        """The Admin of a Celery app's broker (``broker_url`` and transport options)."""
        url, options, ssl = broker_of(app)
        return cls(url, declared_queues(app), ssl=ssl, **options)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def envelope(self) -> Envelope:
        """The envelope of the configured key ring (ConfigurationError when there is none)."""
        if self._envelope is None:
            self._envelope = envelope_from_settings(self.settings)
        return self._envelope

    # -- queues ----------------------------------------------------------------
    def queues(self) -> list[str]:
        """The app's queues, then every other queue the store holds messages for."""
        return list(dict.fromkeys([*self.known_queues, *self.store.queues()]))

    def check_queue(self, queue: str) -> str:
        """``queue`` if the app declares it or the store holds something for it."""
        if queue in self.known_queues or self.store.counts(queue) != QueueCounts():
            return queue
        known = ", ".join(self.queues()) or "none declared"
        raise UnknownQueue(f"unknown queue {queue!r} (known queues: {known})")

    def _scope(self, queues: QueueScope) -> list[str]:
        """The queues an operation covers: the given ones (checked) or every queue."""
        if queues is None:
            return self.queues()
        names = [queues] if isinstance(queues, str) else list(queues)
        return [self.check_queue(q) for q in dict.fromkeys(names)] or self.queues()

    def stats(self, queues: QueueScope = None) -> list[QueueStats]:
        """Per queue: messages in each state, ready ones per priority level, and the age
        of the oldest ready message. Applies the dead-letter retention first."""
        now = time.time()
        result = []
        for queue in self._scope(queues):
            self.store.trim_dead(queue, self.store.retention)
            counts = self.store.counts(queue)
            levels = self.store.ready_levels(queue)
            created = [first for _, first in levels.values() if first is not None]
            result.append(
                QueueStats(
                    queue=queue,
                    ready=counts.ready,
                    delayed=counts.delayed,
                    waiting=counts.waiting,
                    inflight=counts.inflight,
                    dead=counts.dead,
                    ready_by_priority={p: levels[p][0] for p in sorted(levels, reverse=True)},
                    oldest_ready_age_seconds=max(now - min(created), 0.0) if created else None,
                )
            )
        return result

    # -- messages --------------------------------------------------------------
    def messages(
        self,
        queue: QueueScope = None,
        state: State | str | None = None,
        task_name: str | None = None,
        priority: int | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[MessageInfo]:
        """A page of messages (of ``queue``, or of every queue), filtered by state, task
        name and priority; in each queue ready first (in hand-out order), then delayed,
        waiting, in flight and dead."""
        scope = self._scope(queue)
        states = STATE_ORDER if state is None else (parse_state(state),)
        wanted = None if priority is None else normalize_priority(priority)
        matches = (
            info
            for q in scope
            for s in states
            for info in self._all(q, s)
            if (task_name is None or info.task_name == task_name)
            and (wanted is None or info.priority == wanted)
        )
        return page_of(matches, offset, limit)

    def _all(self, queue: str, state: State) -> Iterator[MessageInfo]:
        offset = 0
        while True:
            batch = self.store.list_messages(queue, state, offset, PAGE)
            yield from batch
            if len(batch) < PAGE:
                return
            offset += PAGE

    def find(self, message_or_task_id: str, queues: QueueScope = None) -> MessageInfo:
        """The message with this message id or Celery task id, in any state (by message
        id first, then through the store's task id index)."""
        searched = self._scope(queues)
        for lookup in (self.store.info, self.store.find_task):
            for queue in searched:
                info = lookup(queue, message_or_task_id)
                if info is not None:
                    return info
        raise MessageNotFound(
            f"no message or task with id {message_or_task_id!r} in "
            f"{', '.join(searched) or 'any queue'}"
        )

    def show(
        self, message_or_task_id: str, queues: QueueScope = None, raw: bool = False
    ) -> dict[str, Any]:
        """Everything known about one message; decrypted unless ``raw`` or no key is at hand.

        Keys: the metadata of :class:`~tq_kombu.store.base.MessageInfo`, ``envelope``
        (what the stored envelope says in clear), and unless ``raw``: ``message``
        (headers, properties, body) and, for a failed task, ``failure`` (exception
        type, message, traceback) — or ``message`` saying why it could not be decrypted.
        """
        info = self.find(message_or_task_id, queues)
        shown = message_fields(info)
        payload = self.store.payload(info.queue, info.message_id) or b""
        shown["envelope"] = envelope_header(payload)
        if raw:
            return shown
        try:
            message = self.envelope.open(info.message_id, payload)
            shown["message"] = {
                "headers": message.get("headers"),
                "properties": message.get("properties"),
                "content_type": message.get("content-type"),
                "body": decode_body(message),
            }
            if info.state == State.DEAD:
                sealed = self.store.dead_failure(info.queue, info.message_id)
                if sealed:
                    shown["failure"] = self.envelope.open_record(info.message_id, sealed)
        except (ConfigurationError, EnvelopeError) as exc:
            shown["message"] = f"(not decrypted: {exc})"
        return shown

    def cancel(self, queue: QueueScope, message_id: str) -> MessageInfo:
        """Delete a ready, delayed or waiting message (by message or task id) so that it
        never runs, worker or not; return what it was."""
        info = self.find(message_id, queue)
        if not self.store.cancel(info.queue, info.message_id):
            raise MessageNotFound(
                f"message {message_id!r} is {info.state.value}, not queued: it cannot be cancelled"
            )
        return info

    def reprioritize(self, queue: QueueScope, message_id: str, priority: int) -> MessageInfo:
        """Give a ready, delayed or waiting message a new priority; return what it was."""
        new = normalize_priority(priority)
        info = self.find(message_id, queue)
        if not self.store.set_priority(info.queue, info.message_id, new):
            raise MessageNotFound(
                f"message {message_id!r} is {info.state.value}, not queued: its priority is fixed"
            )
        return info

    def purge(self, queue: str, state: State | str = State.READY) -> int:
        """Delete the queue's ready, delayed, waiting or dead messages (one state at a time)."""
        chosen = parse_state(state)
        if chosen not in PURGEABLE:
            raise ConfigurationError(
                f"purge takes {', '.join(s.value for s in PURGEABLE)}, not {chosen.value}"
            )
        return self.store.purge(self.check_queue(queue), chosen)

    # -- dead letters ----------------------------------------------------------
    def dead_letters(
        self,
        queue: QueueScope = None,
        reason: str | None = None,
        task_name: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[MessageInfo]:
        """Dead messages of ``queue`` (or of every queue), oldest first in each queue,
        after applying the retention policy."""
        return page_of(self._dead(self._scope(queue), reason, task_name), offset, limit)

    def _dead(
        self, scope: list[str], reason: str | None, task_name: str | None
    ) -> Iterator[MessageInfo]:
        wanted = None if reason is None else parse_reason(reason)
        for q in scope:
            self.store.trim_dead(q, self.store.retention)
            for info in self._all(q, State.DEAD):
                if (wanted is None or info.dead_reason == wanted) and (
                    task_name is None or info.task_name == task_name
                ):
                    yield info

    def retry_dead(
        self,
        queue: QueueScope = None,
        message_ids: Iterable[str] | None = None,
        reason: str | None = None,
        task_name: str | None = None,
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """Replay dead messages — the given ids (message or task ids), else every one
        matching the filters — each to its own queue or ``to_queue``, at its priority or
        ``priority``, delivery count reset; return how many were replayed.

        Each replay is atomic (never both dead and queued). Every id and option is
        checked before the first replay, so bad input changes nothing."""
        new_priority = None if priority is None else normalize_priority(priority)
        if to_queue is not None:
            self.check_queue(to_queue)
        scope = self._scope(queue)
        ids = list(message_ids or [])
        if ids:
            targets = [self.find(mid, scope) for mid in ids]
            for mid, info in zip(ids, targets, strict=True):
                if info.state != State.DEAD:
                    raise MessageNotFound(f"message {mid!r} is {info.state.value}, not dead")
        else:
            targets = list(self._dead(scope, reason, task_name))
        by_queue: dict[str, list[str]] = {}
        for info in targets:
            by_queue.setdefault(info.queue, []).append(info.message_id)
        return sum(
            self.store.replay_many(q, ids, to_queue, new_priority) for q, ids in by_queue.items()
        )

    def purge_dead(self, queue: QueueScope = None) -> int:
        """Delete the dead messages of ``queue`` (or of every queue); return how many."""
        return sum(self.store.purge(q, State.DEAD) for q in self._scope(queue))

    def bury_task(
        self,
        queue: str,
        message: dict[str, Any],
        dead: DeadLetter,
        failure: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> tuple[str, State | None]:
        """Set a task aside as dead with its failure record, sealed with the key ring.

        ``message_id`` names the message in the store (a new id when None): if the
        queue still holds it, it moves to dead in place (keeping the original payload);
        otherwise ``message`` (a kombu message dict) is sealed and stored as dead under
        that id. Returns the id and the state the message was in before (see
        :meth:`~tq_kombu.store.base.Store.bury_payload`)."""
        properties = message["properties"]
        message_id = message_id or str(properties.get("delivery_tag") or uuid.uuid4().hex)
        properties["delivery_tag"] = message_id
        headers = message.get("headers") or {}
        sealed_failure = self.envelope.seal_record(message_id, dict(failure)) if failure else b""
        before = self.store.bury_payload(
            queue,
            NewMessage(
                message_id=message_id,
                payload=self.envelope.seal(message_id, message),
                priority=normalize_priority(properties.get("priority")),
                task_name=str(headers.get("task") or ""),
                task_id=str(headers.get("id") or ""),
            ),
            DeadLetter(
                dead.reason,
                dead.detail,
                sealed_failure,
                dead.hostname,
                attempts=dead.attempts,
                delivery_count=dead.delivery_count,
                first_seen=dead.first_seen,
            ),
        )
        return message_id, before
