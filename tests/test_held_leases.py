"""Leases outlive connections and busy consumers: quick regressions of the fault suite
(tests/test_faults.py), with real kombu consumers on both stores.

- a message delivered on a connection that was then lost is acked through the dead
  channel (as a running task does after the worker reconnected), or given back once the
  consumer drops it;
- every message of a fetched batch stays leased while the consumer is busy with the first,
  even when that first one holds the GIL;
- an ack the store could not take is retried when the store is back;
- a renewal racing an ack does not warn that the lease was lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

import tq_kombu  # noqa: F401  (registers tq+)
from tq_kombu import renewer as renewer_module
from tq_kombu.renewer import RenewLoop
from tq_kombu.store import Store, open_store
from tq_kombu.store.base import NewMessage, QueueCounts

from .conftest import RedisServer
from .kombu_helpers import counts, publish
from .test_tls import port_open, tls_redis  # noqa: F401  (a fixture)
from .workers import wait_for

QUEUE = Queue("held", routing_key="held")
LEASE_SECONDS = 1.0
EMPTY = QueueCounts()


def thief_fetch(store_url: str) -> int:
    """How many messages another consumer can take from the queue now (expired leases
    included): 0 while every lease is renewed."""
    store = open_store(store_url)
    try:
        return len(store.fetch([QUEUE.name], 10, "thief", 60, 5).deliveries)
    finally:
        store.close()


def hold_the_gil(seconds: float) -> None:
    """Sleep in C without releasing the GIL (ctypes.PyDLL keeps it held during the call)."""
    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    libc.usleep(int(seconds * 1_000_000))


@pytest.fixture
def connection(store_url: str) -> Iterator[Connection]:
    options = {"lease_seconds": LEASE_SECONDS}
    with Connection(f"tq+{store_url}", transport_options=options) as conn:
        yield conn


def consume_one(conn: Connection) -> Any:
    got: list[Any] = []
    consumer = Consumer(conn.channel(), [QUEUE], callbacks=[lambda body, m: got.append(m)])
    consumer.consume()
    conn.drain_events(timeout=5)
    assert len(got) == 1
    return got[0]


def test_a_message_is_acked_through_its_channel_after_the_connection_was_lost(
    connection: Connection, store_url: str
) -> None:
    # Given a message delivered and not yet acked (a running task)
    publish(connection, QUEUE, {"n": 1})
    message = consume_one(connection)
    # When kombu collects the connection as Celery does after losing it
    connection.collect()
    # Then the message stays leased (renewed: nobody else can take it) past its lease
    time.sleep(2 * LEASE_SECONDS)  # sampling point: a lease left alone would have expired
    assert counts(store_url, QUEUE) == QueueCounts(inflight=1)
    assert thief_fetch(store_url) == 0
    # and the task's ack through the dead channel settles it
    message.ack()
    assert counts(store_url, QUEUE) == EMPTY


def test_a_message_dropped_after_a_lost_connection_returns_to_its_queue(
    connection: Connection, store_url: str
) -> None:
    # Given a message delivered and not acked, then the connection is lost
    publish(connection, QUEUE, {"n": 1})
    message = consume_one(connection)
    connection.collect()
    assert counts(store_url, QUEUE) == QueueCounts(inflight=1)
    # When the consumer drops it (Celery forgets requests it had not started)
    del message
    gc.collect()
    # Then it is given back at once, not when its lease would run out
    wait_for(
        lambda: counts(store_url, QUEUE) == QueueCounts(ready=1), 3, "the message to be released"
    )


def test_a_fetched_batch_stays_leased_while_the_first_message_holds_the_gil(
    connection: Connection, store_url: str
) -> None:
    # Given three messages fetched in one batch (prefetch 3)
    publish(connection, QUEUE, {"n": 0}, {"n": 1}, {"n": 2})
    seen: list[int] = []
    stolen: list[int] = []

    def on_message(body: Any, message: Any) -> None:
        if not seen:
            # When the consumer spends 3 leases on the first, holding the GIL throughout
            hold_the_gil(3 * LEASE_SECONDS)
            # Then no lease of the batch expired: another consumer finds nothing to take
            stolen.append(thief_fetch(store_url))
        seen.append(body["n"])
        message.ack()

    channel = connection.channel()
    channel.basic_qos(0, 3, False)
    with Consumer(channel, [QUEUE], callbacks=[on_message]):
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            connection.drain_events(timeout=5)
    assert stolen == [0]
    assert sorted(seen) == [0, 1, 2]
    assert counts(store_url, QUEUE) == EMPTY


def test_an_ack_made_while_redis_is_down_goes_through_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Redis that keeps its data across a restart, and a delivered message
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        url = server.url
        with Connection(f"tq+{url}", transport_options={"lease_seconds": 4}) as conn:
            publish(conn, QUEUE, {"n": 1})
            message = consume_one(conn)
            # When Redis stops and the task acks meanwhile
            server.stop()
            with caplog.at_level(logging.WARNING, logger="tq_kombu.held"):
                message.ack()  # does not raise: the ack waits for the store
            assert "retrying while its lease holds" in caplog.text
            # Then the ack reaches Redis once it is back (same port, same data)
            server.start()
            wait_for(lambda: counts(url, QUEUE) == EMPTY, 10, "the retried ack to reach Redis")
    finally:
        server.stop()


def message(store: Store, message_id: str) -> None:
    store.enqueue(QUEUE.name, NewMessage(message_id, b"payload", 5))


def test_a_renewal_racing_an_ack_does_not_warn_of_a_lost_lease(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a renewer holding two leases
    message(store, "acked")
    message(store, "stolen")
    acked, stolen = (d.lease for d in store.fetch([QUEUE.name], 2, "me", 30, 5).deliveries)
    loop = RenewLoop(store)
    for lease in (acked, stolen):
        loop.apply(["hold", lease.queue, lease.message_id, lease.token, 30])
    # When one is acked by its holder (which says it is settling it first) and the other
    # is settled behind the renewer's back (as if another consumer had taken it)
    loop.apply(["settling", acked.queue, acked.message_id, acked.token])
    assert store.ack(acked)
    assert store.ack(stolen)
    with caplog.at_level(logging.WARNING, logger="tq_kombu.renewer"):
        loop.renew()
        # (a lease found lost once may have been settled a moment ago: its drop may
        # still be on its way, so it is reported only when found lost again)
        assert "lost the lease" not in caplog.text
        loop.renew()
    # Then only the stolen one is reported lost, and neither is held any more
    warnings = [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()]
    assert len(warnings) == 1 and "stolen" in warnings[0]
    assert loop.held == {}


def test_a_lease_settled_without_warning_the_renewer_is_not_reported_lost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a renewer holding a lease whose message its holder acks without telling it
    message(store, "acked")
    (acked,) = (d.lease for d in store.fetch([QUEUE.name], 1, "me", 30, 5).deliveries)
    loop = RenewLoop(store)
    loop.apply(["hold", acked.queue, acked.message_id, acked.token, 30])
    assert store.ack(acked)
    with caplog.at_level(logging.WARNING, logger="tq_kombu.renewer"):
        loop.renew()  # it finds the lease lost once...
        loop.apply(["drop", acked.queue, acked.message_id, acked.token])  # ...then the drop comes
        loop.renew()
    # Then nothing is reported and nothing is held
    assert "lost the lease" not in caplog.text
    assert loop.held == {}


def test_an_ack_made_while_sqlite_is_locked_goes_through_once_it_is_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    options = {"lease_seconds": 4, "busy_timeout_seconds": 0.1}
    with Connection(f"tq+{url}", transport_options=options) as conn:
        # Given a delivered message, and another process holding the database's write lock
        publish(conn, QUEUE, {"n": 1})
        message = consume_one(conn)
        locker = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            # When the task acks meanwhile, it does not fail
            with caplog.at_level(logging.WARNING, logger="tq_kombu.held"):
                message.ack()
            assert "retrying while its lease holds" in caplog.text
        finally:
            # Then the ack is retried and goes through once the lock is released
            locker.execute("COMMIT")
            locker.close()
        wait_for(lambda: counts(url, QUEUE) == EMPTY, 10, "the retried ack to reach the database")


def assert_renewed_by_the_companion(
    broker_url: str, store: Store, options: dict[str, Any], **connection: Any
) -> None:
    """Consume one message with 1 s leases, then check after 2.5 s that nobody else can
    take it: the companion process renewed it through a store opened like ours."""
    transport_options = {"lease_seconds": LEASE_SECONDS, **options}
    with Connection(broker_url, transport_options=transport_options, **connection) as conn:
        publish(conn, QUEUE, {"n": 1})
        message = consume_one(conn)
        assert conn.transport.held.renewer.running
        time.sleep(2.5 * LEASE_SECONDS)  # sampling point: an unrenewed lease has expired
        assert store.fetch([QUEUE.name], 10, "thief", 60, 5).deliveries == []
        message.ack()
        assert store.counts(QUEUE.name) == EMPTY


def test_the_renewer_process_finds_the_store_under_its_key_prefix(redis_url: str) -> None:
    # Given a transport with its own key prefix, the renewer renews the keys under it
    store = open_store(redis_url, key_prefix="elsewhere")
    try:
        assert_renewed_by_the_companion(f"tq+{redis_url}", store, {"key_prefix": "elsewhere"})
    finally:
        store.close()


def test_the_renewer_process_reaches_the_store_over_tls(
    tls_redis: tuple[int, Path],  # noqa: F811 - the fixture imported above
) -> None:
    # Given a Redis reached over TLS only, with a certificate authority of its own
    port, cert = tls_redis
    url = f"rediss://127.0.0.1:{port}/0"
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(cert)}
    wait_for(lambda: port_open(port), 10, "the TLS redis-server")
    store = open_store(url, **tls)
    try:
        wait_for(lambda: store.ping() is None, 10, "the TLS redis-server to answer")
        # Then the renewer renews over TLS with the same options
        assert_renewed_by_the_companion(f"tq+{url}", store, {}, ssl=tls)
    finally:
        store.close()


def test_a_memory_store_is_renewed_from_a_thread_of_the_process(memory_url: str) -> None:
    # Given a store living in this process only, no companion process can reach it
    store = open_store(memory_url)
    with Connection(f"tq+{memory_url}", transport_options={"lease_seconds": LEASE_SECONDS}) as conn:
        publish(conn, QUEUE, {"n": 1})
        message = consume_one(conn)
        # Then a thread renews the lease instead
        assert not conn.transport.held.renewer.running
        time.sleep(2.5 * LEASE_SECONDS)  # sampling point: an unrenewed lease has expired
        assert store.fetch([QUEUE.name], 10, "thief", 60, 5).deliveries == []
        message.ack()
        assert store.counts(QUEUE.name) == EMPTY


def dead_but_not_reaped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


def test_a_killed_renewer_process_is_replaced_at_the_next_change_told_every_held_lease(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a companion renewing two leases (restarts allowed at once), then killed
    monkeypatch.setattr(renewer_module, "RESTART_MIN_SECONDS", 0.0)
    store = open_store(redis_url)
    for name in ("kept", "dropped", "later"):
        message(store, name)
    deliveries = store.fetch([QUEUE.name], 3, "me", LEASE_SECONDS, 5).deliveries
    kept, dropped, later = (d.lease for d in deliveries)
    renewer = renewer_module.Renewer(redis_url, {}, store)
    try:
        renewer.hold_many([kept, dropped], LEASE_SECONDS)
        killed = renewer._process
        assert killed is not None and renewer.running
        os.kill(killed.pid, signal.SIGKILL)
        wait_for(lambda: dead_but_not_reaped(killed.pid), 10, "the companion to die")
        # When the parent tells it the next changes (its write finds the pipe closed)
        renewer.drop(dropped)
        renewer.hold_many([later], LEASE_SECONDS)
        # Then another companion renews what is held: only the dropped lease expires
        assert renewer.running and renewer._process is not killed
        time.sleep(2.5 * LEASE_SECONDS)  # sampling point: an unrenewed lease has expired
        taken = store.fetch([QUEUE.name], 10, "thief", 60, 5).deliveries
        assert [d.lease.message_id for d in taken] == ["dropped"]
    finally:
        renewer.close()
        store.close()


def test_the_companion_reads_every_complete_command_at_once_and_keeps_a_partial_one() -> None:
    # Given a pipe holding a store line, three commands and half of a fourth
    read_fd, write_fd = os.pipe()
    try:
        pipe = renewer_module._Pipe(read_fd)
        os.write(write_fd, b'store\n["hold", "q", "a", "t:1", 30]\n\n["drop", "q", "a", "t:1"]\n')
        os.write(write_fd, b'["hold", "q", "b", "t:2", 30]\n["drop", "q", ')
        assert pipe.first_line() == b"store"
        # When it reads, Then it gets the complete ones, in order, blank lines skipped
        assert pipe.read() == [
            ["hold", "q", "a", "t:1", 30],
            ["drop", "q", "a", "t:1"],
            ["hold", "q", "b", "t:2", 30],
        ]
        assert pipe.read() == []
        # And the rest of the partial one once it has come
        os.write(write_fd, b'"b", "t:2"]\n')
        assert pipe.read() == [["drop", "q", "b", "t:2"]]
        assert not pipe.closed
    finally:
        os.close(write_fd)
        os.close(read_fd)
