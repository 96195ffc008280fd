"""Limits: cluster-wide rate and concurrency limits, decided by the store at fetch.

A message enqueued with ``limits`` (:class:`~tq_kombu.store.model.LimitTag`: kind, name,
key) is handed out only when every limit it names admits it, in the same atomic step as
its lease; meanwhile it stays ready in the store and holds no worker slot.

- **Rate** (kind ``rate``): the Generic Cell Rate Algorithm per (name, key) with the
  definition's ``interval_us`` and ``tolerance_us`` (the reference is
  :mod:`tq_kombu.store.gcra`): in any window of one period at most ``limit + burst``
  starts, over every consumer of every process. Every start counts, a redelivery too.
- **Concurrency** (kind ``concurrency``): at most ``slots`` leases held at once per
  (name, key). A lease takes a slot when it is handed out and frees it when settled
  (ack, release, requeue, bury) or when it expires; renewing keeps it. A stale lease
  token frees nothing.
- **Fairness.** Among messages of one priority that limits hold back, keys take turns
  (round robin between keys), so one key's backlog never starves another key; priority
  still orders work inside a key and across keys.
- **Nothing spins.** A fetch that leaves limited messages behind reports in
  ``FetchResult.next_due`` the earliest time a rate limit admits one of them; a freed
  concurrency slot wakes waiting consumers as a new message does.
- A limit name the store does not define limits nothing. Definitions are shared by all
  processes: workers write their settings (``define_limits``); an operator's change
  (``set_limit``, ``remove_limit``) applies at every consumer's next fetch, and settings
  do not overwrite a definition set at run time until it is removed.
- A fetch looks past at most :data:`~.hot_path.SKIP_SCAN_LIMIT` held-back messages (or
  keys) per queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ...errors import ConfigurationError
from ..model import LimitDefinition, LimitStatus, LimitTag

KINDS = ("rate", "concurrency")
ORIGINS = ("settings", "runtime")
#: Longest limit name and longest key.
MAX_NAME_CHARS = 200
MAX_KEY_CHARS = 200


def checked_tag(tag: object) -> LimitTag:
    if (
        not isinstance(tag, LimitTag)
        or tag.kind not in KINDS
        or not isinstance(tag.name, str)
        or not 0 < len(tag.name) <= MAX_NAME_CHARS
        or not isinstance(tag.key, str)
        or len(tag.key) > MAX_KEY_CHARS
    ):
        raise ConfigurationError(
            f"a limit tag must be LimitTag(kind in {KINDS}, a name of 1..{MAX_NAME_CHARS} "
            f"characters, a key of at most {MAX_KEY_CHARS}), got {tag!r}"
        )
    return tag


def checked_definition(definition: object, origin: str | None = None) -> LimitDefinition:
    """A definition with consistent numbers; ``origin`` replaces its own when given."""
    if not isinstance(definition, LimitDefinition):
        raise ConfigurationError(f"expected a LimitDefinition, got {definition!r}")
    checked_tag(LimitTag(definition.kind, definition.name, ""))
    numbers = (definition.interval_us, definition.tolerance_us, definition.slots)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers):
        raise ConfigurationError(f"limit {definition.name!r}: whole numbers >= 0 only")
    if definition.kind == "rate" and definition.interval_us < 1:
        raise ConfigurationError(f"rate limit {definition.name!r}: interval_us must be >= 1")
    if definition.kind == "concurrency" and definition.slots < 1:
        raise ConfigurationError(f"concurrency limit {definition.name!r}: slots must be >= 1")
    chosen = definition.origin if origin is None else origin
    if chosen not in ORIGINS:
        raise ConfigurationError(f"a limit's origin is one of {ORIGINS}, got {chosen!r}")
    if chosen != definition.origin:
        from dataclasses import replace

        return replace(definition, origin=chosen)
    return definition


class Limits(ABC):
    """Define limits; read their state. Enforcement lives in each store's fetch/settle."""

    def define_limits(self, definitions: Sequence[LimitDefinition]) -> None:
        """Write the definitions of an app's settings (origin ``settings``), each
        replacing one of the same name unless that one was set at run time."""
        checked = [checked_definition(d, "settings") for d in definitions]
        if checked:
            self._define_limits(checked)

    def set_limit(self, definition: LimitDefinition) -> None:
        """Set one limit at run time (origin ``runtime``), for every consumer's next fetch."""
        self._set_limit(checked_definition(definition, "runtime"))

    def remove_limit(self, name: str) -> bool:
        """Forget a limit (its messages then start unlimited, or under the definition
        that a worker's settings write next); False if it was not defined."""
        return self._remove_limit(checked_tag(LimitTag("rate", name, "")).name)

    def limits(self) -> list[LimitDefinition]:
        """Every defined limit, by name."""
        return self._limits()

    def limit_status(self, name: str) -> LimitStatus | None:
        """A limit's definition, its keys with what waits and runs, and recent starts;
        None when not defined."""
        return self._limit_status(checked_tag(LimitTag("rate", name, "")).name)

    # -- the backend's hooks, called with checked values -------------------------
    @abstractmethod
    def _define_limits(self, definitions: list[LimitDefinition]) -> None: ...

    @abstractmethod
    def _set_limit(self, definition: LimitDefinition) -> None: ...

    @abstractmethod
    def _remove_limit(self, name: str) -> bool: ...

    @abstractmethod
    def _limits(self) -> list[LimitDefinition]: ...

    @abstractmethod
    def _limit_status(self, name: str) -> LimitStatus | None: ...
