"""Administration of cluster-wide limits: what is defined, what waits and runs under each.

Mixed into :class:`~tq_kombu.admin.Admin`::

    admin.limits()                   # every defined limit
    admin.limit_status("api_calls")  # its keys, what waits and runs, recent starts
    admin.set_limit(definition)      # a run-time change, obeyed at every next fetch
    admin.remove_limit("api_calls")  # its messages then start unlimited

Rates here are the store's numbers (microseconds); ``tq_celery_ext.limits_of(app)``
takes rates as people write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..store.model import LimitDefinition, LimitStatus

if TYPE_CHECKING:
    from ..store import Store


class LimitAdmin:
    """The limit operations of the Admin."""

    store: Store

    def limits(self) -> list[LimitDefinition]:
        """Every defined limit, by name."""
        return self.store.limits()

    def limit_status(self, name: str) -> LimitStatus | None:
        """One limit's definition, keys, waiting and running messages; None: not defined."""
        return self.store.limit_status(name)

    def limit_statuses(self) -> list[LimitStatus]:
        """The status of every defined limit, by name."""
        found = (self.store.limit_status(d.name) for d in self.store.limits())
        return [status for status in found if status is not None]

    def define_limits(self, definitions: Sequence[LimitDefinition]) -> None:
        """Write an app's settings (never over a limit set at run time)."""
        self.store.define_limits(definitions)

    def set_limit(self, definition: LimitDefinition) -> None:
        """Set one limit at run time, for every consumer's next fetch."""
        self.store.set_limit(definition)

    def remove_limit(self, name: str) -> bool:
        """Forget a limit; False if it was not defined."""
        return self.store.remove_limit(name)
