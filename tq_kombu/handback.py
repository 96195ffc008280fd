"""How a held delivery goes back to its queue when its consumer lets go of it unsettled.

kombu returns every delivered but unacknowledged message when a channel closes (a warm
shutdown, a connection closed on purpose). The transport cannot tell a message whose
task ran (and may crash every worker it reaches) from one only prefetched, so by default
it *releases* it: back to ready, the delivery still counted. A consumer that knows which
deliveries never started (the Celery extension: requests never accepted by a pool
process) registers a probe, and those are *given back* instead: ready at their priority
with the delivery count they had before the fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Says, for a kombu delivery tag, whether its message never started (True), started or
#: is unknown (False).
StartedProbe = Callable[[str], bool]

_unstarted_probe: StartedProbe | None = None


def set_unstarted_probe(probe: StartedProbe | None) -> None:
    """Register (or with None, remove) the process's probe of unstarted deliveries."""
    global _unstarted_probe
    _unstarted_probe = probe


def return_action(delivery_tag: str) -> str:
    """The settle for a delivery let go of unsettled: ``give_back`` when the probe says
    it never started, ``release`` (the delivery stays counted) otherwise."""
    probe = _unstarted_probe
    if probe is None:
        return "release"
    try:
        unstarted = probe(delivery_tag)
    except Exception:  # noqa: BLE001 - a faulty probe must not keep a message held
        logger.exception("tq: the unstarted-delivery probe failed; releasing %s", delivery_tag)
        return "release"
    return "give_back" if unstarted else "release"
