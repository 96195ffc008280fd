"""A Celery app under tq limits, its setup from the environment, for worker start-up tests.

TQ_LIMITS_URL (broker_url), TQ_LIMITS_TASK_RATE (the tq_rate_limit of ``limits.call_api``,
default "api_calls").
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import tq_celery_ext
import tq_kombu  # noqa: F401

app = Celery("limits_app")
app.conf.update(
    broker_url=os.environ.get("TQ_LIMITS_URL"),
    broker_connection_retry_on_startup=False,
    tq_rate_limits={"api_calls": "100/m", "email": "50/h", "search": {"rate": "10/s", "burst": 5}},
    tq_concurrency_limits={"heavy_reports": 2},
)
tq_celery_ext.install(app)


def tenant_of(args: Any, kwargs: Any) -> str:
    """The key of a message: its tenant."""
    return str(kwargs["tenant"])


@app.task(
    shared=False,  # (imported by other tests: keep these tasks off their apps)
    name="limits.call_api",
    tq_rate_limit=os.environ.get("TQ_LIMITS_TASK_RATE", "api_calls"),
    tq_limit_key="tests.limits_app.tenant_of",
)
def call_api(tenant: str) -> str:
    return tenant


@app.task(shared=False, name="limits.report", tq_concurrency_limit="heavy_reports")
def report() -> None:
    return None
