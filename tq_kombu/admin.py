"""Queue administration and the dead-letter store, for people and scripts.

    admin = Admin.from_app(app)                    # or Admin("tq+redis://...", **options)
    admin.stats()                                  # counts per queue and priority level
    admin.messages("emails", state="delayed")      # list, with paging and filters
    admin.cancel("emails", message_id)             # it never runs, worker or not
    admin.dead_letters("emails", reason="failed")  # what died, and why
    admin.retry_dead("emails", all=True)           # back to their queues, atomically

Payloads stay encrypted at rest; ``show`` decrypts them when the key ring is at hand.
"""

from __future__ import annotations

import base64
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .envelope import Envelope, EnvelopeError
from .errors import ConfigurationError, MessageNotFound, TQError
from .keyring import keyring_from_options
from .priority import normalize_priority
from .store import Store, open_store
from .store.base import DeadLetter, MessageInfo, NewMessage, QueueCounts, State

#: The order in which states are listed when none is asked for.
STATE_ORDER = (State.READY, State.DELAYED, State.WAITING, State.INFLIGHT, State.DEAD)
PAGE = 500


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


def store_url(url: str) -> str:
    """The store URL behind a broker URL (``tq+redis://...`` -> ``redis://...``)."""
    return url.split("+", 1)[1] if url.startswith("tq+") else url


class Admin:
    """One method per administrative operation, on the store behind a tq broker."""

    def __init__(self, url: str, queues: list[str] | None = None, **transport_options: Any) -> None:
        self.store: Store = open_store(store_url(url), **transport_options)
        self.transport_options = transport_options
        #: Queues the app declares: always known, even when empty.
        self.known_queues = list(dict.fromkeys(queues or []))
        self._envelope: Envelope | None = None

    @classmethod
    def from_app(cls, app: Any) -> Admin:
        """The Admin of a Celery app's broker (``broker_url`` and transport options)."""
        conf = app.conf
        url = conf.broker_url or ""
        url = url[0] if isinstance(url, (list, tuple)) else url
        plain = str(url).startswith(("redis", "sqlite")) and "tq_kombu" in str(
            conf.broker_transport or ""
        )
        if not (str(url).startswith("tq+") or plain):
            raise ConfigurationError(
                f"the broker {url!r} is not a tq broker: set broker_url to "
                "'tq+redis://...' or 'tq+sqlite:///...'"
            )
        queues = sorted(app.amqp.queues) or [conf.task_default_queue]
        return cls(str(url), queues, **dict(conf.broker_transport_options or {}))

    def close(self) -> None:
        self.store.close()

    @property
    def envelope(self) -> Envelope:
        """The envelope of the configured key ring (ConfigurationError when there is none)."""
        if self._envelope is None:
            self._envelope = Envelope(
                keyring_from_options(self.transport_options),
                compress_min_bytes=int(self.transport_options.get("compress_min_bytes", 1024)),
                compression=str(self.transport_options.get("compression", "zlib")),
            )
        return self._envelope

    # -- queues ----------------------------------------------------------------
    def check_queue(self, queue: str) -> str:
        """``queue`` if the app declares it or the store holds something for it."""
        if queue in self.known_queues or self.store.counts(queue) != QueueCounts():
            return queue
        known = ", ".join(self.known_queues) or "none declared"
        raise UnknownQueue(f"unknown queue {queue!r} (the app's queues: {known})")

    def stats(self, queues: list[str] | None = None) -> list[QueueStats]:
        now = time.time()
        result = []
        for queue in queues or self.known_queues:
            counts = self.store.counts(self.check_queue(queue))
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
        queue: str,
        state: State | str | None = None,
        task_name: str | None = None,
        priority: int | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[MessageInfo]:
        """A page of the queue's messages, filtered by state, task name and priority."""
        self.check_queue(queue)
        states = STATE_ORDER if state is None else (parse_state(state),)
        matches = (
            info
            for s in states
            for info in self._all(queue, s)
            if (task_name is None or info.task_name == task_name)
            and (priority is None or info.priority == priority)
        )
        return _page(matches, offset, limit)

    def _all(self, queue: str, state: State) -> Iterator[MessageInfo]:
        offset = 0
        while True:
            batch = self.store.list_messages(queue, state, offset, PAGE)
            yield from batch
            if len(batch) < PAGE:
                return
            offset += PAGE

    def find(self, message_or_task_id: str, queues: list[str] | None = None) -> MessageInfo:
        """The message with this message id or Celery task id, in any state."""
        searched = [self.check_queue(q) for q in queues] if queues else self.known_queues
        for queue in searched:
            info = self.store.info(queue, message_or_task_id)
            if info is not None:
                return info
        for queue in searched:
            for state in STATE_ORDER:
                for info in self._all(queue, state):
                    if info.task_id == message_or_task_id:
                        return info
        raise MessageNotFound(
            f"no message or task with id {message_or_task_id!r} in {', '.join(searched)}"
        )

    def show(
        self, message_or_task_id: str, queues: list[str] | None = None, raw: bool = False
    ) -> dict[str, Any]:
        """Everything known about one message; decrypted unless ``raw`` or no key is at hand."""
        info = self.find(message_or_task_id, queues)
        shown: dict[str, Any] = {k: v for k, v in asdict(info).items() if v is not None}
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

    def cancel(self, queue: str, message_id: str) -> None:
        """Delete a ready, delayed or waiting message (by message or task id)."""
        info = self.find(message_id, [queue])
        if not self.store.cancel(info.queue, info.message_id):
            raise MessageNotFound(
                f"message {message_id!r} is {info.state.value}, not queued: it cannot be cancelled"
            )

    def reprioritize(self, queue: str, message_id: str, priority: int) -> None:
        new = normalize_priority(priority)
        info = self.find(message_id, [queue])
        if not self.store.set_priority(info.queue, info.message_id, new):
            raise MessageNotFound(
                f"message {message_id!r} is {info.state.value}, not queued: its priority is fixed"
            )

    def purge(self, queue: str, state: State | str = State.READY) -> int:
        """Delete the queue's ready, delayed or dead messages (one state at a time)."""
        chosen = parse_state(state)
        if chosen not in (State.READY, State.DELAYED, State.DEAD, State.WAITING):
            raise ConfigurationError("purge takes ready, delayed, waiting or dead")
        return self.store.purge(self.check_queue(queue), chosen)

    # -- dead letters ----------------------------------------------------------
    def dead_letters(
        self,
        queue: str | None = None,
        reason: str | None = None,
        task_name: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[MessageInfo]:
        """Dead messages, oldest first, of one queue or every known queue."""
        return _page(self._dead(queue, reason, task_name), offset, limit)

    def _dead(
        self, queue: str | None, reason: str | None, task_name: str | None
    ) -> Iterator[MessageInfo]:
        for q in [self.check_queue(queue)] if queue else self.known_queues:
            for info in self._all(q, State.DEAD):
                if (reason is None or info.dead_reason == reason) and (
                    task_name is None or info.task_name == task_name
                ):
                    yield info

    def retry_dead(
        self,
        queue: str | None = None,
        message_ids: list[str] | None = None,
        reason: str | None = None,
        task_name: str | None = None,
        to_queue: str | None = None,
        priority: int | None = None,
    ) -> int:
        """Replay dead messages (the given ids, else all matching the filters) to their
        queue or ``to_queue``, at their priority or ``priority``; return how many."""
        new_priority = None if priority is None else normalize_priority(priority)
        if message_ids:
            targets = [self.find(mid, [queue] if queue else None) for mid in message_ids]
            for info in targets:
                if info.state != State.DEAD:
                    raise MessageNotFound(f"message {info.message_id!r} is not dead")
        else:
            targets = list(self._dead(queue, reason, task_name))
        return sum(
            self.store.replay(info.queue, info.message_id, to_queue, new_priority)
            for info in targets
        )

    def purge_dead(self, queue: str | None = None) -> int:
        return sum(
            self.store.purge(q, State.DEAD)
            for q in ([self.check_queue(queue)] if queue else self.known_queues)
        )

    def bury_message(
        self, queue: str, message: dict[str, Any], dead: DeadLetter, failure: Mapping[str, Any]
    ) -> str:
        """Seal a kombu message and its failure record and store them as dead; return the id."""
        properties = message["properties"]
        message_id = properties.setdefault("delivery_tag", uuid.uuid4().hex)
        headers = message.get("headers") or {}
        sealed_failure = self.envelope.seal_record(message_id, dict(failure))
        self.store.bury_payload(
            queue,
            NewMessage(
                message_id=message_id,
                payload=self.envelope.seal(message_id, message),
                priority=normalize_priority(properties.get("priority")),
                task_name=str(headers.get("task") or ""),
                task_id=str(headers.get("id") or ""),
            ),
            DeadLetter(dead.reason, dead.detail, sealed_failure, dead.hostname),
        )
        return str(message_id)


def parse_state(state: State | str) -> State:
    try:
        return State(state)
    except ValueError:
        choices = ", ".join(s.value for s in State)
        raise ConfigurationError(f"unknown state {state!r}: use one of {choices}") from None


def envelope_header(payload: bytes) -> dict[str, Any]:
    """What the stored envelope says in clear: version, compression, key id, size."""
    if len(payload) < 3:
        return {"bytes": len(payload), "readable": False}
    compression = {0: "none", 1: "zlib", 2: "zstd"}.get(payload[1], f"unknown ({payload[1]})")
    header: dict[str, Any] = {
        "version": payload[0],
        "compression": compression,
        "bytes": len(payload),
    }
    if payload[0] == 2:
        header["key_id"] = payload[3 : 3 + payload[2]].decode(errors="replace")
    return header


def decode_body(message: Mapping[str, Any]) -> Any:
    """The task body of a kombu message, deserialized when the content type allows."""
    from kombu.serialization import loads

    body = message.get("body")
    if message.get("properties", {}).get("body_encoding") == "base64" and isinstance(body, str):
        body = base64.b64decode(body)
    try:
        return loads(
            body,
            message.get("content-type") or "application/json",
            message.get("content-encoding") or "utf-8",
            accept={"application/json", "application/x-msgpack", "application/x-yaml"},
        )
    except Exception:  # noqa: BLE001 - pickle and unknown types are shown, not run
        return repr(body)[:2000]


def failure_record(exc: BaseException, tb: Any = None) -> dict[str, Any]:
    """The record kept (sealed) for a failed task."""
    return {
        "exc_type": type(exc).__name__,
        "exc_message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)),
    }


def _page(items: Iterator[MessageInfo], offset: int, limit: int) -> list[MessageInfo]:
    page: list[MessageInfo] = []
    for i, item in enumerate(items):
        if i >= offset + limit:
            break
        if i >= offset:
            page.append(item)
    return page
