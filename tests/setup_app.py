"""A Celery app whose tq setup comes from the environment, for tests of setup errors.

TQ_SETUP_URL (broker_url; unset: none), TQ_SETUP_TRANSPORT (broker_transport),
TQ_SETUP_OPTIONS (broker_transport_options as JSON), TQ_SETUP_RETRY ("1": retry on startup).
"""

from __future__ import annotations

import json
import os

from celery import Celery

import tq_kombu  # noqa: F401

app = Celery("setup_app")
app.conf.update(
    broker_url=os.environ.get("TQ_SETUP_URL"),
    broker_transport=os.environ.get("TQ_SETUP_TRANSPORT"),
    broker_transport_options=json.loads(os.environ.get("TQ_SETUP_OPTIONS", "{}")),
    broker_connection_retry_on_startup=os.environ.get("TQ_SETUP_RETRY") == "1",
)


@app.task
def noop() -> None:
    return None
