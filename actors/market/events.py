"""Market events and the thread-safe queues that hold them until a client collects them.

The MarketActor puts events; clients (the REST layer, tests, the control channel) wait on
the queues from their own threads, so a long poll never blocks the actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from protocol.errors import NodeError

__all__ = [
    "MarketError",
    "SubscriptionNotFoundError",
    "ProposalNotFoundError",
    "AgreementNotFoundError",
    "InvalidTransitionError",
    "Proposal",
    "ProposalEvent",
    "ProposalRejectedEvent",
    "AgreementEvent",
    "PropertyQueryEvent",
    "AgreementOperationEvent",
    "EventQueue",
    "EventLog",
    "now_ms",
]


class MarketError(NodeError):
    """A market operation that cannot be done."""


class SubscriptionNotFoundError(MarketError):
    """No such offer or demand subscription (or it expired, or was unsubscribed)."""


class ProposalNotFoundError(MarketError):
    """No such proposal in this subscription."""


class AgreementNotFoundError(MarketError):
    """No such agreement on this node."""


class InvalidTransitionError(MarketError):
    """An agreement or proposal operation not allowed in its current state."""


E = TypeVar("E")


def now_ms() -> int:
    """Wall-clock time in milliseconds."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal as a subscriber sees it (Golem's Proposal model)."""

    proposal_id: str
    issuer_id: str
    properties: dict[str, Any]
    constraints: str
    state: str  # Initial, Draft, Rejected, Accepted, Expired
    timestamp_ms: int
    prev_proposal_id: str | None
    demand_id: str
    offer_id: str


@dataclass(frozen=True, slots=True)
class ProposalEvent:
    """A new proposal from the other side arrived for this subscription."""

    event_ms: int
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class ProposalRejectedEvent:
    """The other side rejected one of our proposals."""

    event_ms: int
    proposal_id: str
    reason: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AgreementEvent:
    """(Provider) a requestor asks us to approve an agreement."""

    event_ms: int
    agreement_id: str


@dataclass(frozen=True, slots=True)
class PropertyQueryEvent:
    """A dynamic property query (part of the API; Loam's market never needs to send one)."""

    event_ms: int
    query_id: str
    queried_properties: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgreementOperationEvent:
    """An agreement changed state: Approved, Rejected, Cancelled or Terminated."""

    event_ms: int
    agreement_id: str
    kind: str  # AgreementApprovedEvent, AgreementRejectedEvent, AgreementCancelledEvent, AgreementTerminatedEvent
    terminator: str | None = None  # "Requestor" or "Provider" for terminations
    reason: dict[str, Any] | None = None


class EventQueue:
    """Events of one subscription; `take` waits for at least one, up to a timeout."""

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: deque[Any] = deque(maxlen=max_events)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, event: Any) -> None:
        """Add an event and wake one waiter."""
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        """Unsubscribed: wake waiters, and let every later take fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the subscription ended."""
        return self._closed

    def take(self, max_events: int, timeout_s: float) -> list[Any]:
        """Up to max_events events, waiting up to timeout_s for the first; [] on timeout.

        Raises:
            SubscriptionNotFoundError: the subscription ended (before or while waiting).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while not self._events and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            if self._closed:
                raise SubscriptionNotFoundError("the subscription ended")
            count = min(max_events, len(self._events))
            return [self._events.popleft() for _ in range(count)]


@dataclass(slots=True)
class _Logged:
    seq: int
    event: Any


@dataclass
class EventLog:
    """Events of the node in order (agreement operations; the payment ledger's too), each a frozen
    dataclass with an `event_ms`; readers ask for those after a time, waiting from their own threads."""

    max_events: int = 100_000
    _events: deque[_Logged] = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _seq: itertools.count = field(default_factory=itertools.count)
    _last_ms: int = 0

    def append(self, event: E) -> E:
        """Add an event; its time is made strictly later than the previous one's."""
        with self._cond:
            stamp = max(event.event_ms, self._last_ms + 1)  # type: ignore[attr-defined]
            self._last_ms = stamp
            event = dataclasses.replace(event, event_ms=stamp)  # type: ignore[type-var]
            self._events.append(_Logged(next(self._seq), event))
            while len(self._events) > self.max_events:
                self._events.popleft()
            self._cond.notify_all()
            return event

    def after(
        self, after_ms: int, max_events: int, timeout_s: float, match: Callable[[Any], bool] | None = None
    ) -> list[Any]:
        """Events strictly after after_ms (and that match, if given), waiting up to timeout_s for one."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                found = [
                    e.event for e in self._events if e.event.event_ms > after_ms and (match is None or match(e.event))
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
