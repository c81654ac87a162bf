"""Agreements in SQLite, with their signatures, and the states they may move between."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from actors.market.events import AgreementOperationEvent, InvalidTransitionError
from protocol.codec import decode, encode
from protocol.market import AgreementTerms

__all__ = ["AgreementRecord", "AgreementStore", "TRANSITIONS", "FINAL_STATES", "check_transition"]

# Golem's agreement states and the moves between them.
TRANSITIONS: dict[str, frozenset[str]] = {
    "Proposal": frozenset({"Pending", "Cancelled", "Expired"}),
    "Pending": frozenset({"Approved", "Rejected", "Cancelled", "Expired"}),
    "Approved": frozenset({"Terminated"}),
    "Cancelled": frozenset(),
    "Rejected": frozenset(),
    "Expired": frozenset(),
    "Terminated": frozenset(),
}
FINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def check_transition(agreement_id: str, current: str, new: str) -> None:
    """Raises InvalidTransitionError unless an agreement may go from current to new."""
    if new not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransitionError(f"agreement {agreement_id} is {current} and cannot become {new}")


@dataclass(frozen=True, slots=True)
class AgreementRecord:
    """One agreement as this node keeps it."""

    terms: AgreementTerms
    role: str  # "requestor" or "provider"
    state: str
    requestor_signature: bytes | None = None
    provider_signature: bytes | None = None
    approved_ms: int | None = None
    terminator: str | None = None  # node id of the side that ended it
    reason: dict[str, Any] | None = None
    end_signature: bytes | None = None
    end_ms: int | None = None
    unacked: str = ""  # TYPE of our last message the other side has not acknowledged
    updated_ms: int = 0

    @property
    def agreement_id(self) -> str:
        """The agreement id."""
        return self.terms.agreement_id

    @property
    def peer(self) -> str:
        """Node id of the other side."""
        return self.terms.provider_id if self.role == "requestor" else self.terms.requestor_id

    def moved(self, state: str, now_ms: int, **changes: Any) -> AgreementRecord:
        """This record in a new state.

        Raises:
            InvalidTransitionError: the move is not allowed.
        """
        check_transition(self.agreement_id, self.state, state)
        return dataclasses.replace(self, state=state, updated_ms=now_ms, **changes)


class AgreementStore:
    """Reads and writes agreement records and the node's agreement events."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def save(self, rec: AgreementRecord) -> None:
        """Insert or update a record."""
        with self._conn:
            self._conn.execute(
                """
                INSERT INTO agreements (agreement_id, role, state, terms, requestor_signature, provider_signature,
                    approved_ms, terminator, reason, end_signature, end_ms, unacked, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (agreement_id) DO UPDATE SET
                    terms = excluded.terms, state = excluded.state, requestor_signature = excluded.requestor_signature,
                    provider_signature = excluded.provider_signature, approved_ms = excluded.approved_ms,
                    terminator = excluded.terminator, reason = excluded.reason,
                    end_signature = excluded.end_signature, end_ms = excluded.end_ms,
                    unacked = excluded.unacked, updated_ms = excluded.updated_ms
                """,
                (
                    rec.agreement_id, rec.role, rec.state, encode(rec.terms), rec.requestor_signature,
                    rec.provider_signature, rec.approved_ms, rec.terminator,
                    json.dumps(rec.reason) if rec.reason is not None else None,
                    rec.end_signature, rec.end_ms, rec.unacked, rec.updated_ms,
                ),
            )

    def load_all(self) -> list[AgreementRecord]:
        """Every agreement this node keeps."""
        rows = self._conn.execute(
            """
            SELECT terms, role, state, requestor_signature, provider_signature, approved_ms, terminator,
                   reason, end_signature, end_ms, unacked, updated_ms
            FROM agreements
            """
        ).fetchall()
        return [
            AgreementRecord(
                terms=decode(row[0], AgreementTerms), role=row[1], state=row[2], requestor_signature=row[3],
                provider_signature=row[4], approved_ms=row[5], terminator=row[6],
                reason=json.loads(row[7]) if row[7] is not None else None, end_signature=row[8], end_ms=row[9],
                unacked=row[10], updated_ms=row[11],
            )
            for row in rows
        ]

    def add_event(self, event: AgreementOperationEvent) -> None:
        """Keep an agreement event (they are served again after a restart)."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO agreement_events (event_ms, agreement_id, kind, terminator, reason) VALUES (?, ?, ?, ?, ?)",
                (
                    event.event_ms, event.agreement_id, event.kind, event.terminator,
                    json.dumps(event.reason) if event.reason is not None else None,
                ),
            )

    def events(self, limit: int = 100_000) -> list[AgreementOperationEvent]:
        """The newest agreement events, oldest first."""
        rows = self._conn.execute(
            "SELECT event_ms, agreement_id, kind, terminator, reason FROM agreement_events ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            AgreementOperationEvent(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] is not None else None)
            for r in reversed(rows)
        ]
