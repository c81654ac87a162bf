"""What a requestor knows of one activity, kept current by the provider's updates; clients wait on it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from protocol.activity import ActivityRuntimeEvent, ActivityUpdate, ExeResult

__all__ = ["ActivityView", "BatchView"]


@dataclass
class BatchView:
    """The results and streamed events of one batch."""

    results: list[ExeResult] = field(default_factory=list)
    events: list[ActivityRuntimeEvent] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once the last result of the batch is in."""
        return bool(self.results) and self.results[-1].is_batch_finished


class ActivityView:
    """Thread-safe mirror of an activity on the requestor's node."""

    def __init__(self, activity_id: str, agreement_id: str, provider_id: str) -> None:
        self.activity_id = activity_id
        self.agreement_id = agreement_id
        self.provider_id = provider_id
        self.state = "New"
        self.reason = ""
        self.error = ""
        self.usage: tuple[float, ...] = ()
        self.usage_ms = 0
        self.updated_ms = int(time.time() * 1000)
        self.heard_ms = self.updated_ms  # when the provider last sent an update (or the view was made)
        self.batches: dict[str, BatchView] = {}
        self._cond = threading.Condition()

    def apply(self, update: ActivityUpdate) -> None:
        """Take in the provider's update (results are cumulative; never go backwards)."""
        with self._cond:
            if self.state != "Terminated" or update.state == "Terminated":
                self.state = update.state
            self.reason, self.error = update.reason, update.error
            if update.usage_ms >= self.usage_ms:
                self.usage, self.usage_ms = update.usage, update.usage_ms
            if update.batch_id:
                batch = self.batches.setdefault(update.batch_id, BatchView())
                if len(update.results) >= len(batch.results):
                    batch.results = list(update.results)
            self.updated_ms = self.heard_ms = int(time.time() * 1000)
            self._cond.notify_all()

    def add_event(self, event: ActivityRuntimeEvent) -> None:
        """Keep a streamed event of a batch."""
        with self._cond:
            self.batches.setdefault(event.batch_id, BatchView()).events.append(event)
            self._cond.notify_all()

    def add_batch(self, batch_id: str) -> None:
        """Note a batch we sent."""
        with self._cond:
            self.batches.setdefault(batch_id, BatchView())

    def mark_unresponsive(self, error: str) -> None:
        """The provider has gone quiet: nothing heard for too long (an update later revives the view)."""
        with self._cond:
            if self.state not in ("Terminated", "Unresponsive"):
                self.state, self.error = "Unresponsive", error
                self._cond.notify_all()

    def terminate_locally(self, reason: str) -> None:
        """Mark the activity ended on our side (the provider may be gone)."""
        with self._cond:
            self.state, self.reason = "Terminated", reason
            self._cond.notify_all()

    def wait(self, done: Callable[[ActivityView], bool], timeout_s: float) -> bool:
        """Block until done(self) or the timeout; its last value."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not done(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def results(self, batch_id: str) -> list[ExeResult]:
        """The batch's results so far (cumulative)."""
        with self._cond:
            batch = self.batches.get(batch_id)
            return list(batch.results) if batch else []

    def events(self, batch_id: str, after: int = 0) -> list[ActivityRuntimeEvent]:
        """The batch's streamed events from position after."""
        with self._cond:
            batch = self.batches.get(batch_id)
            return list(batch.events[after:]) if batch else []

    def batch_finished(self, batch_id: str) -> bool:
        """True when the batch has its last result (or the activity ended)."""
        batch = self.batches.get(batch_id)
        return (batch is not None and batch.finished) or self.state in ("Terminated", "Unresponsive")
