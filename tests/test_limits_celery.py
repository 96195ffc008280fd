"""Limits between Celery and the store: published messages carry their tags into the
store (bulk too), a worker's start-up writes its app's definitions (never over a run-time
one), ``tq_celery_ext.limits_of(app)`` changes them, and ``celery tq limits`` / ``tq stats``
show and change them from the command line."""

from __future__ import annotations

import json
import os
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

import tq_celery_ext
from tq_celery_ext.limits import StartupCheck
from tq_kombu import bulk
from tq_kombu.admin import Admin
from tq_kombu.errors import ConfigurationError, LimitKeyError
from tq_kombu.store.model import LimitDefinition

from .workers import run_celery

STORES = ["memory", "redis"]


def tenant_of(args: Any, kwargs: Any) -> str:
    return str(kwargs["tenant"])


@pytest.fixture(params=STORES)
def app(request: pytest.FixtureRequest) -> Celery:
    url = request.getfixturevalue(f"{request.param}_url")
    app = Celery(f"lc-{uuid.uuid4().hex[:8]}", broker=f"tq+{url}")
    app.conf.update(
        tq_rate_limits={"api_calls": "100/m", "search": {"rate": "10/s", "burst": 5}},
        tq_concurrency_limits={"heavy": 2},
    )
    tq_celery_ext.install(app)

    @app.task(shared=False, name="lc.call_api", tq_rate_limit="api_calls", tq_limit_key=tenant_of)
    def call_api(tenant: str = "") -> None: ...

    @app.task(shared=False, name="lc.report", tq_concurrency_limit="heavy", tq_rate_limit="5/s")
    def report() -> None: ...

    @app.task(shared=False, name="lc.plain")
    def plain() -> None: ...

    return app


@pytest.fixture
def admin(app: Celery) -> Any:
    with Admin.from_app(app) as opened:
        yield opened


def start_worker(app: Celery) -> StartupCheck:
    """What ``worker_init`` does in a starting worker of ``app``."""
    check = StartupCheck(app)
    check.on_worker_init(sender=SimpleNamespace(app=app))
    return check


def waiting(admin: Admin, name: str) -> dict[str, int]:
    status = admin.limit_status(name)
    assert status is not None
    return {key.key: key.waiting for key in status.keys if key.waiting}


def test_a_starting_worker_stores_its_apps_limits(app: Celery, admin: Admin) -> None:
    start_worker(app)
    defined = {d.name: d for d in admin.limits()}
    assert defined == {
        "@lc.report": LimitDefinition("@lc.report", "rate", interval_us=200_000),
        "api_calls": LimitDefinition("api_calls", "rate", interval_us=600_000),
        "heavy": LimitDefinition("heavy", "concurrency", slots=2),
        "search": LimitDefinition("search", "rate", interval_us=100_000, tolerance_us=500_000),
    }


def test_a_task_under_a_concurrency_limit_holds_its_slot_while_it_runs(app: Celery) -> None:
    start_worker(app)
    assert app.tasks["lc.report"].acks_late is True
    assert app.tasks["lc.call_api"].acks_late is False


def test_settings_never_overwrite_a_limit_set_at_run_time(app: Celery, admin: Admin) -> None:
    limits = tq_celery_ext.limits_of(app)
    limits.set_rate("api_calls", 5, per_seconds=1, burst=2)
    start_worker(app)
    api_calls = {d.name: d for d in limits.all()}["api_calls"]
    assert (api_calls.interval_us, api_calls.tolerance_us, api_calls.origin) == (
        200_000,
        400_000,
        "runtime",
    )
    # until it is removed: then the next worker's settings apply
    assert limits.remove("api_calls") is True
    assert limits.remove("api_calls") is False
    start_worker(app)
    assert {d.name: d.origin for d in limits.all()}["api_calls"] == "settings"


def test_published_messages_wait_under_their_limits_and_keys(app: Celery, admin: Admin) -> None:
    start_worker(app)
    app.tasks["lc.call_api"].delay(tenant="acme")
    app.tasks["lc.call_api"].delay(tenant="acme")
    app.tasks["lc.call_api"].delay(tenant="globex")
    app.tasks["lc.report"].delay()
    app.tasks["lc.plain"].delay()
    assert waiting(admin, "api_calls") == {"acme": 2, "globex": 1}
    assert waiting(admin, "heavy") == {"": 1}
    assert waiting(admin, "@lc.report") == {"": 1}


def test_messages_published_in_bulk_carry_their_limits(app: Celery, admin: Admin) -> None:
    start_worker(app)
    with bulk(app):
        for tenant in ("a", "b", "b"):
            app.tasks["lc.call_api"].delay(tenant=tenant)
    assert waiting(admin, "api_calls") == {"a": 1, "b": 2}


def test_a_graphs_nodes_carry_their_limits(app: Celery, admin: Admin) -> None:
    start_worker(app)
    nodes = tq_celery_ext.graph(app)
    nodes.add("one", app.tasks["lc.call_api"].s(tenant="acme"))
    nodes.add("two", app.tasks["lc.call_api"].s(tenant="globex"))
    nodes.add("three", app.tasks["lc.plain"].s(), parents=["one", "two"])
    nodes.publish()
    assert waiting(admin, "api_calls") == {"acme": 1, "globex": 1}


def test_a_message_without_a_key_is_refused_and_its_batch_stores_nothing(
    app: Celery, admin: Admin
) -> None:
    with pytest.raises(LimitKeyError, match="'lc.call_api': its tq_limit_key raised KeyError"):
        app.tasks["lc.call_api"].delay()
    with pytest.raises(LimitKeyError), bulk(app):
        app.tasks["lc.plain"].delay()
        app.tasks["lc.call_api"].delay()
    assert [s.ready for s in admin.stats()] == [0]


def test_limits_change_at_run_time(app: Celery) -> None:
    limits = tq_celery_ext.limits_of(app)
    assert tq_celery_ext.limits_of(app) is limits
    assert limits.set_rate("api_calls", "50/m") == LimitDefinition(
        "api_calls", "rate", interval_us=1_200_000, origin="runtime"
    )
    assert limits.set_concurrency("heavy", 4).slots == 4
    status = limits.status("heavy")
    assert status is not None and status.definition.slots == 4
    assert [d.name for d in limits.all()] == ["api_calls", "heavy"]
    assert limits.status("nothing") is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.set_rate("x", 0), "whole number >= 1"),
        (lambda c: c.set_rate("x", 10, per_seconds=0), "per_seconds"),
        (lambda c: c.set_rate("x", "10/s", per_seconds=1), "rate text"),
        (lambda c: c.set_rate("x", "ten a second"), "not a rate"),
        (lambda c: c.set_rate("x", 10, burst=-1), "burst"),
        (lambda c: c.set_concurrency("x", 0), "not a concurrency"),
        (lambda c: c.set_rate("", 10), "name"),
    ],
)
def test_bad_run_time_limits_are_refused(app: Celery, call: Any, message: str) -> None:
    limits = tq_celery_ext.limits_of(app)
    with pytest.raises(ConfigurationError, match=message):
        call(limits)
    assert limits.all() == []


# -- the command line, in subprocesses ---------------------------------------------------


def tq(env: dict[str, str], *args: str) -> Any:
    return run_celery("tests.limits_app", env, "tq", *args)


def test_the_cli_lists_sets_and_removes_limits(redis_url: str) -> None:
    env = {**os.environ, "TQ_LIMITS_URL": f"tq+{redis_url}", "PYTHONWARNINGS": "ignore"}
    from . import limits_app

    limits_app.app.conf.broker_url = env["TQ_LIMITS_URL"]
    limits_app.app.close()
    start_worker(limits_app.app)
    done = tq(env, "limits", "set", "api_calls", "30/m", "--burst", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rule"] == "30/m (burst 3)"
    assert tq(env, "limits", "set", "heavy_reports", "--concurrency", "5").returncode == 0
    listed = {row["name"]: row for row in json.loads(tq(env, "limits", "ls", "--json").stdout)}
    assert {name: (row["rule"], row["origin"]) for name, row in listed.items()} == {
        "api_calls": ("30/m (burst 3)", "runtime"),
        "email": ("50/h", "settings"),
        "heavy_reports": ("5 at once", "runtime"),
        "search": ("10/s (burst 5)", "settings"),
    }
    stats = tq(env, "stats")
    assert stats.returncode == 0 and "heavy_reports" in stats.stdout and "5 at once" in stats.stdout
    assert tq(env, "limits", "rm", "email").returncode == 0
    assert tq(env, "limits", "rm", "email").returncode == 1
    bad = tq(env, "limits", "set", "x", "ten/s")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert tq(env, "limits", "set", "x").returncode == 2


def test_ls_marks_the_messages_a_limit_holds_back(sqlite_url: str) -> None:
    env = {**os.environ, "TQ_LIMITS_URL": f"tq+{sqlite_url}", "PYTHONWARNINGS": "ignore"}
    from . import limits_app

    limits_app.app.conf.broker_url = env["TQ_LIMITS_URL"]
    limits_app.app.close()
    limits_app.call_api.delay(tenant="acme")
    limits_app.report.delay()
    listed = tq(env, "ls", "--state", "ready")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[4]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert rows["limits.call_api"].rstrip().endswith("rate api_calls[acme]")
    assert rows["limits.report"].rstrip().endswith("concurrency heavy_reports")
    as_json = json.loads(tq(env, "ls", "--state", "ready", "--json").stdout)
    assert {row["task_name"]: row["limits"] for row in as_json} == {
        "limits.call_api": [{"kind": "rate", "name": "api_calls", "key": "acme"}],
        "limits.report": [{"kind": "concurrency", "name": "heavy_reports", "key": ""}],
    }
    shown = tq(env, "show", as_json[0]["message_id"])
    assert shown.returncode == 0 and "limits" in shown.stdout


def fetched(admin: Admin) -> int:
    return len(admin.store.fetch(["celery"], 10, "test", 60, 5).deliveries)


def test_a_lowered_rate_applies_at_the_next_fetch(app: Celery, admin: Admin) -> None:
    start_worker(app)
    tq_celery_ext.limits_of(app).set_rate("api_calls", "1000/s")
    app.tasks["lc.call_api"].delay(tenant="acme")
    assert fetched(admin) == 1
    for _ in range(3):
        app.tasks["lc.call_api"].delay(tenant="acme")
    tq_celery_ext.limits_of(app).set_rate("api_calls", "1/h")
    taken = sum(fetched(admin) for _ in range(3))
    assert taken <= 1
    assert waiting(admin, "api_calls")["acme"] >= 2


def test_a_raised_rate_applies_within_one_new_interval(app: Celery, admin: Admin) -> None:
    start_worker(app)  # api_calls: 100/m
    for _ in range(3):
        app.tasks["lc.call_api"].delay(tenant="acme")
    assert fetched(admin) == 1
    assert fetched(admin) == 0
    tq_celery_ext.limits_of(app).set_rate("api_calls", "100/s", burst=5)
    # the old rate's wait (up to a minute) no longer holds: within one new interval
    # (10 ms) both start
    deadline, taken = time.monotonic() + 1, 0
    while taken < 2 and time.monotonic() < deadline:
        taken += fetched(admin)
    assert taken == 2


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        ("100/m", "100/m"),
        ("50/h", "50/h"),
        ("3/1.5s", "2/s"),
        ({"rate": "10/s", "burst": 5}, "10/s (burst 5)"),
        ("7/s", "1/0.142858s"),
    ],
)
def test_a_stored_rate_reads_back_as_people_write_it(rate: Any, shown: str) -> None:
    from tq_celery_ext.limits.definitions import rate_definition, rate_text
    from tq_celery_ext.limits.rates import parse_rate

    assert rate_text(rate_definition("x", parse_rate(rate, "test"))) == shown
