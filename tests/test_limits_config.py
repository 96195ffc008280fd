"""An app's limits as its settings and tasks state them: per task, which limits apply and
how its key is computed; a clear error naming the task or the setting otherwise, and a
worker that will not start with one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tq_celery_ext.limits import Kind, LimitRef, Rate, app_limits
from tq_celery_ext.limits.config import plan_task, read_definitions
from tq_kombu.errors import ConfigurationError

from .workers import Worker, run_celery

RATES = {"api_calls": "100/m", "email": "50/h", "search": {"rate": "10/s", "burst": 5}}


def new_app(**settings: Any) -> Celery:
    """A fresh app (its tasks are declared shared=False: Celery gives shared tasks to every
    app finalized later)."""
    app = Celery(f"limits-{uuid.uuid4().hex[:8]}", broker=f"tq+memory://{uuid.uuid4().hex}")
    app.conf.update(settings)
    return app


def tenant_of(args: Any, kwargs: Any) -> str:
    return str(kwargs["tenant"])


def test_named_limits_are_read_from_the_settings() -> None:
    app = new_app(tq_rate_limits=RATES, tq_concurrency_limits={"heavy_reports": 2})
    definitions = read_definitions(app.conf)
    assert definitions.rates == {
        "api_calls": Rate(100, 60),
        "email": Rate(50, 3600),
        "search": Rate(10, 1, burst=5),
    }
    assert definitions.concurrency == {"heavy_reports": 2}


def test_an_app_without_limit_settings_has_no_limits_and_no_plans() -> None:
    app = new_app()

    @app.task(shared=False, name="plain.task")
    def plain() -> None: ...

    limits = app_limits(app)
    assert (limits.definitions.rates, limits.definitions.concurrency, limits.plans) == ({}, {}, {})


def test_each_task_gets_a_plan_of_its_limits_and_key_function() -> None:
    app = new_app(tq_rate_limits=RATES, tq_concurrency_limits={"heavy_reports": 2})

    @app.task(shared=False, name="t.a", tq_rate_limit="api_calls", tq_limit_key=tenant_of)
    def a(tenant: str) -> None: ...

    @app.task(
        shared=False, name="t.b", tq_rate_limit="api_calls", tq_concurrency_limit="heavy_reports"
    )
    def b() -> None: ...

    @app.task(shared=False, name="t.c")
    def c() -> None: ...

    plans = app_limits(app).plans
    assert set(plans) == {"t.a", "t.b"}  # a task without limits has no plan
    assert plans["t.a"].limits == (LimitRef(Kind.RATE, "api_calls"),)
    assert plans["t.a"].key_function is tenant_of
    # two task types share one limit by naming it
    assert plans["t.b"].limits == (
        LimitRef(Kind.RATE, "api_calls"),
        LimitRef(Kind.CONCURRENCY, "heavy_reports"),
    )
    assert plans["t.b"].key_function is None


@pytest.mark.parametrize("inline", ["10/s", {"rate": "10/s", "burst": 2}])
def test_an_inline_rate_is_a_private_limit_named_after_its_task(inline: Any) -> None:
    app = new_app(tq_rate_limits=RATES)

    @app.task(shared=False, name="t.fetch_page", tq_rate_limit=inline)
    def fetch_page() -> None: ...

    limits = app_limits(app)
    assert limits.plans["t.fetch_page"].limits == (LimitRef(Kind.RATE, "@t.fetch_page"),)
    burst = inline["burst"] if isinstance(inline, dict) else 0
    assert limits.definitions.rates["@t.fetch_page"] == Rate(10, 1, burst)
    assert limits.definitions.rates["api_calls"] == Rate(100, 60)


def test_a_key_function_may_be_given_as_a_dotted_path() -> None:
    app = new_app(tq_rate_limits=RATES)

    @app.task(
        shared=False, name="t.k", tq_rate_limit="email", tq_limit_key="tests.limits_app.tenant_of"
    )
    def k() -> None: ...

    from tests.limits_app import tenant_of as imported

    assert app_limits(app).plans["t.k"].key_function is imported


def test_a_task_naming_an_unknown_rate_limit_is_an_error_listing_the_closest_names_first() -> None:
    app = new_app(tq_rate_limits=RATES)

    @app.task(shared=False, name="t.call", tq_rate_limit="api_call")
    def call() -> None: ...

    with pytest.raises(ConfigurationError) as caught:
        app_limits(app)
    message = str(caught.value)
    assert message.startswith(
        "task 't.call' has tq_rate_limit='api_call', which is not a limit in tq_rate_limits "
        "(defined there: 'api_calls', "
    ), message
    assert "'email'" in message and "'search'" in message
    assert "or an inline rate such as '10/s'" in message


def test_a_task_naming_an_unknown_concurrency_limit_is_an_error_naming_both() -> None:
    app = new_app(tq_concurrency_limits={"heavy_reports": 2, "exports": 1})

    @app.task(shared=False, name="t.report", tq_concurrency_limit="heavy_report")
    def report() -> None: ...

    with pytest.raises(ConfigurationError, match="task 't.report' has tq_concurrency_limit=") as e:
        app_limits(app)
    assert "(defined there: 'heavy_reports', 'exports')" in str(e.value)


def test_a_limit_named_while_none_is_defined_says_so() -> None:
    plan_of = new_app()

    @plan_of.task(shared=False, name="t.x", tq_rate_limit="api_calls")
    def x() -> None: ...

    with pytest.raises(ConfigurationError, match=r"\(none is defined there\)"):
        app_limits(plan_of)


def test_a_malformed_inline_rate_is_an_error_naming_the_task() -> None:
    app = new_app()

    @app.task(shared=False, name="t.y", tq_rate_limit="2.5/s")
    def y() -> None: ...

    with pytest.raises(ConfigurationError, match=r"^task 't.y': tq_rate_limit = '2.5/s' is not a"):
        app_limits(app)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"tq_rate_limits": {"api": "100/min"}}, "tq_rate_limits['api'] = '100/min' is not a rate"),
        ({"tq_rate_limits": ["100/m"]}, "tq_rate_limits = ['100/m'] is not a dict"),
        (
            {"tq_rate_limits": {"@api": "1/s"}},
            "tq_rate_limits has the name '@api': names starting with '@' are kept",
        ),
        ({"tq_rate_limits": {"": "1/s"}}, "tq_rate_limits has the name '': a limit name is a non"),
        ({"tq_concurrency_limits": {"r": 0}}, "tq_concurrency_limits['r'] = 0 is not a concur"),
        ({"tq_concurrency_limits": {"r": "2"}}, "tq_concurrency_limits['r'] = '2' is not a conc"),
        ({"tq_concurrency_limits": {"r": True}}, "tq_concurrency_limits['r'] = True is not a con"),
    ],
)
def test_a_malformed_setting_is_an_error_naming_the_setting(
    settings: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        app_limits(new_app(**settings))
    assert str(caught.value).startswith(problem), caught.value


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("tests.nowhere.tenant_of", "which cannot be imported"),
        ("tests.limits_app.no_such_function", "which cannot be imported"),
        (42, "which is not callable"),
    ],
)
def test_a_key_function_that_cannot_be_used_is_an_error_naming_the_task(
    key: Any, problem: str
) -> None:
    app = new_app(tq_rate_limits=RATES)

    @app.task(shared=False, name="t.z", tq_rate_limit="email", tq_limit_key=key)
    def z() -> None: ...

    with pytest.raises(ConfigurationError, match=f"^task 't.z' has tq_limit_key=.*{problem}"):
        plan_task(z, read_definitions(app.conf))


def test_a_key_function_without_a_limit_is_an_error() -> None:
    app = new_app(tq_rate_limits=RATES)

    @app.task(shared=False, name="t.keyed", tq_limit_key=tenant_of)
    def keyed() -> None: ...

    with pytest.raises(ConfigurationError, match="has tq_limit_key but no limit to apply it to"):
        app_limits(app)


# -- worker start-up (real `celery worker` processes) ----------------------------------

LIMITS_APP = "tests.limits_app"


def limits_env(tmp_path: Path, task_rate: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["TQ_LIMITS_URL"] = f"tq+sqlite:///{tmp_path / 'queue.db'}"
    env["TQ_LIMITS_TASK_RATE"] = task_rate
    return env


WORKER = ["worker", "-P", "solo", "--without-mingle", "--without-gossip", "--without-heartbeat"]


@pytest.mark.e2e
def test_a_worker_with_a_task_naming_an_unknown_limit_exits_with_one_clear_line(
    tmp_path: Path,
) -> None:
    # Given a task naming "api_call" where the app defines "api_calls"
    done = run_celery(LIMITS_APP, limits_env(tmp_path, "api_call"), *WORKER, "-l", "INFO")
    # Then the worker exits 1 before consuming, naming the task, the limit and the closest name
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 2, output
    assert lines[0].startswith(
        "error: tq cannot start: task 'limits.call_api' has tq_rate_limit='api_call', which is "
        "not a limit in tq_rate_limits (defined there: 'api_calls', "
    ), output
    assert lines[1].startswith("  (check tq_rate_limits, tq_concurrency_limits"), output


@pytest.mark.e2e
def test_a_worker_whose_limits_are_well_formed_starts(tmp_path: Path) -> None:
    worker = Worker(LIMITS_APP, limits_env(tmp_path, "api_calls"), tmp_path / "worker.log")
    try:
        worker.start(*WORKER[1:])
        assert "tq cannot start" not in worker.output()
    finally:
        worker.stop()
