"""An ack that frees prefetch credit leads to an immediate fetch, on both stores: in
``drain_events`` (kombu clients without an event loop) and in a kombu event loop (Hub),
also when the ack comes from another thread while the consumer is waiting.

The consumer's wait timeout is raised to 5 s so that a consumer which only fetches
again once its wait runs out is told apart clearly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub

import tq_kombu  # noqa: F401  (registers tq+)

WORK = Queue("work", routing_key="work")
OTHER = Queue("other", routing_key="other")
OPTIONS = {"lease_seconds": 4, "wait_timeout_seconds": 5}


@pytest.fixture
def connection(store_url: str) -> Iterator[Connection]:
    with Connection(f"tq+{store_url}", transport_options=OPTIONS) as conn:
        yield conn


@pytest.fixture
def publisher(store_url: str) -> Iterator[Any]:
    """Publishes from a connection of its own, as another process would."""
    with Connection(f"tq+{store_url}", transport_options=OPTIONS) as conn:
        channel = conn.channel()
        for queue in (WORK, OTHER):
            queue(channel).declare()
        producer = Producer(channel)

        def publish(queue: Queue, *bodies: Any) -> None:
            for body in bodies:
                producer.publish(body, routing_key=queue.routing_key, serializer="json")

        yield publish


class Received:
    """Messages as a consumer callback got them, with the time each arrived."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.times: list[float] = []

    def __call__(self, body: Any, message: Any) -> None:
        self.messages.append(message)
        self.times.append(time.monotonic())


def consumers(connection: Connection, received: Received) -> tuple[Consumer, Consumer]:
    """A prefetch-1 consumer of 'work', and one of 'other' that always has credit (as
    Celery's remote-control consumer next to its task consumer)."""
    work = Consumer(connection.channel(), [WORK], callbacks=[received], prefetch_count=1)
    other = Consumer(connection.channel(), [OTHER], callbacks=[lambda body, message: None])
    return work, other


def ack_later(message: Any, delay_seconds: float) -> list[float]:
    """Ack ``message`` from another thread after a delay; the list gets the time the ack
    began (noted first: the credit it returns may be used before ``ack()`` returns)."""
    acked: list[float] = []

    def ack() -> None:
        acked.append(time.monotonic())
        message.ack()

    timer = threading.Timer(delay_seconds, ack)
    timer.daemon = True
    timer.start()
    return acked


def test_drain_events_fetches_at_once_when_an_ack_from_another_thread_frees_credit(
    connection: Connection, publisher: Any
) -> None:
    # Given two messages, a prefetch-1 consumer holding the first, and another consumer
    publisher(WORK, {"n": 0}, {"n": 1})
    received = Received()
    work, other = consumers(connection, received)
    with work, other:
        connection.drain_events(timeout=5)
        assert [m.payload for m in received.messages] == [{"n": 0}]
        # When another thread acks the first while drain_events waits
        acked = ack_later(received.messages[0], 0.3)
        connection.drain_events(timeout=10)
        # Then the second is fetched right after the ack, not once the wait runs out
        assert [m.payload for m in received.messages] == [{"n": 0}, {"n": 1}]
        assert acked and received.times[1] >= acked[0], "delivered before the first was acked"
        assert received.times[1] - acked[0] < 1.0
        received.messages[1].ack()


def test_drain_events_honours_prefetch_while_the_ack_has_not_come(
    connection: Connection, publisher: Any
) -> None:
    publisher(WORK, {"n": 0}, {"n": 1})
    received = Received()
    work, other = consumers(connection, received)
    with work, other:
        connection.drain_events(timeout=5)
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.5)
        assert len(received.messages) == 1


def run_hub_until(hub: Hub, condition: Any, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, f"not done within {timeout_seconds} s"
        hub.run_once()


@pytest.fixture
def hub(connection: Connection) -> Iterator[Hub]:
    loop = Hub()
    connection.transport.register_with_event_loop(connection.connection, loop)
    yield loop
    loop.close()


def test_in_an_event_loop_a_published_message_is_delivered_promptly(
    connection: Connection, publisher: Any, hub: Hub
) -> None:
    received = Received()
    work, other = consumers(connection, received)
    with work, other:
        # Given an idle loop (its consumers armed their waiters)
        for _ in range(3):
            hub.run_once()
        # When a message is published
        sent = time.monotonic()
        publisher(WORK, {"n": 0})
        # Then the loop is woken and delivers it well before the 5 s wait timeout
        run_hub_until(hub, lambda: received.messages, 5)
        assert received.times[0] - sent < 1.0
        received.messages[0].ack()


def test_in_an_event_loop_an_ack_from_another_thread_leads_to_a_fetch_at_once(
    connection: Connection, publisher: Any, hub: Hub
) -> None:
    publisher(WORK, {"n": 0}, {"n": 1})
    received = Received()
    work, other = consumers(connection, received)
    with work, other:
        run_hub_until(hub, lambda: received.messages, 5)
        # (the hub polls at least once a second: "at once" must beat that clearly)
        acked = ack_later(received.messages[0], 0.2)
        run_hub_until(hub, lambda: len(received.messages) == 2, 10)
        assert acked and received.times[1] >= acked[0], "delivered before the first was acked"
        assert received.times[1] - acked[0] < 0.5
        received.messages[1].ack()


def test_drain_events_after_a_credit_wake_up_still_hears_of_new_messages(
    connection: Connection, publisher: Any
) -> None:
    # Given drain_events woken once by an ack from another thread (so the other
    # consumer's waiter was left waiting), and every consumer with credit again
    publisher(WORK, {"n": 0}, {"n": 1})
    received, others = Received(), Received()
    work = Consumer(connection.channel(), [WORK], callbacks=[received], prefetch_count=1)
    other = Consumer(connection.channel(), [OTHER], callbacks=[others])
    with work, other:
        connection.drain_events(timeout=5)
        ack_later(received.messages[0], 0.3)
        connection.drain_events(timeout=10)
        received.messages[1].ack()
        # When a message for the other consumer arrives while drain_events waits
        published: list[float] = []

        def publish() -> None:
            publisher(OTHER, {"other": 1})
            published.append(time.monotonic())

        timer = threading.Timer(0.3, publish)
        timer.start()
        connection.drain_events(timeout=10)
        timer.join()
        # Then it is delivered at once, not after the 5 s wait timeout
        assert [m.payload for m in others.messages] == [{"other": 1}]
        assert others.times[0] - published[0] < 1.0


def test_in_an_event_loop_a_delayed_message_is_delivered_at_its_eta_not_a_poll_later(
    store_url: str, connection: Connection, hub: Hub
) -> None:
    # (a store's blocking wait may end late: Redis looks at blocked clients' timeouts
    # about ten times a second, so a wait timing out at the ETA comes up to 100 ms late)
    from datetime import UTC, datetime

    received = Received()
    work, other = consumers(connection, received)
    lateness = []
    with Connection(f"tq+{store_url}", transport_options=OPTIONS) as publishing:
        producer = Producer(publishing.channel())
        with work, other:
            for n in range(5):
                # Given an idle loop
                for _ in range(3):
                    hub.run_once()
                # When a message due in 0.25 s is published
                eta = time.time() + 0.25
                iso = datetime.fromtimestamp(eta, UTC).isoformat()
                producer.publish(
                    {"n": n}, routing_key=WORK.routing_key, serializer="json", headers={"eta": iso}
                )
                run_hub_until(hub, lambda n=n: len(received.messages) > n, 5)
                lateness.append(time.time() - eta)
                received.messages[n].ack()
    # Then each is delivered within a few milliseconds of its ETA (a loop timer at the
    # fetch's next_due), never before it
    assert min(lateness) >= 0, lateness
    assert sorted(lateness)[2] < 0.03, lateness
