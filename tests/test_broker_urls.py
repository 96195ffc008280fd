"""Every way of naming the broker reaches the store it names, through kombu's Connection and
Celery's settings, or fails with an error that names the URL. Nothing falls back to
localhost:6379."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

import tq_kombu  # noqa: F401
from tq_kombu.errors import ConfigurationError
from tq_kombu.store.redis import RedisStore
from tq_kombu.store.sqlite import SQLiteStore
from tq_kombu.transport import Transport

from .conftest import RedisServer
from .workers import Worker, wait_for

TRANSPORT = "tq_kombu.transport:Transport"
QUEUE = Queue("urls", Exchange("urls", "direct"), routing_key="urls")


def publish_one(conn: Connection, body: dict[str, Any]) -> None:
    Producer(conn.channel()).publish(
        body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE]
    )


def store_of(conn: Connection) -> Any:
    return conn.transport.store


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- forms that name a store ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "transport", "relative"),
    [
        ("tq+sqlite:///rel.db", None, "rel.db"),
        ("tq+sqlite:///data/rel.db", None, "data/rel.db"),
        ("sqlite:///plain.db", TRANSPORT, "plain.db"),
    ],
)
def test_a_relative_sqlite_url_names_a_file_in_the_working_directory(
    in_tmp: Path, url: str, transport: str | None, relative: str
) -> None:
    with Connection(url, transport=transport) as conn:
        publish_one(conn, {"n": 1})
        store = store_of(conn)
        assert isinstance(store, SQLiteStore)
        assert store.path == str(in_tmp / relative)
        assert store.counts("urls").ready == 1
        # a clone (as Celery makes for every worker connection) names the same file
        with conn.clone() as clone:
            assert store_of(clone).path == store.path


@pytest.mark.parametrize("form", ["tq+sqlite:///", "sqlite:///"])
def test_an_absolute_sqlite_url_takes_four_slashes(tmp_path: Path, form: str) -> None:
    path = tmp_path / "abs.db"
    transport = None if form.startswith("tq+") else TRANSPORT
    with Connection(f"{form}{path}", transport=transport) as conn:
        publish_one(conn, {"n": 1})
        assert store_of(conn).path == str(path)
    assert path.exists()


def test_the_settings_only_sqlite_form_publishes_into_the_file_not_to_redis(
    in_tmp: Path,
) -> None:
    # Given an app that names the transport in settings and a plain sqlite URL
    app = Celery("settings_only", set_as_current=False)
    app.conf.broker_transport = TRANSPORT
    app.conf.broker_url = "sqlite:///queue.db"
    app.conf.task_default_queue = "urls"
    # When it sends a task (through Celery's producer pool: cloned connections)
    app.send_task("some.task", args=(1,))
    # Then the message is in the file
    with app.connection_for_write() as conn:
        store = store_of(conn)
        assert isinstance(store, SQLiteStore) and store.path == str(in_tmp / "queue.db")
        assert store.counts("urls").ready == 1
        with conn.clone() as clone:
            assert isinstance(store_of(clone), SQLiteStore)
    app.close()


@pytest.mark.parametrize("form", ["tq+redis", "redis"])
def test_redis_urls_keep_their_host_port_password_and_database(tmp_path: Path, form: str) -> None:
    # Given a private redis-server with a password
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        import redis

        redis.Redis(port=server.port).config_set("requirepass", "s3cret")
        url = f"{form}://:s3cret@127.0.0.1:{server.port}/3"
        transport = None if form.startswith("tq+") else TRANSPORT
        # When a message is published through that URL
        with Connection(url, transport=transport) as conn:
            publish_one(conn, {"n": 1})
            store = store_of(conn)
            assert isinstance(store, RedisStore)
            kwargs = store.client.connection_pool.connection_kwargs
            assert (kwargs["port"], kwargs["db"], kwargs["password"]) == (server.port, 3, "s3cret")
            with conn.clone() as clone:
                assert store_of(clone).client.connection_pool.connection_kwargs["db"] == 3
        # Then it is in database 3 of that server, and nowhere else
        client = redis.Redis(port=server.port, password="s3cret", db=3)
        assert any(b"urls" in key for key in client.keys())
        assert redis.Redis(port=server.port, password="s3cret", db=0).keys() == []
    finally:
        server.stop()


@pytest.mark.parametrize("form", ["tq+rediss", "rediss"])
def test_rediss_urls_open_a_tls_redis_store(form: str) -> None:
    transport = None if form.startswith("tq+") else TRANSPORT
    conn = Connection(f"{form}://user:pw@redis.example.com:6380/2", transport=transport)
    assert Transport.store_url(conn) == "rediss://user:pw@redis.example.com:6380/2"
    # (opening the store does not connect; the TLS connection class is chosen from the URL)
    store = store_of(conn)
    assert isinstance(store, RedisStore)
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example.com", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("user", "pw")
    assert "SSL" in store.client.connection_pool.connection_class.__name__
    store.close()


# -- forms that do not -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "transport", "problem"),
    [
        ("tq+sqlite://host/x.db", None, "names a host"),
        ("tq+sqlite://", None, "names no file"),
        ("tq+sqlite:///", None, "names no file"),
        ("tq+sqlite:///dir/", None, "names no file"),
        ("tq+sqlite:///q.db?mode=ro", None, "query"),
        ("sqlite://", TRANSPORT, "names no file"),
        ("tq+foo://x", None, "unknown scheme 'foo'"),
        ("tq://x", None, "unknown scheme 'tq'"),
        ("amqp://guest@h//", TRANSPORT, "unknown scheme 'amqp'"),
        ("tq+redis://", None, "names no host"),
        ("tq+redis:///0", None, "names no host"),
        ("redis://", TRANSPORT, "names no host"),
        ("tq+redis://h:99999/0", None, "bad port"),
        ("tq+redis://h:port/0", None, "bad port"),
        ("tq+redis://h/abc", None, "names database 'abc'"),
        ("localhost", TRANSPORT, "is not a URL"),
        (None, TRANSPORT, "no broker URL"),
    ],
)
def test_a_bad_url_is_an_error_naming_it(
    url: str | None, transport: str | None, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem) as raised:
        Connection(url, transport=transport).channel()
    if url and "://" in url:
        assert url in str(raised.value)


def test_a_password_never_appears_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Connection("tq+redis://:hunter2@/0").channel()
    assert "hunter2" not in str(raised.value) and "tq+redis://:**@/0" in str(raised.value)


def test_the_settings_only_form_without_a_url_fails_instead_of_using_localhost() -> None:
    # Given an app that names the transport but no broker URL
    app = Celery("no_url", set_as_current=False)
    app.conf.broker_transport = TRANSPORT
    # Then its connection cannot open a store (kombu's default would be localhost:6379)
    with pytest.raises(ConfigurationError, match="no broker URL"):
        app.connection_for_write().channel()
    app.close()


def test_celery_app_config_reaches_the_same_store_as_a_tq_url(in_tmp: Path) -> None:
    for conf in (
        {"broker_url": "tq+sqlite:///same.db"},
        {"broker_url": "sqlite:///same.db", "broker_transport": TRANSPORT},
    ):
        app = Celery("forms", set_as_current=False)
        app.conf.update(conf)
        with app.connection_for_read() as conn:
            assert store_of(conn).path == str(in_tmp / "same.db")
            store_of(conn).ping()
        app.close()
    assert os.path.exists(in_tmp / "same.db")


@pytest.mark.e2e
def test_a_worker_configured_by_settings_only_consumes_from_the_sqlite_file(
    tmp_path: Path,
) -> None:
    # Given tasks published by an app that names the transport in settings (sqlite URL)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    app = Celery("setup_app", set_as_current=False)
    app.conf.update(broker_transport=TRANSPORT, broker_url=url)
    for _ in range(3):
        app.send_task("tests.setup_app.noop")
    with app.connection_for_write() as conn:
        store = store_of(conn)
        assert store.counts("celery").ready == 3
        # When a real worker starts with the same settings
        env = {
            **os.environ,
            "TQ_SETUP_URL": url,
            "TQ_SETUP_TRANSPORT": TRANSPORT,
            "PYTHONWARNINGS": "ignore",
        }
        worker = Worker("tests.setup_app", env, tmp_path / "worker.log")
        try:
            worker.start("-P", "solo", "--without-mingle", "--without-gossip")
            # Then it runs them from that file
            wait_for(
                lambda: store.counts("celery").ready + store.counts("celery").inflight == 0,
                30,
                "the worker to consume the three tasks",
            )
            wait_for(lambda: worker.output().count("succeeded") == 3, 10, "three successes")
        finally:
            worker.stop()
    app.close()
