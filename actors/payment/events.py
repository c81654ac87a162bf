"""Payment events (a debit note or invoice received, accepted, rejected, settled…) and the log clients poll."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["EVENT_TYPES", "ActivityUsage", "UsageSeen", "PaymentEvent", "PaymentEventLog"]

# Golem's event types without the document prefix: DebitNoteReceivedEvent, InvoiceSettledEvent…
EVENT_TYPES = frozenset({"Received", "Accepted", "Rejected", "Cancelled", "Settled", "Failed"})


@dataclass(frozen=True, slots=True)
class ActivityUsage:
    """Activity actor → ledger (provider side): an activity's usage so far; ended once it stopped."""

    activity_id: str
    agreement_id: str
    usage: tuple[float, ...]
    ended: bool


@dataclass(frozen=True, slots=True)
class UsageSeen:
    """Activity actor → ledger (requestor side): the usage a provider reported for one of our activities.

    The ledger keeps it, so a document that arrives after a restart (the views are gone) is
    still checked against what this node saw.
    """

    activity_id: str
    agreement_id: str
    usage: tuple[float, ...]
    usage_ms: int
    state: str


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """Something happened to a debit note or invoice of this node."""

    event_ms: int
    kind: str  # "debit_note" or "invoice"
    document_id: str
    event_type: str  # one of EVENT_TYPES
    role: str  # "issued" (we are the provider) or "received" (we are the requestor)
    reason: dict[str, Any] | None = None  # a rejection: {"rejectionReason", "totalAmountAccepted", "message"}


class PaymentEventLog:
    """The node's payment events in order, strictly increasing in time; readers wait from their own threads.

    >>> log = PaymentEventLog()
    >>> e = log.append(PaymentEvent(5, "invoice", "i1", "Received", "received"))
    >>> [x.document_id for x in log.after("invoice", 4, 10, 0.0)]
    ['i1']
    """

    def __init__(self, max_events: int = 100_000) -> None:
        self._max = max_events
        self._events: deque[PaymentEvent] = deque()
        self._cond = threading.Condition()
        self._last_ms = 0

    def append(self, event: PaymentEvent) -> PaymentEvent:
        """Add an event; its time is made strictly later than the previous one's."""
        with self._cond:
            stamp = max(event.event_ms, self._last_ms + 1)
            self._last_ms = stamp
            event = replace(event, event_ms=stamp)
            self._events.append(event)
            while len(self._events) > self._max:
                self._events.popleft()
            self._cond.notify_all()
            return event

    def after(self, kind: str | None, after_ms: int, max_events: int, timeout_s: float) -> list[PaymentEvent]:
        """Events of a kind (None: both) strictly after after_ms, waiting up to timeout_s for one."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                found = [
                    e for e in self._events if e.event_ms > after_ms and (kind is None or e.kind == kind)
                ][: max(0, max_events)]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self._cond.wait(left)

    @property
    def last_ms(self) -> int:
        """Time of the newest event (0 if none)."""
        with self._cond:
            return self._last_ms
