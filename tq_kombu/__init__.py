"""tq_kombu: a kombu transport with strict priorities, leases, broker-side delays
and dead-letter retention, on Redis or SQLite.

Importing this package registers the ``tq`` transport alias, so that
``broker_url = "tq+redis://127.0.0.1:6379/0"`` or ``"tq+sqlite:///queue.db"`` work.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

from .appconf import connect_worker_setup_check
from .bulk import bulk
from .errors import (
    ConfigurationError,
    DependencyError,
    MessageTooLarge,
    PriorityError,
    StoreError,
    StoreUnavailable,
    TQError,
)
from .priority import Priority, connect_celery_default_priority

TRANSPORT_ALIASES.setdefault("tq", "tq_kombu.transport:Transport")
connect_celery_default_priority()
connect_worker_setup_check()

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DependencyError",
    "MessageTooLarge",
    "Priority",
    "PriorityError",
    "StoreError",
    "StoreUnavailable",
    "TQError",
    "__version__",
    "bulk",
]
