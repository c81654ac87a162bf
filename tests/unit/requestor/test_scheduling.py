"""Task bookkeeping: runs on providers, retries elsewhere, and majority votes."""

from __future__ import annotations

import pytest

from requestor.errors import ConfigurationError
from requestor.scheduling import TaskBook, majority, vote_key


def test_each_task_is_handed_out_once_in_order() -> None:
    book = TaskBook(["a", "b"])
    first, second = book.next_for("p1"), book.next_for("p2")
    assert first is not None and second is not None and (first.data, second.data) == ("a", "b")
    assert book.next_for("p3") is None
    assert book.counts() == {"done": 0, "failed": 0, "running": 2, "waiting": 0}


def test_a_failed_task_is_retried_on_another_provider_never_the_same() -> None:
    book = TaskBook(["a"], max_attempts=3)
    task = book.next_for("p1")
    assert task is not None and not book.failed(task, "p1", "timeout")
    assert book.next_for("p1") is None  # not again where it failed
    assert book.wants("p2") and not book.wants("p1")
    again = book.next_for("p2")
    assert again is task and task.running == {"p2"}
    assert book.succeeded(task, "p2", 42)
    assert task.status == "done" and task.result == 42 and task.providers == ["p2", "p1"]
    assert book.done


def test_a_task_is_given_up_after_max_attempts_with_every_reason() -> None:
    book = TaskBook(["a"], max_attempts=2)
    task = book.next_for("p1")
    assert task is not None and not book.failed(task, "p1", "boom")
    assert book.next_for("p2") is task
    assert book.failed(task, "p2", "bang")
    assert task.status == "failed" and "boom" in task.error and "bang" in task.error
    assert book.next_for("p3") is None and book.done


def test_redundancy_runs_each_task_on_k_distinct_providers_and_takes_the_majority() -> None:
    book = TaskBook(["x"], redundancy=3)
    runs = [book.next_for(p) for p in ("p1", "p2", "p3")]
    assert all(r is runs[0] for r in runs) and book.next_for("p4") is None
    task = runs[0]
    assert task is not None
    assert not book.succeeded(task, "p1", "good")
    assert not book.succeeded(task, "p2", "forged")
    assert book.succeeded(task, "p3", "good")
    assert task.status == "done" and task.result == "good" and task.votes == 2


def test_two_agreeing_runs_of_three_settle_before_the_third_answers() -> None:
    book = TaskBook(["x"], redundancy=3)
    task = book.next_for("p1")
    book.next_for("p2")
    book.next_for("p3")
    assert task is not None
    book.succeeded(task, "p1", {"v": [1, 2]})
    assert book.succeeded(task, "p2", {"v": [1, 2]})  # unhashable results compare by their JSON
    assert not book.succeeded(task, "p3", {"v": [9]})  # late: ignored
    assert task.result == {"v": [1, 2]}


def test_a_tie_gets_an_extra_run_then_fails_without_a_majority() -> None:
    book = TaskBook(["x"], redundancy=2, max_attempts=2)
    task = book.next_for("p1")
    book.next_for("p2")
    assert task is not None
    book.succeeded(task, "p1", "a")
    assert not book.succeeded(task, "p2", "b")  # 1:1, one extra run allowed
    assert book.next_for("p3") is task
    assert book.succeeded(task, "p3", "c")
    assert task.status == "failed" and "no 2 of 3 runs agreed" in task.error


def test_a_failed_replica_is_replaced_on_a_fourth_provider() -> None:
    book = TaskBook(["x"], redundancy=3, max_attempts=2)
    task = book.next_for("p1")
    book.next_for("p2")
    book.next_for("p3")
    assert task is not None
    book.failed(task, "p1", "vanished")
    assert book.next_for("p1") is None
    assert book.next_for("p4") is task
    book.succeeded(task, "p2", 1)
    assert book.succeeded(task, "p4", 1)


def test_abandoned_tasks_count_as_failed() -> None:
    book = TaskBook([1, 2])
    book.abandon(book.tasks[0], "no provider")
    assert book.tasks[0].status == "failed" and book.counts()["failed"] == 1 and not book.done


@pytest.mark.parametrize("kwargs", [{"redundancy": 0}, {"max_attempts": 0}, {"redundancy": True}, {"key": 5}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        TaskBook([1], **kwargs)


def test_majority_and_vote_keys() -> None:
    assert majority([], 1) == (False, None, 0)
    assert majority([1, 1, 2], 2) == (True, 1, 2)
    assert majority([[1], [1]], 2) == (True, [1], 2)
    assert vote_key({"b": 1, "a": 2}) == vote_key({"a": 2, "b": 1})
    assert majority(["A", "a"], 2, key=str.lower)[0]
