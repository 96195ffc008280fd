"""One error tree for tq: every error tq raises derives from :class:`TQError`."""

from __future__ import annotations


class TQError(Exception):
    """Base of every error raised by tq."""


class ConfigurationError(TQError, ValueError):
    """A setting or broker URL is wrong; the message says which and how to fix it."""


class PriorityError(TQError, ValueError):
    """A message priority is not an integer in 0..255."""


class StoreError(TQError):
    """The storage backend failed (connection lost, locked database, ...)."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached right now; the worker reconnects by itself."""


class MessageNotFound(TQError, LookupError):
    """No message with that id is held in that queue."""


class MessageTooLarge(TQError, ValueError):
    """A message is over ``max_message_bytes``; the message names its size and the option."""


class LimitKeyError(TQError, ValueError):
    """A message's limits could not be worked out at publish (its task's ``tq_limit_key``
    failed, or its ``tq_limits`` header is malformed); the message names the task."""


class DependencyError(ConfigurationError):
    """A task's dependencies are wrong (unknown parent type, itself, a cycle, too many
    parents, a bad policy or timeout); raised at publish, before anything is stored."""
