"""Publishing a task under limits: its message carries the limits and its key in the
``tq_limits`` header, as stored in the broker; a key that cannot be computed is named
in ``tq_limit_error`` (and logged), and the transport refuses the message: apply_async
raises LimitKeyError and nothing is stored."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

import tq_celery_ext
from tq_celery_ext.limits import LIMIT_ERROR_HEADER, LIMITS_HEADER
from tq_kombu.errors import LimitKeyError
from tq_kombu.limit_headers import LimitTag, limit_tags

RATES = {"api_calls": "100/m"}


def new_app(**settings: Any) -> Celery:
    app = Celery(f"pub-{uuid.uuid4().hex[:8]}", broker=f"tq+memory://{uuid.uuid4().hex}")
    app.conf.update(tq_rate_limits=RATES, tq_concurrency_limits={"heavy": 2}, **settings)
    tq_celery_ext.install(app)
    return app


def stored_headers(app: Celery, queue: str = "celery") -> dict[str, Any]:
    """The headers of the one message waiting in ``queue``, consumed through kombu from
    the broker the app published to."""
    with Connection(app.conf.broker_url) as conn:
        simple = conn.SimpleQueue(queue)
        message = simple.get(timeout=5)
        message.ack()
        assert simple.qsize() == 0
        simple.close()
        return dict(message.headers)


def stored_count(app: Celery, queue: str = "celery") -> int:
    with Connection(app.conf.broker_url) as conn:
        simple = conn.SimpleQueue(queue)
        try:
            return int(simple.qsize())
        finally:
            simple.close()


def tenant_of(args: Any, kwargs: Any) -> str:
    return str(kwargs["tenant"])


@pytest.fixture
def app() -> Celery:
    app = new_app()

    @app.task(shared=False, name="pub.call_api", tq_rate_limit="api_calls", tq_limit_key=tenant_of)
    def call_api(tenant: str) -> None: ...

    @app.task(shared=False, name="pub.report", tq_concurrency_limit="heavy", tq_rate_limit="5/s")
    def report(n: int) -> None: ...

    @app.task(shared=False, name="pub.plain")
    def plain() -> None: ...

    @app.task(
        shared=False,
        name="pub.positional",
        tq_rate_limit="api_calls",
        tq_limit_key=lambda a, k: a[0],
    )
    def positional(tenant: str) -> None: ...

    @app.task(shared=False, name="pub.broken", tq_rate_limit="api_calls", tq_limit_key=tenant_of)
    def broken(**kwargs: Any) -> None: ...

    @app.task(
        shared=False, name="pub.numeric", tq_rate_limit="api_calls", tq_limit_key=lambda a, k: 42
    )
    def numeric() -> None: ...

    @app.task(
        shared=False,
        name="pub.long",
        tq_rate_limit="api_calls",
        tq_limit_key=lambda a, k: "k" * 201,
    )
    def long(secret: str) -> None: ...

    return app


def test_a_message_carries_each_limit_of_its_task_with_the_key_of_its_arguments(
    app: Celery,
) -> None:
    app.tasks["pub.call_api"].apply_async(kwargs={"tenant": "acme"})
    headers = stored_headers(app)
    assert headers[LIMITS_HEADER] == [{"kind": "rate", "name": "api_calls", "key": "acme"}]
    assert LIMIT_ERROR_HEADER not in headers


def test_a_key_may_come_from_positional_arguments(app: Celery) -> None:
    app.tasks["pub.positional"].delay("globex")
    assert stored_headers(app)[LIMITS_HEADER][0]["key"] == "globex"


def test_a_task_without_a_key_function_has_one_key_for_all_its_messages(app: Celery) -> None:
    app.tasks["pub.report"].delay(1)
    assert stored_headers(app)[LIMITS_HEADER] == [
        {"kind": "rate", "name": "@pub.report", "key": ""},
        {"kind": "concurrency", "name": "heavy", "key": ""},
    ]


def test_a_task_without_limits_gets_no_limit_headers(app: Celery) -> None:
    app.tasks["pub.plain"].delay()
    headers = stored_headers(app)
    assert LIMITS_HEADER not in headers and LIMIT_ERROR_HEADER not in headers


def test_protocol_1_messages_carry_their_limits_too() -> None:
    app = new_app(task_protocol=1)

    @app.task(shared=False, name="pub.p1", tq_rate_limit="api_calls", tq_limit_key=tenant_of)
    def p1(tenant: str) -> None: ...

    p1.apply_async(kwargs={"tenant": "initech"})
    assert stored_headers(app)[LIMITS_HEADER][0]["key"] == "initech"


def test_a_republished_message_gets_its_limits_computed_again(app: Celery) -> None:
    # (a retry publishes the task again, with the headers of the run that retried)
    stale = [{"kind": "rate", "name": "api_calls", "key": "old"}]
    app.tasks["pub.call_api"].apply_async(
        kwargs={"tenant": "new"}, headers={LIMITS_HEADER: stale, LIMIT_ERROR_HEADER: "old error"}
    )
    headers = stored_headers(app)
    assert headers[LIMITS_HEADER][0]["key"] == "new"
    assert LIMIT_ERROR_HEADER not in headers


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        (
            "pub.broken",
            "its tq_limit_key raised KeyError: 'tenant' for a call with 0 positional argument(s) "
            "and keyword arguments []; make it return a key for every call",
        ),
        (
            "pub.numeric",
            "its tq_limit_key returned a value of type int for a call with 0 positional argument(s) and keyword "
            "arguments []; it must return a non-empty string",
        ),
        (
            "pub.long",
            "its tq_limit_key returned a string of 201 characters for a call with 1 "
            "positional argument(s) and keyword arguments []; it must return a non-empty string",
        ),
    ],
)
def test_a_key_that_cannot_be_computed_is_logged_and_named_in_the_message_for_the_transport(
    app: Celery, task: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="tq_celery_ext.limits.keys"),
        pytest.raises(LimitKeyError) as refused,
    ):
        app.tasks[task].apply_async(["s3cret"] if task == "pub.long" else [])
    assert str(refused.value).startswith(f"task {task!r}: {problem}")
    assert "s3cret" not in str(refused.value)
    assert stored_count(app) == 0
    assert caplog.text.count(f"task {task!r}: {problem}") == 1  # once, by its own app
    assert "s3cret" not in caplog.text  # (arguments may hold secrets: never logged)


def test_a_task_another_app_registers_is_left_alone(app: Celery) -> None:
    # Given a second app, its own limits, in the same process (the signal is process-wide)
    other = new_app()

    @other.task(shared=False, name="other.only", tq_rate_limit="api_calls")
    def only() -> None: ...

    only.delay()
    # Then its message carries the limit its own app gives it, untouched by the first app
    assert stored_headers(other)[LIMITS_HEADER] == [
        {"kind": "rate", "name": "api_calls", "key": ""}
    ]
    # and the first app's messages still get theirs
    app.tasks["pub.call_api"].delay(tenant="acme")
    assert stored_headers(app)[LIMITS_HEADER][0]["key"] == "acme"


# -- what the transport will read from the stored headers --------------------------------


def test_the_transport_reads_back_the_limits_a_published_message_carries(app: Celery) -> None:
    app.tasks["pub.report"].delay(1)
    assert limit_tags(stored_headers(app)) == (
        LimitTag("rate", "@pub.report", ""),
        LimitTag("concurrency", "heavy", ""),
    )


def test_a_message_whose_key_could_not_be_computed_is_refused_with_the_publishers_reason(
    app: Celery,
) -> None:
    with pytest.raises(LimitKeyError, match="^task 'pub.broken': its tq_limit_key raised"):
        app.tasks["pub.broken"].delay()
    assert stored_count(app) == 0


def test_a_message_without_limit_headers_is_under_no_limit() -> None:
    assert limit_tags({"task": "x"}) == ()


@pytest.mark.parametrize(
    "entries",
    [
        "api_calls",
        [{"kind": "rate", "name": "api_calls"}],
        [{"kind": "window", "name": "api_calls", "key": ""}],
        [{"kind": "rate", "name": "", "key": ""}],
        [{"kind": "rate", "name": "api_calls", "key": 7}],
        [{"kind": "rate", "name": "api_calls", "key": "k" * 201}],
    ],
)
def test_a_malformed_limits_header_is_refused_naming_the_task(entries: Any) -> None:
    with pytest.raises(LimitKeyError, match=r"^task 'pub.x': the tq_limits header .* is malformed"):
        limit_tags({"task": "pub.x", LIMITS_HEADER: entries})
