"""Each real store agrees with the reference memory store under random operations.

A hypothesis state machine applies the same enqueues (priorities, ETAs, waiting, parents),
fetches, takes (no-ack), acks, requeues, releases, burials, lease expiries, replays, cancels,
re-prioritisations, purges and task completions to a real store (SQLite, Redis) and to a
MemoryStore,
then checks that both hold the same messages in the same states, in the same order
where the contract gives one (ready: hand-out order; delayed: due order; waiting:
arrival) and with the same priorities, delivery counts and dead reasons.
"""

from __future__ import annotations

import time
import uuid
from itertools import count

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tq_kombu.store import Store, open_store
from tq_kombu.store.base import DeadLetter, DeadReason, Lease, MessageInfo, NewMessage, State
from tq_kombu.store.memory import MemoryStore

QUEUES = ("alpha", "beta")
PRIORITIES = st.sampled_from([0, 1, 5, 10, 255])
LONG_LEASE = 600.0
CONSUMER = "model-consumer"
#: Tasks no message of the test carries (parents that run elsewhere).
EXTERNAL = ["ext-1", "ext-2"]
#: Lists whose order the contract fixes; the others are compared as sets (ties in time).
ORDERED = (State.READY, State.DELAYED, State.WAITING)


def _view(info: MessageInfo) -> tuple[object, ...]:
    return (info.message_id, info.priority, info.delivery_count, info.dead_reason)


class StoreAgreesWithModel(RuleBasedStateMachine):
    """Set ``real_url`` on a subclass; each run gets an empty real store."""

    real_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.real: Store = open_store(self.real_url)
        self.model = MemoryStore()
        self.ids = count(1)
        self.eta_offsets = count(1)
        #: message id -> (queue, lease in the real store, lease in the model)
        self.held: dict[str, tuple[str, Lease, Lease]] = {}
        self.known: dict[str, str] = {}  # message id -> queue it was last seen in
        # task ids of this run (completion records outlive the queues deleted after a run)
        self.run = uuid.uuid4().hex[:8]

    def teardown(self) -> None:
        for queue in QUEUES:
            self.real.delete_queue(queue)
        self.real.close()

    def task(self, name: str) -> str:
        """The task id of message ``name`` (or of an external task) in this run."""
        return f"{self.run}:{name}"

    def tasks(self) -> st.SearchStrategy[str]:
        return st.sampled_from([self.task(name) for name in sorted(self.known) + EXTERNAL])

    def both(self, method: str, *args: object) -> tuple[object, object]:
        return getattr(self.real, method)(*args), getattr(self.model, method)(*args)

    # -- publish ----------------------------------------------------------
    @rule(
        queue=st.sampled_from(QUEUES),
        priority=PRIORITIES,
        when=st.sampled_from(["now", "past", "future"]),
        waiting=st.booleans(),
    )
    def enqueue(self, queue: str, priority: int, when: str, waiting: bool) -> None:
        message_id = f"m{next(self.ids)}"
        eta = {
            "now": None,
            "past": time.time() - 100,
            # distinct due times, so that the due order is the same in every store
            "future": time.time() + 3600 + next(self.eta_offsets),
        }[when]
        message = NewMessage(
            message_id, message_id.encode(), priority, eta, "t", self.task(message_id), waiting
        )
        self.both("enqueue", queue, message)
        self.known[message_id] = queue

    @rule(
        queue=st.sampled_from(QUEUES),
        priority=PRIORITIES,
        data=st.data(),
        policy=st.sampled_from(["dead", "run"]),
    )
    def enqueue_dependent(
        self, queue: str, priority: int, data: st.DataObject, policy: str
    ) -> None:
        parents = data.draw(st.lists(self.tasks(), min_size=1, max_size=3, unique=True))
        message_id = f"m{next(self.ids)}"
        message = NewMessage(
            message_id, message_id.encode(), priority, None, "t", self.task(message_id),
            depends_on=tuple(parents), on_parent_failure=policy,
        )  # fmt: skip
        self.both("enqueue", queue, message)
        self.known[message_id] = queue

    @rule(data=st.data(), succeeded=st.booleans())
    def complete(self, data: st.DataObject, succeeded: bool) -> None:
        task_id = data.draw(self.tasks())
        real, model = self.both("complete", task_id, succeeded)
        assert real == model, task_id

    # -- consume ----------------------------------------------------------
    @rule(
        queue=st.sampled_from(QUEUES),
        max_count=st.integers(0, 3),
        max_deliveries=st.integers(1, 3),
    )
    def fetch(self, queue: str, max_count: int, max_deliveries: int) -> None:
        real, model = (
            store.fetch([queue], max_count, CONSUMER, LONG_LEASE, max_deliveries)
            for store in (self.real, self.model)
        )
        got = [(d.lease.message_id, d.priority, d.delivery_count) for d in real.deliveries]
        expected = [(d.lease.message_id, d.priority, d.delivery_count) for d in model.deliveries]
        assert got == expected
        assert real.more_ready == model.more_ready
        for mine, theirs in zip(real.deliveries, model.deliveries, strict=True):
            self.held[mine.lease.message_id] = (queue, mine.lease, theirs.lease)

    @rule(queue=st.sampled_from(QUEUES), max_count=st.integers(0, 3))
    def take(self, queue: str, max_count: int) -> None:
        # a no-ack consumer takes messages: both stores hand out and remove the same ones
        real, model = (store.take([queue], max_count) for store in (self.real, self.model))
        got = [(d.lease.message_id, d.priority, d.delivery_count) for d in real.deliveries]
        assert got == [(d.lease.message_id, d.priority, d.delivery_count) for d in model.deliveries]
        assert real.more_ready == model.more_ready

    def _take_held(self, data: st.DataObject) -> tuple[str, Lease, Lease]:
        message_id = data.draw(st.sampled_from(sorted(self.held)))
        return self.held.pop(message_id)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), action=st.sampled_from(["ack", "requeue", "release", "bury"]))
    def settle(self, data: st.DataObject, action: str) -> None:
        _, real_lease, model_lease = self._take_held(data)
        if action == "bury":
            dead = DeadLetter(DeadReason.REJECTED, "rejected in the model test")
            outcome = (self.real.bury(real_lease, dead), self.model.bury(model_lease, dead))
        else:
            outcome = (
                getattr(self.real, action)(real_lease),
                getattr(self.model, action)(model_lease),
            )
        assert outcome[0] == outcome[1]

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        # When one lease runs out (renewed for a millisecond) and its queue is fetched from
        queue, real_lease, model_lease = self._take_held(data)
        assert self.real.renew([real_lease], 0.001) == []
        assert self.model.renew([model_lease], 0.001) == []
        time.sleep(0.01)  # time has to pass in the real store, whose clock is not ours
        self.fetch(queue, 0, 5)

    # -- dead letters and administration -----------------------------------
    def _pick(self, data: st.DataObject, state: State) -> tuple[str, str] | None:
        candidates = [
            (queue, info.message_id)
            for queue in QUEUES
            for info in self.model.list_messages(queue, state, 0, 1000)
        ]
        return data.draw(st.sampled_from(candidates)) if candidates else None

    @rule(
        data=st.data(),
        to_other=st.booleans(),
        priority=st.one_of(st.none(), PRIORITIES),
    )
    def replay(self, data: st.DataObject, to_other: bool, priority: int | None) -> None:
        picked = self._pick(data, State.DEAD)
        if picked is None:
            return
        queue, message_id = picked
        target = [q for q in QUEUES if q != queue][0] if to_other else None
        real, model = self.both("replay", queue, message_id, target, priority)
        assert real == model

    @rule(data=st.data(), state=st.sampled_from(list(ORDERED)))
    def cancel(self, data: st.DataObject, state: State) -> None:
        picked = self._pick(data, state)
        if picked is not None:
            real, model = self.both("cancel", *picked)
            assert real == model

    @rule(data=st.data(), state=st.sampled_from(list(ORDERED)), priority=PRIORITIES)
    def set_priority(self, data: st.DataObject, state: State, priority: int) -> None:
        picked = self._pick(data, state)
        if picked is not None:
            real, model = self.both("set_priority", *picked, priority)
            assert real == model

    @rule(data=st.data())
    def release_waiting(self, data: st.DataObject) -> None:
        picked = self._pick(data, State.WAITING)
        if picked is not None:
            real, model = self.both("release_waiting", *picked)
            assert real == model

    @rule(queue=st.sampled_from(QUEUES), state=st.sampled_from(list(State)))
    def purge(self, queue: str, state: State) -> None:
        if state == State.INFLIGHT:
            self.held = {k: v for k, v in self.held.items() if v[0] != queue}
        real, model = self.both("purge", queue, state)
        assert real == model

    # -- agreement --------------------------------------------------------
    @invariant()
    def both_stores_see_the_same_graph(self) -> None:
        for task_id in [self.task(name) for name in sorted(self.known)[-5:] + EXTERNAL]:
            real, model = self.both("dependency_info", task_id)
            assert real == model, task_id

    @invariant()
    def both_stores_hold_the_same_messages(self) -> None:
        for queue in QUEUES:
            assert self.real.counts(queue) == self.model.counts(queue), queue
            for state in State:
                real = [_view(i) for i in self.real.list_messages(queue, state, 0, 1000)]
                model = [_view(i) for i in self.model.list_messages(queue, state, 0, 1000)]
                if state in ORDERED:
                    assert real == model, (queue, state)
                else:
                    assert sorted(real, key=repr) == sorted(model, key=repr), (queue, state)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_real_store_agrees_with_the_memory_model(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    machine = type(f"{kind.title()}AgreesWithModel", (StoreAgreesWithModel,), {"real_url": url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
