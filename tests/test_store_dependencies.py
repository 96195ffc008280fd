"""Dependencies in the Store contract: messages that wait on other tasks, released once
every parent succeeded, failed (transitively) when one fails, over every store."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from tq_kombu.errors import ConfigurationError
from tq_kombu.priority import Priority
from tq_kombu.store import Store
from tq_kombu.store.model import (
    Completion,
    DeadLetter,
    DeadReason,
    DependencyLink,
    NewMessage,
    ParentState,
    QueueCounts,
    State,
)

from .store_contract import CLOCK_SLACK, eventually, fetch, ids, message, only


@pytest.fixture
def store(contract_store: Store) -> Store:
    """Every store, the reference memory store included."""
    return contract_store


def child(
    name: str,
    parents: Sequence[str],
    *,
    policy: str = "dead",
    deadline: float | None = None,
    priority: int = Priority.NORMAL,
    eta: float | None = None,
) -> NewMessage:
    """The message of task ``name`` (message id ``m-<name>``) depending on ``parents``."""
    return NewMessage(
        message_id=f"m-{name}",
        payload=f"payload of {name}".encode(),
        priority=int(priority),
        eta=eta,
        task_name="tasks.child",
        task_id=name,
        depends_on=tuple(parents),
        on_parent_failure=policy,
        dependency_deadline=deadline,
    )


def parent(name: str) -> NewMessage:
    """A plain message of task ``name`` (message id ``m-<name>``)."""
    return message(f"m-{name}", task_id=name, task_name="tasks.parent")


def state_of(store: Store, queue: str, name: str) -> State | None:
    info = store.info(queue, f"m-{name}")
    return None if info is None else info.state


# -- release ----------------------------------------------------------------------
def test_a_child_waits_until_the_last_of_three_parents_succeeds(store: Store) -> None:
    store.enqueue("default", child("c", ["p1", "p2", "p3"]))
    assert state_of(store, "default", "c") == State.WAITING
    assert store.complete("p1", True) == Completion(released=0)
    assert store.complete("p2", True) == Completion(released=0)
    assert fetch(store, ["default"]).deliveries == []
    assert store.complete("p3", True) == Completion(released=1)
    assert ids(fetch(store, ["default"])) == ["m-c"]


def test_a_diamond_releases_the_join_only_after_both_branches(store: Store) -> None:
    # Given A -> B, A -> C, (B, C) -> D, published as one graph
    store.enqueue_many(
        [
            ("default", parent("a")),
            ("default", child("b", ["a"])),
            ("default", child("c", ["a"])),
            ("default", child("d", ["b", "c"])),
        ]
    )
    assert store.counts("default") == QueueCounts(ready=1, waiting=3)
    assert store.complete("a", True) == Completion(released=2)
    assert store.complete("b", True) == Completion(released=0)
    assert state_of(store, "default", "d") == State.WAITING
    assert store.complete("c", True) == Completion(released=1)
    assert state_of(store, "default", "d") == State.READY


def test_a_fan_in_of_fifty_parents_releases_the_child_once_all_succeeded(store: Store) -> None:
    parents = [f"p{n}" for n in range(50)]
    store.enqueue("default", child("join", parents))
    released = [store.complete(p, True).released for p in parents]
    assert released == [0] * 49 + [1]
    assert ids(fetch(store, ["default"])) == ["m-join"]


def test_outcomes_recorded_many_at_once_act_as_one_by_one_in_order(store: Store) -> None:
    # Given a diamond a -> (b, c) -> d, a child of x with policy dead, one of y with run
    store.enqueue_many(
        [
            ("default", child("b", ["a"])),
            ("default", child("c", ["a"])),
            ("default", child("d", ["b", "c"])),
            ("default", child("x1", ["x"])),
            ("default", child("y1", ["y"], policy="run")),
        ]
    )
    # When every outcome comes in one call: a's success before b's and c's, x fails
    done = store.complete_many(
        [("a", True, ""), ("b", True, ""), ("x", False, "boom"), ("c", True, ""), ("y", False, "")]
    )
    # Then each counted as if recorded on its own, in order
    assert done == Completion(released=4, failed=1)
    assert sorted(ids(fetch(store, ["default"], 10))) == ["m-b", "m-c", "m-d", "m-y1"]
    assert state_of(store, "default", "x1") == State.DEAD
    assert store.complete_many([]) == Completion()
    with pytest.raises(ValueError, match="task_id"):
        store.complete_many([("", True, "")])


def test_a_released_child_keeps_its_priority_and_its_eta(store: Store) -> None:
    store.enqueue("default", message("plain", Priority.NORMAL))
    store.enqueue("default", child("urgent", ["p"], priority=Priority.URGENT))
    store.enqueue("default", child("later", ["p"], eta=time.time() + 3600))
    assert store.complete("p", True) == Completion(released=2)
    assert store.counts("default") == QueueCounts(ready=2, delayed=1)
    assert ids(fetch(store, ["default"], max_count=3)) == ["m-urgent", "plain"]


def test_a_child_of_a_parent_that_already_succeeded_is_ready_at_once(store: Store) -> None:
    store.complete("p", True)
    store.enqueue("default", child("c", ["p"]))
    assert ids(fetch(store, ["default"])) == ["m-c"]


def test_a_child_of_a_parent_that_already_failed_is_dead_at_once_or_runs_by_policy(
    store: Store,
) -> None:
    store.complete("p", False, "boom")
    store.enqueue("default", child("dies", ["p", "unknown"]))
    store.enqueue("default", child("runs", ["p"], policy="run"))
    dead = store.info("default", "m-dies")
    assert dead is not None and dead.state == State.DEAD
    assert dead.dead_reason == DeadReason.DEPENDENCY_FAILED
    assert "p" in (dead.dead_detail or "")
    assert ids(fetch(store, ["default"])) == ["m-runs"]


def test_a_parent_inside_the_same_batch_is_simply_pending(store: Store) -> None:
    # the child comes first in the batch: its parent is not done, whatever the order
    store.enqueue_many([("q1", child("c", ["p"])), ("q2", parent("p"))])
    assert store.counts("q1") == QueueCounts(waiting=1)
    assert ids(fetch(store, ["q2"])) == ["m-p"]
    assert store.complete("p", True) == Completion(released=1)


# -- failure ----------------------------------------------------------------------
def test_a_failure_cascades_across_three_levels_naming_each_direct_parent(
    store: Store,
) -> None:
    store.enqueue("default", child("l1", ["root"]))
    store.enqueue("other", child("l2", ["l1"]))
    store.enqueue("default", child("l3", ["l2", "elsewhere"]))
    assert store.complete("root", False, "ValueError") == Completion(failed=3)
    for queue, name, cause in (
        ("default", "l1", "root"),
        ("other", "l2", "l1"),
        ("default", "l3", "l2"),
    ):
        info = store.info(queue, f"m-{name}")
        assert info is not None and info.state == State.DEAD
        assert info.dead_reason == DeadReason.DEPENDENCY_FAILED
        assert info.dead_detail == f"parent {cause} failed"
    # each dead child is recorded as failed: a grandchild published later dies at once
    store.enqueue("default", child("late", ["l3"]))
    assert state_of(store, "default", "late") == State.DEAD


def test_a_child_with_policy_run_is_released_when_its_parent_fails(store: Store) -> None:
    store.enqueue("default", child("cleanup", ["p1", "p2"], policy="run"))
    assert store.complete("p1", False) == Completion()
    assert store.complete("p2", True) == Completion(released=1)
    assert ids(fetch(store, ["default"])) == ["m-cleanup"]


def test_a_failed_parent_releases_a_run_child_and_kills_a_dead_child(store: Store) -> None:
    store.enqueue("default", child("dies", ["p"]))
    store.enqueue("default", child("runs", ["p"], policy="run"))
    assert store.complete("p", False) == Completion(released=1, failed=1)


def test_recording_the_same_outcome_again_changes_nothing(store: Store) -> None:
    store.enqueue("default", child("a", ["p"]))
    store.enqueue("default", child("b", ["q"]))
    assert store.complete("p", True) == Completion(released=1)
    assert store.complete("p", True) == Completion()
    assert store.complete("q", False) == Completion(failed=1)
    assert store.complete("q", False) == Completion()
    assert store.counts("default") == QueueCounts(ready=1, dead=1)


def test_a_retrying_parent_keeps_its_children_waiting(store: Store) -> None:
    # Given a parent whose first run asks for a retry (the message returns to ready)
    store.enqueue("default", parent("p"))
    store.enqueue("default", child("c", ["p"]))
    lease = only(fetch(store, ["default"])).lease
    assert store.requeue(lease) is True
    assert state_of(store, "default", "c") == State.WAITING


def test_cancelling_a_parent_fails_its_children(store: Store) -> None:
    store.enqueue("default", parent("p"))
    store.enqueue("default", child("c", ["p"]))
    assert store.cancel("default", "m-p") is True
    info = store.info("default", "m-c")
    assert info is not None and info.dead_reason == DeadReason.DEPENDENCY_FAILED
    assert info.dead_detail == "parent p failed"


def test_burying_a_parent_fails_its_children(store: Store) -> None:
    store.enqueue("default", parent("p"))
    store.enqueue("kids", child("c", ["p"]))
    lease = only(fetch(store, ["default"])).lease
    assert store.bury(lease, DeadLetter(DeadReason.FAILED, "ValueError")) is True
    assert state_of(store, "kids", "c") == State.DEAD


def test_burying_an_acknowledged_parent_by_payload_fails_its_children(store: Store) -> None:
    store.enqueue("kids", child("c", ["p"]))
    assert store.bury_payload("default", parent("p"), DeadLetter(DeadReason.FAILED)) is None
    assert state_of(store, "kids", "c") == State.DEAD


def test_a_parent_handed_out_too_often_fails_its_children(store: Store) -> None:
    store.enqueue("default", parent("p"))
    store.enqueue("kids", child("c", ["p"]))
    only(fetch(store, ["default"], lease_seconds=0.05, max_deliveries=1))
    assert eventually(
        lambda: (
            not fetch(store, ["default"], max_deliveries=1).deliveries
            and state_of(store, "default", "p") == State.DEAD
        )
    )
    assert state_of(store, "kids", "c") == State.DEAD


def test_a_parent_past_its_time_to_live_fails_its_children(store: Store) -> None:
    expires = time.time() + 0.2
    store.enqueue("default", replace(parent("p"), ttl_seconds=0.2))
    store.enqueue("kids", child("c", ["p"]))
    assert eventually(lambda: time.time() > expires + CLOCK_SLACK)  # its time must pass
    assert fetch(store, ["default"]).deliveries == []
    assert state_of(store, "default", "p") == State.DEAD
    assert state_of(store, "kids", "c") == State.DEAD


def test_a_waiting_child_that_dies_fails_its_own_dependents(store: Store) -> None:
    store.enqueue("default", replace(child("c", ["p"]), ttl_seconds=0.2))
    store.enqueue("default", child("g", ["c"]))
    assert eventually(
        lambda: (
            not fetch(store, ["default"]).deliveries
            and state_of(store, "default", "c") == State.DEAD
        )
    )
    info = store.info("default", "m-g")
    assert info is not None and info.dead_detail == "parent c failed"


def test_a_child_whose_deadline_passes_goes_dead_as_timeout_and_cascades(store: Store) -> None:
    deadline = time.time() + 0.3
    store.enqueue("default", child("c", ["never-seen"], deadline=deadline))
    store.enqueue("default", child("grandchild", ["c"]))
    first = fetch(store, ["default"])
    assert first.deliveries == []
    # an idle consumer is told when to look again
    assert first.next_due is not None and first.next_due <= deadline + 0.01
    assert eventually(
        lambda: (
            not fetch(store, ["default"]).deliveries
            and state_of(store, "default", "c") == State.DEAD
        )
    )
    assert fetch(store, ["default"]).next_due is None
    info = store.info("default", "m-c")
    assert info is not None and info.dead_reason == DeadReason.DEPENDENCY_TIMEOUT
    assert "never-seen" in (info.dead_detail or "")
    grandchild = store.info("default", "m-grandchild")
    assert grandchild is not None and grandchild.dead_detail == "parent c failed"


def test_a_wait_wakes_for_a_deadline(store: Store) -> None:
    store.enqueue("default", child("c", ["never-seen"], deadline=time.time() + 0.3))
    started = time.monotonic()
    store.wait(["default"], 5.0)
    assert time.monotonic() - started < 4.0


# -- graphs -----------------------------------------------------------------------
def test_enqueue_many_stores_a_graph_across_queues(store: Store) -> None:
    store.enqueue_many(
        [("q1", parent("a")), ("q2", child("b", ["a"])), ("q1", child("c", ["a", "b"]))]
    )
    assert store.counts("q1") == QueueCounts(ready=1, waiting=1)
    assert store.counts("q2") == QueueCounts(waiting=1)


def test_enqueue_many_stores_nothing_when_one_message_is_bad(store: Store) -> None:
    bad = child("self", ["self"])  # a task cannot depend on itself
    with pytest.raises(ConfigurationError):
        store.enqueue_many([("q1", parent("a")), ("q1", child("b", ["a"])), ("q2", bad)])
    assert store.counts("q1") == QueueCounts()
    assert store.counts("q2") == QueueCounts()
    assert store.dependency_info("a") is None


def test_an_enqueued_child_id_the_queue_holds_already_changes_nothing(store: Store) -> None:
    store.enqueue("default", child("c", ["p1"]))
    store.enqueue("default", child("c", ["p2"]))
    assert store.complete("p2", True) == Completion()
    assert store.complete("p1", True) == Completion(released=1)


# -- concurrency ------------------------------------------------------------------
PARENTS = [f"parent-{n}" for n in range(4)]


def children_of_four_parents(store: Store, count: int) -> None:
    store.enqueue_many(
        [("default", child(f"c{n}", [PARENTS[n % 4], PARENTS[(n + 1) % 4]])) for n in range(count)]
    )


def test_two_hundred_children_are_released_exactly_once_by_concurrent_completions(
    store: Store,
) -> None:
    children_of_four_parents(store, 200)
    barrier = threading.Barrier(len(PARENTS))
    released: list[int] = []

    def finish(name: str) -> None:
        barrier.wait(timeout=10)
        released.append(store.complete(name, True).released)

    threads = [threading.Thread(target=finish, args=(name,)) for name in PARENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(released) == 200
    assert store.counts("default") == QueueCounts(ready=200)
    assert len(ids(fetch(store, ["default"], max_count=300))) == 200


# -- replay, operators ------------------------------------------------------------
def test_replaying_a_dead_parent_revives_its_children_and_its_success_releases_them(
    store: Store,
) -> None:
    store.enqueue("default", parent("p"))
    store.enqueue("default", child("c", ["p"]))
    store.enqueue("default", child("g", ["c"]))
    lease = only(fetch(store, ["default"])).lease
    store.bury(lease, DeadLetter(DeadReason.FAILED, "flaky"))
    assert store.counts("default") == QueueCounts(dead=3)
    # When the operator replays the parent
    assert store.replay("default", "m-p") is True
    # Then its children wait again, and its success releases them in turn
    assert store.counts("default") == QueueCounts(ready=1, waiting=2)
    lease = only(fetch(store, ["default"])).lease
    assert store.ack(lease) is True
    assert store.complete("p", True) == Completion(released=1)
    assert store.complete("c", True) == Completion(released=1)
    assert store.counts("default") == QueueCounts(ready=2)


def test_cancelling_a_waiting_child_removes_it_from_its_parents_children(store: Store) -> None:
    store.enqueue("default", child("c1", ["p"]))
    store.enqueue("default", child("c2", ["p"]))
    assert store.cancel("default", "m-c1") is True
    info = store.dependency_info("p")
    assert info is not None and [link.task_id for link in info.children] == ["c2"]
    assert store.complete("p", True) == Completion(released=1)


def test_releasing_a_waiting_child_by_hand_detaches_it_from_its_parents(store: Store) -> None:
    store.enqueue("default", child("c", ["p"]))
    assert store.release_waiting("default", "m-c") is True
    assert ids(fetch(store, ["default"])) == ["m-c"]
    assert store.complete("p", True) == Completion()


def test_replaying_a_child_set_aside_runs_it_outside_the_graph(store: Store) -> None:
    store.enqueue("default", child("c", ["p"]))
    store.complete("p", False)
    assert store.replay("default", "m-c") is True
    assert ids(fetch(store, ["default"])) == ["m-c"]
    assert store.dependency_info("p") is not None
    assert store.dependency_info("p").children == []  # type: ignore[union-attr]


def test_purged_waiting_children_leave_their_parents(store: Store) -> None:
    store.enqueue("default", child("c1", ["p"]))
    store.enqueue("default", child("c2", ["p"]))
    assert store.purge("default", State.WAITING) == 2
    assert store.dependency_info("p") is None
    assert store.complete("p", True) == Completion()


# -- inspection -------------------------------------------------------------------
def test_dependency_info_shows_parents_with_their_outcomes_and_children(store: Store) -> None:
    store.enqueue("default", parent("running"))
    store.enqueue("default", child("c", ["done", "broken", "running"], policy="run"))
    store.enqueue("other", child("g", ["c"], deadline=time.time() + 3600))
    store.complete("done", True)
    store.complete("broken", False)
    info = store.dependency_info("c")
    assert info is not None
    assert (info.task_id, info.state, info.on_parent_failure) == ("c", ParentState.PENDING, "run")
    assert info.parents == [
        DependencyLink("done", ParentState.SUCCEEDED),
        DependencyLink("broken", ParentState.FAILED),
        DependencyLink("running", ParentState.PENDING, "default", "m-running"),
    ]
    assert info.children == [DependencyLink("g", ParentState.PENDING, "other", "m-g")]
    grandchild = store.dependency_info("g")
    assert grandchild is not None and grandchild.dependency_deadline is not None
    assert grandchild.parents == [DependencyLink("c", ParentState.PENDING, "default", "m-c")]
    assert store.dependency_info("unknown") is None


def test_dependency_info_shows_a_failed_parent_and_its_dead_children(store: Store) -> None:
    store.enqueue("default", child("c", ["p"]))
    store.complete("p", False)
    info = store.dependency_info("p")
    assert info is not None and info.state == ParentState.FAILED
    assert info.children == [DependencyLink("c", ParentState.FAILED, "default", "m-c")]


def test_waiting_children_are_counted_listed_and_found(store: Store) -> None:
    store.enqueue("default", child("c1", ["p"]))
    store.enqueue("default", child("c2", ["p"]))
    store.enqueue("default", message("plain"))
    assert store.counts("default") == QueueCounts(ready=1, waiting=2)
    listed = store.list_messages("default", State.WAITING)
    assert [info.message_id for info in listed] == ["m-c1", "m-c2"]
    found = store.find_task("default", "c2")
    assert found is not None and found.state == State.WAITING


def test_completion_records_expire_after_their_ttl(store: Store) -> None:
    store.set_dependency_record_ttl(0.3)
    store.complete("p", True)
    assert store.dependency_info("p") is not None
    assert eventually(lambda: store.dependency_info("p") is None)
    # a child published after the record expired waits (the parent is unknown again)
    store.enqueue("default", child("c", ["p"]))
    assert state_of(store, "default", "c") == State.WAITING


def test_a_store_is_in_use_for_dependencies_once_a_message_with_parents_was_stored(
    store: Store,
) -> None:
    # Given plain messages only, then a graph without parents
    store.enqueue("default", parent("p"))
    store.enqueue_many([("default", parent("q"))])
    assert not store.dependencies_in_use()
    # When a message with parents is stored (even one released at once)
    store.complete("p", True)
    store.enqueue("default", child("c", ["p"]))
    # Then the store is in use for dependencies, for good
    assert store.dependencies_in_use()
    store.complete("c", True)
    assert store.dependencies_in_use()
