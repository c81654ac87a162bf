"""Event queues of subscriptions and the node's agreement event log: waiting, order and limits.

A few tests use a second thread, because waking a waiter from another thread is the point.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from actors.market.events import AgreementOperationEvent, EventLog, EventQueue, SubscriptionNotFoundError

# Long enough that a passing test never reaches it; a hang shows up as a slow failure, not a stuck run.
PATIENCE_S = 10.0


@contextmanager
def after_delay(action: Callable[[], Any], delay_s: float = 0.05) -> Iterator[None]:
    """Run action from another thread after delay_s; join it on exit."""
    timer = threading.Timer(delay_s, action)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join(PATIENCE_S)


def op(event_ms: int, agreement_id: str = "ag-1", kind: str = "AgreementApprovedEvent") -> AgreementOperationEvent:
    return AgreementOperationEvent(event_ms, agreement_id, kind)


# ---- EventQueue -------------------------------------------------------------------------------


def test_take_times_out_with_nothing() -> None:
    queue = EventQueue()
    started = time.monotonic()
    assert queue.take(10, 0.05) == []
    assert time.monotonic() - started >= 0.04


@pytest.mark.parametrize("timeout_s", [0.0, -1.0])
def test_take_without_a_timeout_does_not_wait(timeout_s: float) -> None:
    queue = EventQueue()
    assert queue.take(10, timeout_s) == []
    queue.put("e1")
    assert queue.take(10, timeout_s) == ["e1"]


def test_take_returns_events_oldest_first_and_removes_them() -> None:
    queue = EventQueue()
    for i in range(3):
        queue.put(i)
    assert queue.take(10, 0) == [0, 1, 2]
    assert queue.take(10, 0) == []


def test_take_returns_at_most_max_events() -> None:
    queue = EventQueue()
    for i in range(5):
        queue.put(i)
    assert queue.take(2, 0) == [0, 1]
    assert queue.take(2, 0) == [2, 3]
    assert queue.take(2, 0) == [4]


def test_a_full_queue_keeps_the_newest_events() -> None:
    queue = EventQueue(max_events=3)
    for i in range(5):
        queue.put(i)
    assert queue.take(10, 0) == [2, 3, 4]


def test_take_returns_promptly_when_another_thread_puts_an_event() -> None:
    queue = EventQueue()
    started = time.monotonic()
    with after_delay(lambda: queue.put("proposal")):
        assert queue.take(10, PATIENCE_S) == ["proposal"]
    assert time.monotonic() - started < PATIENCE_S / 2


def test_take_after_close_raises() -> None:
    queue = EventQueue()
    queue.put("e1")
    assert not queue.closed
    queue.close()
    assert queue.closed
    for timeout_s in (0.0, 0.01):
        with pytest.raises(SubscriptionNotFoundError):
            queue.take(10, timeout_s)


def test_close_wakes_a_waiter_blocked_in_take() -> None:
    queue = EventQueue()
    outcome: list[Any] = []

    def wait() -> None:
        try:
            outcome.append(queue.take(10, PATIENCE_S))
        except SubscriptionNotFoundError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.05)  # let it block (if it has not, take() must raise all the same)
    queue.close()
    waiter.join(PATIENCE_S)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SubscriptionNotFoundError)
    assert time.monotonic() - started < PATIENCE_S / 2


def test_every_waiter_is_woken_by_close() -> None:
    queue = EventQueue()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wait() -> None:
        try:
            queue.take(10, PATIENCE_S)
        except SubscriptionNotFoundError as exc:
            with lock:
                errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for w in waiters:
        w.start()
    time.sleep(0.05)
    queue.close()
    for w in waiters:
        w.join(PATIENCE_S)
    assert len(errors) == 3


# ---- EventLog ---------------------------------------------------------------------------------


def test_after_is_strictly_after() -> None:
    log = EventLog()
    for ms in (10, 20, 30):
        log.append(op(ms))
    assert [e.event_ms for e in log.after(0, 10, 0)] == [10, 20, 30]
    assert [e.event_ms for e in log.after(10, 10, 0)] == [20, 30]
    assert [e.event_ms for e in log.after(19, 10, 0)] == [20, 30]
    assert [e.event_ms for e in log.after(20, 10, 0)] == [30]
    assert log.after(30, 10, 0) == []


def test_times_are_strictly_increasing_even_for_equal_or_earlier_event_times() -> None:
    log = EventLog()
    stamped = [log.append(op(100, f"ag-{i}")) for i in range(3)]
    stamped.append(log.append(op(50, "ag-late")))
    stamped.append(log.append(op(500, "ag-next")))
    assert [e.event_ms for e in stamped] == [100, 101, 102, 103, 500]
    assert log.last_ms == 500
    # the rest of each event is kept
    assert [e.agreement_id for e in stamped] == ["ag-0", "ag-1", "ag-2", "ag-late", "ag-next"]
    # a reader that saw an event never misses the one logged in the same millisecond
    first = log.after(0, 1, 0)
    assert [e.agreement_id for e in log.after(first[-1].event_ms, 1, 0)] == ["ag-1"]


def test_append_keeps_terminator_and_reason() -> None:
    log = EventLog()
    event = AgreementOperationEvent(7, "ag-1", "AgreementTerminatedEvent", "Provider", {"message": "bye"})
    assert log.append(event) == event
    assert log.after(0, 10, 0) == [event]


def test_last_ms_of_an_empty_log_is_zero() -> None:
    assert EventLog().last_ms == 0


def test_after_returns_at_most_max_events_oldest_first() -> None:
    log = EventLog()
    for ms in range(1, 6):
        log.append(op(ms))
    assert [e.event_ms for e in log.after(0, 2, 0)] == [1, 2]
    assert [e.event_ms for e in log.after(2, 2, 0)] == [3, 4]


def test_a_full_log_drops_the_oldest_events() -> None:
    log = EventLog(max_events=3)
    for ms in range(1, 6):
        log.append(op(ms))
    assert [e.event_ms for e in log.after(0, 10, 0)] == [3, 4, 5]
    assert log.last_ms == 5


def test_after_times_out_with_nothing_new() -> None:
    log = EventLog()
    log.append(op(10))
    started = time.monotonic()
    assert log.after(10, 10, 0.05) == []
    assert time.monotonic() - started >= 0.04


def test_after_waits_for_a_new_event_from_another_thread() -> None:
    log = EventLog()
    log.append(op(10, "ag-old"))
    started = time.monotonic()
    with after_delay(lambda: log.append(op(5, "ag-new"))):
        found = log.after(log.last_ms, 10, PATIENCE_S)
    assert [(e.agreement_id, e.event_ms) for e in found] == [("ag-new", 11)]
    assert time.monotonic() - started < PATIENCE_S / 2
