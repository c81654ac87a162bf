"""What the ledger actor tracks beside the documents: agreements' payment terms, activities' usage, payments handed to the driver."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.payment import wei, wei_str

if TYPE_CHECKING:
    import sqlite3

__all__ = ["AgreementTerms", "TrackedAgreement", "TrackedActivity", "ScheduledPayment", "TrackingStore"]


@dataclass(frozen=True, slots=True)
class AgreementTerms:
    """The payment part of an agreement, read once from its properties."""

    coeffs: tuple[float, ...]  # one per usage counter, then the start fee
    usage_vector: tuple[str, ...]
    debit_note_interval_s: float
    accept_timeout_s: float | None  # None: not negotiated, debit notes need no acceptance in time
    payment_timeout_s: float | None  # None: no mid-agreement payments
    threads: int = 1  # the provider's threads (cpu seconds run this much faster than the clock)

    def to_json(self) -> str:
        """The terms as stored."""
        return json.dumps(
            {
                "coeffs": list(self.coeffs), "usage_vector": list(self.usage_vector),
                "debit_note_interval_s": self.debit_note_interval_s, "accept_timeout_s": self.accept_timeout_s,
                "payment_timeout_s": self.payment_timeout_s, "threads": self.threads,
            }
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> AgreementTerms:
        """Stored terms back."""
        d: dict[str, Any] = json.loads(text)
        return cls(
            tuple(d["coeffs"]), tuple(d["usage_vector"]), d["debit_note_interval_s"], d["accept_timeout_s"],
            d["payment_timeout_s"], int(d.get("threads", 1)),
        )


@dataclass(frozen=True, slots=True)
class TrackedAgreement:
    """An agreement the ledger settles: who pays whom, where, on what terms."""

    agreement_id: str
    role: str  # "provider" or "requestor"
    peer_id: str
    platform: str
    payee_address: str
    payer_address: str
    terms: AgreementTerms
    allocation_id: str | None
    auto_accept: bool
    state: str  # "open", "ended" (the agreement is over), "invoiced" (provider: its invoice is issued; requestor: closed, all paid)
    ended_ms: int | None
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class TrackedActivity:
    """A provider's activity: its usage and amount so far, and its last debit note."""

    activity_id: str
    agreement_id: str
    usage: tuple[float, ...]
    amount_wei: int
    ended: bool
    last_note_id: str
    last_note_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class ScheduledPayment:
    """A payment the requestor decided to make and handed to the driver (recorded first)."""

    payment_id: str
    agreement_id: str
    payee_id: str
    payee_address: str
    platform: str
    amount_wei: int
    document_ids: tuple[str, ...]
    status: str  # "scheduled", "confirmed" or "failed"
    tx_hash: str | None
    created_ms: int
    updated_ms: int


_AGREEMENT_COLS = (
    "agreement_id, role, peer_id, platform, payee_address, payer_address, terms, allocation_id, auto_accept, "
    "state, ended_ms, created_ms, updated_ms"
)
_ACTIVITY_COLS = "activity_id, agreement_id, usage, amount_wei, ended, last_note_id, last_note_ms, updated_ms"
_SCHEDULED_COLS = (
    "payment_id, agreement_id, payee_id, payee_address, platform, amount_wei, document_ids, status, tx_hash, "
    "created_ms, updated_ms"
)


def _agreement(r: tuple) -> TrackedAgreement:
    return TrackedAgreement(
        r[0], r[1], r[2], r[3], r[4], r[5], AgreementTerms.from_json(r[6]), r[7], bool(r[8]), r[9], r[10], r[11], r[12]
    )


def _activity(r: tuple) -> TrackedActivity:
    return TrackedActivity(r[0], r[1], tuple(json.loads(r[2])), wei(r[3]), bool(r[4]), r[5], r[6], r[7])


def _scheduled(r: tuple) -> ScheduledPayment:
    return ScheduledPayment(r[0], r[1], r[2], r[3], r[4], wei(r[5]), tuple(json.loads(r[6])), r[7], r[8], r[9], r[10])


class TrackingStore:
    """Reads and writes the payment_tracking tables (one connection, used by the ledger actor)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # -- agreements ----------------------------------------------------------------------

    def add_agreement(self, a: TrackedAgreement) -> bool:
        """Start tracking an agreement; False if it is tracked already (nothing changes)."""
        with self._conn:
            cur = self._conn.execute(
                f"INSERT INTO payment_agreements ({_AGREEMENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agreement_id, role) DO NOTHING",
                (
                    a.agreement_id, a.role, a.peer_id, a.platform, a.payee_address, a.payer_address, a.terms.to_json(),
                    a.allocation_id, int(a.auto_accept), a.state, a.ended_ms, a.created_ms, a.updated_ms,
                ),
            )
        return cur.rowcount > 0

    def update_agreement(self, a: TrackedAgreement) -> None:
        """Save the mutable parts: allocation, automatic acceptance, state."""
        with self._conn:
            self._conn.execute(
                "UPDATE payment_agreements SET allocation_id = ?, auto_accept = ?, state = ?, ended_ms = ?, updated_ms = ? "
                "WHERE agreement_id = ? AND role = ?",
                (a.allocation_id, int(a.auto_accept), a.state, a.ended_ms, a.updated_ms, a.agreement_id, a.role),
            )

    def agreement(self, agreement_id: str, role: str) -> TrackedAgreement | None:
        """One tracked agreement, or None."""
        row = self._conn.execute(
            f"SELECT {_AGREEMENT_COLS} FROM payment_agreements WHERE agreement_id = ? AND role = ?", (agreement_id, role)
        ).fetchone()
        return _agreement(row) if row else None

    def agreements(self, role: str, states: tuple[str, ...]) -> list[TrackedAgreement]:
        """Tracked agreements of a role in some states, oldest first."""
        marks = ", ".join("?" * len(states))
        rows = self._conn.execute(
            f"SELECT {_AGREEMENT_COLS} FROM payment_agreements WHERE role = ? AND state IN ({marks}) ORDER BY created_ms",
            (role, *states),
        ).fetchall()
        return [_agreement(r) for r in rows]

    # -- activities (provider) -----------------------------------------------------------

    def save_activity(self, a: TrackedActivity) -> None:
        """Insert or update an activity's usage and note timing."""
        with self._conn:
            self._conn.execute(
                f"INSERT INTO payment_activities ({_ACTIVITY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (activity_id) DO UPDATE SET usage = excluded.usage, amount_wei = excluded.amount_wei, "
                "ended = excluded.ended, last_note_id = excluded.last_note_id, last_note_ms = excluded.last_note_ms, "
                "updated_ms = excluded.updated_ms",
                (
                    a.activity_id, a.agreement_id, json.dumps(list(a.usage)), wei_str(a.amount_wei), int(a.ended),
                    a.last_note_id, a.last_note_ms, a.updated_ms,
                ),
            )

    def activity(self, activity_id: str) -> TrackedActivity | None:
        """One activity, or None."""
        row = self._conn.execute(
            f"SELECT {_ACTIVITY_COLS} FROM payment_activities WHERE activity_id = ?", (activity_id,)
        ).fetchone()
        return _activity(row) if row else None

    def activities(self, agreement_id: str | None = None, *, running: bool = False) -> list[TrackedActivity]:
        """Activities of an agreement (or all), only those still running if asked."""
        where, args = [], []
        if agreement_id is not None:
            where.append("agreement_id = ?")
            args.append(agreement_id)
        if running:
            where.append("ended = 0")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._conn.execute(
            f"SELECT {_ACTIVITY_COLS} FROM payment_activities {clause} ORDER BY rowid", tuple(args)
        ).fetchall()
        return [_activity(r) for r in rows]

    # -- usage seen of our activities (requestor) ---------------------------------------------

    def save_usage_seen(self, activity_id: str, agreement_id: str, usage: tuple[float, ...], usage_ms: int, state: str) -> None:
        """Keep the latest usage reported for one of our activities (older reports change nothing)."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO usage_seen (activity_id, agreement_id, usage, usage_ms, state) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (activity_id) DO UPDATE SET usage = excluded.usage, usage_ms = excluded.usage_ms, "
                "state = excluded.state WHERE excluded.usage_ms >= usage_seen.usage_ms",
                (activity_id, agreement_id, json.dumps(list(usage)), usage_ms, state),
            )

    def usage_seen(self, activity_id: str) -> tuple[str, tuple[float, ...], int, str] | None:
        """(agreement id, usage, usage_ms, state) last reported for an activity of ours, or None."""
        row = self._conn.execute(
            "SELECT agreement_id, usage, usage_ms, state FROM usage_seen WHERE activity_id = ?", (activity_id,)
        ).fetchone()
        return (row[0], tuple(json.loads(row[1])), row[2], row[3]) if row else None

    # -- payments handed to the driver (requestor) ------------------------------------------

    def add_scheduled(self, p: ScheduledPayment) -> bool:
        """Record a payment before it goes to the driver; False if the id is known (idempotent)."""
        with self._conn:
            cur = self._conn.execute(
                f"INSERT INTO scheduled_payments ({_SCHEDULED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (payment_id) DO NOTHING",
                (
                    p.payment_id, p.agreement_id, p.payee_id, p.payee_address, p.platform, wei_str(p.amount_wei),
                    json.dumps(list(p.document_ids)), p.status, p.tx_hash, p.created_ms, p.updated_ms,
                ),
            )
        return cur.rowcount > 0

    def set_scheduled_status(self, payment_id: str, status: str, tx_hash: str | None, now_ms: int) -> bool:
        """Move a scheduled payment to confirmed or failed; False if it was there already."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE scheduled_payments SET status = ?, tx_hash = ?, updated_ms = ? "
                "WHERE payment_id = ? AND status = 'scheduled'",
                (status, tx_hash, now_ms, payment_id),
            )
        return cur.rowcount > 0

    def scheduled(self, payment_id: str) -> ScheduledPayment | None:
        """One scheduled payment, or None."""
        row = self._conn.execute(
            f"SELECT {_SCHEDULED_COLS} FROM scheduled_payments WHERE payment_id = ?", (payment_id,)
        ).fetchone()
        return _scheduled(row) if row else None

    def scheduled_payments(self, *, agreement_id: str | None = None, status: str | None = None) -> list[ScheduledPayment]:
        """Scheduled payments of an agreement and/or in a status, oldest first."""
        where, args = [], []
        if agreement_id is not None:
            where.append("agreement_id = ?")
            args.append(agreement_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._conn.execute(
            f"SELECT {_SCHEDULED_COLS} FROM scheduled_payments {clause} ORDER BY created_ms, rowid", tuple(args)
        ).fetchall()
        return [_scheduled(r) for r in rows]
