"""The payment event log clients poll, and GLM amounts as people write them."""

from __future__ import annotations

import threading
import time

import pytest

from actors.payment.api import format_glm, parse_glm
from actors.payment.events import PaymentEvent, PaymentEventLog
from protocol.errors import PaymentError


def test_events_are_strictly_later_than_each_other_and_filtered_by_kind() -> None:
    log = PaymentEventLog()
    a = log.append(PaymentEvent(100, "invoice", "i1", "Received", "received"))
    b = log.append(PaymentEvent(100, "debit_note", "d1", "Received", "received"))
    c = log.append(PaymentEvent(50, "invoice", "i1", "Accepted", "received"))
    assert a.event_ms < b.event_ms < c.event_ms  # same or earlier clock readings still move forward
    assert [e.document_id for e in log.after("invoice", 0, 10, 0.0)] == ["i1", "i1"]
    assert [e.event_type for e in log.after(None, a.event_ms, 10, 0.0)] == ["Received", "Accepted"]
    assert log.after("invoice", c.event_ms, 10, 0.0) == []
    assert len(log.after(None, 0, 2, 0.0)) == 2


def test_a_reader_waits_for_the_next_event_up_to_its_timeout() -> None:
    log = PaymentEventLog()
    threading.Timer(0.2, lambda: log.append(PaymentEvent(int(time.time() * 1000), "invoice", "i9", "Settled", "issued"))).start()
    t0 = time.monotonic()
    got = log.after("invoice", 0, 10, 5.0)
    assert [e.document_id for e in got] == ["i9"] and time.monotonic() - t0 < 4.0
    t0 = time.monotonic()
    assert log.after("debit_note", 0, 10, 0.3) == [] and time.monotonic() - t0 >= 0.29


def test_old_events_are_dropped_beyond_the_cap() -> None:
    log = PaymentEventLog(max_events=3)
    for i in range(5):
        log.append(PaymentEvent(i + 1, "invoice", f"i{i}", "Received", "received"))
    assert [e.document_id for e in log.after(None, 0, 10, 0.0)] == ["i2", "i3", "i4"]


@pytest.mark.parametrize(
    ("text", "wei"),
    [("1", 10**18), ("0.5", 5 * 10**17), (2.25, 225 * 10**16), ("0.000000000000000001", 1), ("1000", 10**21)],
)
def test_glm_amounts_are_exact_wei(text: object, wei: int) -> None:
    assert parse_glm(text) == wei
    assert parse_glm(format_glm(wei)) == wei


@pytest.mark.parametrize("bad", ["0", "-1", "1e-19", "0.0000000000000000001", "abc", "nan", "inf", ""])
def test_bad_glm_amounts_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(PaymentError, match="GLM"):
        parse_glm(bad)


def test_formatting_drops_trailing_zeros_only() -> None:
    assert [format_glm(w) for w in (0, 10**18, 15 * 10**17, 10**19, 1)] == ["0", "1", "1.5", "10", "0.000000000000000001"]
