"""Every key name of the Redis store, built here and nowhere else.

A queue's keys share the hash tag ``{<prefix>:<queue>}`` (one cluster slot per queue):
``{<prefix>:<queue>}:<part>`` for each part of :data:`QUEUE_KEYS`. The store's global
keys are ``<prefix>:bindings:<exchange>``, ``<prefix>:workers`` and
``<prefix>:expiring-queues``.

The prefix is written as it is when it holds only letters, digits, ``_``, ``.``, ``-``
and ``~`` (``tq``, the default), and percent-encoded otherwise; so it never holds ``:``
and two prefixes never share a key, whatever the queue names (``tq`` + queue
``staging:emails`` and ``tq:staging`` + queue ``emails`` are different queues).
"""

from __future__ import annotations

from urllib.parse import quote

from ...priority import MAX_PRIORITY
from ..model import State

__all__ = [
    "KEY_SUBSETS",
    "QUEUE_KEYS",
    "SCORE_SPAN",
    "STATE_KEYS",
    "KeyNames",
    "prefix_in_keys",
    "priority_of_score",
]

#: One queue's keys, in the order every script receives them (its "group" of KEYS):
#: ready, delayed, inflight, dead, waiting (zsets of ids by score, due time, lease
#: deadline, dead-at time, sequence), meta (id -> JSON), bodies (id -> payload), seq (the
#: FIFO counter), marker (what consumers block on), expiring (id -> time to live's end),
#: lifetime (the queue's declared limits), counts (ready messages per priority, kept),
#: ages (ready ids by priority and first-seen time, kept), tasks (Celery task id -> id),
#: exchanges (the exchanges the queue is bound to). Lua reads the same order from the
#: generated include ``queue_keys`` (see :mod:`.scripts`).
QUEUE_KEYS = (
    "ready",
    "delayed",
    "inflight",
    "dead",
    "waiting",
    "meta",
    "bodies",
    "seq",
    "marker",
    "expiring",
    "lifetime",
    "counts",
    "ages",
    "tasks",
    "exchanges",
)
#: The few keys of a queue that a frequent script touches, in the order it receives them
#: (the whole group costs a hot call more to send than it does to run). Lua reads each
#: order from the generated include of the same name (see :mod:`.scripts`).
KEY_SUBSETS = {
    #: ack.lua: check the lease, then forget the message
    "ack_keys": ("meta", "inflight", "bodies", "expiring", "tasks"),
    #: renew.lua: check each lease, then push its deadline
    "lease_keys": ("meta", "inflight"),
}
#: The sorted set holding a queue's messages in each state.
STATE_KEYS = {
    State.READY: "ready",
    State.DELAYED: "delayed",
    State.INFLIGHT: "inflight",
    State.DEAD: "dead",
    State.WAITING: "waiting",
}
#: Ready scores are (MAX_PRIORITY - priority) * SCORE_SPAN + sequence, so lower scores
#: are more urgent and FIFO holds within a level; ages scores use the first-seen time
#: in ms in place of the sequence. 256 * 2**44 stays exact in a double.
SCORE_SPAN = 2**44


def priority_of_score(score: float) -> int:
    """The priority a ready (or ages) score encodes."""
    return MAX_PRIORITY - int(score) // SCORE_SPAN


def prefix_in_keys(key_prefix: str) -> str:
    """``key_prefix`` as key names hold it: unchanged if it has only letters, digits,
    ``_.-~``, percent-encoded otherwise (so it holds no ``:``, ``{`` or ``}``)."""
    return quote(key_prefix, safe="")


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class KeyNames:
    """The key names of one store (one ``key_prefix``)."""

    def __init__(self, key_prefix: str) -> None:
        self.key_prefix = key_prefix
        self.prefix = prefix_in_keys(key_prefix)
        self._cache: dict[str, dict[str, str]] = {}
        self._subsets: dict[tuple[str, str], list[str]] = {}
        #: The index of self-expiring queues (zset: queue name -> deadline in ms).
        self.expiring_queues = f"{self.prefix}:expiring-queues"
        #: Worker heartbeats (hash: worker -> JSON).
        self.workers = f"{self.prefix}:workers"

    def queue(self, queue: str) -> dict[str, str]:
        """A queue's keys by part, all under one hash tag."""
        keys = self._cache.get(queue)
        if keys is None:
            tag = "{" + f"{self.prefix}:{queue}" + "}"
            keys = {part: f"{tag}:{part}" for part in QUEUE_KEYS}
            self._cache[queue] = keys
        return keys

    def group(self, queue: str) -> list[str]:
        """A queue's keys in :data:`QUEUE_KEYS` order, as scripts receive them."""
        return list(self.queue(queue).values())

    def subset(self, queue: str, name: str) -> list[str]:
        """A queue's keys of :data:`KEY_SUBSETS` ``[name]``, in its order."""
        keys = self._subsets.get((queue, name))
        if keys is None:
            by_part = self.queue(queue)
            keys = self._subsets[(queue, name)] = [by_part[p] for p in KEY_SUBSETS[name]]
        return keys

    def bindings(self, exchange: str) -> str:
        """The bindings of an exchange (hash: JSON [routing key, pattern, queue] -> expiry)."""
        return f"{self.prefix}:bindings:{exchange}"

    def meta_pattern(self) -> str:
        """A SCAN pattern matching every queue's metadata hash."""
        return _glob_escape(self._meta_head) + "*" + _glob_escape(self._meta_tail)

    def queue_of_meta_key(self, key: str) -> str | None:
        """The queue whose metadata hash ``key`` is, or None for another key."""
        head, tail = self._meta_head, self._meta_tail
        if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
            return key[len(head) : -len(tail)]
        return None

    @property
    def _meta_head(self) -> str:
        return "{" + f"{self.prefix}:"

    _meta_tail = "}:meta"
