"""Payment events (a debit note or invoice received, accepted, rejected, settled…) and the log clients poll."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.market.events import EventLog

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

    The market's EventLog, read by document kind.

    >>> log = PaymentEventLog()
    >>> e = log.append(PaymentEvent(5, "invoice", "i1", "Received", "received"))
    >>> [x.document_id for x in log.after("invoice", 4, 10, 0.0)]
    ['i1']
    """

    def __init__(self, max_events: int = 100_000) -> None:
        self._log = EventLog(max_events=max_events)

    def append(self, event: PaymentEvent) -> PaymentEvent:
        """Add an event; its time is made strictly later than the previous one's."""
        return self._log.append(event)

    def after(self, kind: str | None, after_ms: int, max_events: int, timeout_s: float) -> list[PaymentEvent]:
        """Events of a kind (None: both) strictly after after_ms, waiting up to timeout_s for one."""
        match = None if kind is None else (lambda e: e.kind == kind)
        return self._log.after(after_ms, max_events, timeout_s, match)

    @property
    def last_ms(self) -> int:
        """Time of the newest event (0 if none)."""
        return self._log.last_ms
