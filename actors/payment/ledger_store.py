"""Allocations, debit notes, invoices and payments in SQLite, with the signed documents, on both sides."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from actors.payment.ledger import AgreementAccount, Allocation, check_status_move
from protocol.codec import decode, encode
from protocol.payment import (
    DEBIT_NOTE,
    INVOICE,
    DebitNote,
    DocumentAccepted,
    DocumentRejected,
    Invoice,
    PaymentSent,
    wei,
    wei_str,
)

if TYPE_CHECKING:
    import sqlite3

__all__ = ["Document", "Reply", "DocumentRecord", "PaymentRecord", "StatusTotal", "LedgerStore", "ACCEPTED_STATUSES"]

Document = Union[DebitNote, Invoice]
Reply = Union[DocumentAccepted, DocumentRejected]

# Statuses in which a document's amount counts as agreed by the requestor.
ACCEPTED_STATUSES = frozenset({"Accepted", "Settled", "Failed"})

_TABLES = {DEBIT_NOTE: ("debit_notes", "debit_note_id"), INVOICE: ("invoices", "invoice_id")}
_DOC_COLUMNS = (
    "role, status, document, accepted_wei, allocation_id, reply, unacked, updated_ms"
)


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A debit note or invoice as this node keeps it: the signed document and where it stands.

    role is "issued" (we are the provider) or "received" (we are the requestor).
    """

    document: DebitNote | Invoice
    role: str
    status: str
    accepted_wei: int | None = None
    allocation_id: str | None = None
    reply: DocumentAccepted | DocumentRejected | None = None
    unacked: str = ""  # TYPE of our last message about it the peer has not acknowledged
    updated_ms: int = 0

    @property
    def kind(self) -> str:
        """"debit_note" or "invoice"."""
        return DEBIT_NOTE if isinstance(self.document, DebitNote) else INVOICE

    @property
    def document_id(self) -> str:
        """The debit note or invoice id."""
        doc = self.document
        return doc.debit_note_id if isinstance(doc, DebitNote) else doc.invoice_id

    @property
    def agreement_id(self) -> str:
        """The agreement the document is for."""
        return self.document.agreement_id

    @property
    def amount_wei(self) -> int:
        """The amount the document asks (cumulative for a debit note)."""
        doc = self.document
        return wei(doc.total_amount_due_wei if isinstance(doc, DebitNote) else doc.amount_wei)

    @property
    def peer_id(self) -> str:
        """Node id of the other side."""
        return self.document.recipient_id if self.role == "issued" else self.document.issuer_id

    def moved(self, status: str, now_ms: int, **changes: object) -> DocumentRecord:
        """This record in a new status; the same status again (a duplicate) returns it unchanged.

        Raises:
            InvalidPaymentTransitionError: the move is not allowed.
        """
        if not check_status_move(self.document_id, self.status, status):
            return self
        return dataclasses.replace(self, status=status, updated_ms=now_ms, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment made or received, as announced by the payer's signed PaymentSent."""

    payment: PaymentSent
    role: str  # "made" or "received"
    created_ms: int
    unacked: str = ""


@dataclass(frozen=True, slots=True)
class StatusTotal:
    """How many documents of a kind are in a status on a platform, and for how much."""

    kind: str
    platform: str
    status: str
    count: int
    amount_wei: int


def _opt_wei(value: int | None) -> str | None:
    return None if value is None else wei_str(value)


class LedgerStore:
    """Reads and writes the payment ledger (one connection, used by one actor at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # -- allocations -------------------------------------------------------------------

    def save_allocation(self, a: Allocation) -> None:
        """Insert or update an allocation."""
        with self._conn:
            self._conn.execute(
                """
                INSERT INTO allocations (allocation_id, address, platform, total_wei, spent_wei, reserved_wei,
                    timeout_ms, make_deposit, state, created_ms, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (allocation_id) DO UPDATE SET
                    address = excluded.address, platform = excluded.platform, total_wei = excluded.total_wei,
                    spent_wei = excluded.spent_wei, reserved_wei = excluded.reserved_wei,
                    timeout_ms = excluded.timeout_ms, make_deposit = excluded.make_deposit,
                    state = excluded.state, updated_ms = excluded.updated_ms
                """,
                (
                    a.allocation_id, a.address, a.platform, wei_str(a.total_wei), wei_str(a.spent_wei),
                    wei_str(a.reserved_wei), a.timeout_ms, int(a.make_deposit), a.state, a.created_ms, a.updated_ms,
                ),
            )

    def allocation(self, allocation_id: str) -> Allocation | None:
        """One allocation, or None."""
        rows = self._allocations("WHERE allocation_id = ?", (allocation_id,))
        return rows[0] if rows else None

    def allocations(self, state: str | None = None) -> list[Allocation]:
        """Every allocation (in a state, if given), oldest first."""
        if state is None:
            return self._allocations("", ())
        return self._allocations("WHERE state = ?", (state,))

    def _allocations(self, where: str, args: tuple[object, ...]) -> list[Allocation]:
        rows = self._conn.execute(
            "SELECT allocation_id, address, platform, total_wei, spent_wei, reserved_wei, timeout_ms, make_deposit, "
            f"state, created_ms, updated_ms FROM allocations {where} ORDER BY created_ms, allocation_id",
            args,
        ).fetchall()
        return [
            Allocation(r[0], r[1], r[2], wei(r[3]), wei(r[4]), wei(r[5]), r[6], bool(r[7]), r[8], r[9], r[10])
            for r in rows
        ]

    # -- debit notes and invoices ------------------------------------------------------

    def add_document(self, rec: DocumentRecord) -> bool:
        """Keep a new document; False (and nothing changed) if it is already kept: duplicates are idempotent."""
        return self._write_document(rec, upsert=False)

    def save_document(self, rec: DocumentRecord) -> None:
        """Insert or update a document record."""
        self._write_document(rec, upsert=True)

    def _write_document(self, rec: DocumentRecord, upsert: bool) -> bool:
        table, id_col = _TABLES[rec.kind]
        doc = rec.document
        if isinstance(doc, DebitNote):
            activity_id, due_ms, issued_ms = doc.activity_id, doc.payment_due_ms, doc.timestamp_ms
        else:
            activity_id, due_ms, issued_ms = "", doc.payment_due_ms, doc.timestamp_ms
        conflict = (
            "DO UPDATE SET status = excluded.status, accepted_wei = excluded.accepted_wei, "
            "allocation_id = excluded.allocation_id, reply = excluded.reply, unacked = excluded.unacked, "
            "updated_ms = excluded.updated_ms"
            if upsert else "DO NOTHING"
        )
        with self._conn:
            cur = self._conn.execute(
                f"""
                INSERT INTO {table} ({id_col}, role, agreement_id, activity_id, peer_id, platform, amount_wei,
                    payment_due_ms, status, document, accepted_wei, allocation_id, reply, unacked, issued_ms, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT ({id_col}, role) {conflict}
                """,
                (
                    rec.document_id, rec.role, rec.agreement_id, activity_id, rec.peer_id, doc.payment_platform,
                    wei_str(rec.amount_wei), due_ms, rec.status, encode(doc), _opt_wei(rec.accepted_wei),
                    rec.allocation_id, encode(rec.reply) if rec.reply is not None else None, rec.unacked,
                    issued_ms, rec.updated_ms,
                ),
            )
        return cur.rowcount > 0

    def document(self, kind: str, document_id: str, role: str) -> DocumentRecord | None:
        """One debit note or invoice, or None."""
        table, id_col = _TABLES[kind]
        rows = self._documents(kind, f"WHERE {id_col} = ? AND role = ?", (document_id, role))
        return rows[0] if rows else None

    def documents(
        self, kind: str, role: str, *, agreement_id: str | None = None, status: str | None = None,
        after_ms: int | None = None,
    ) -> list[DocumentRecord]:
        """Debit notes or invoices of a role, optionally of one agreement, in one status, or updated after a time."""
        where, args = ["role = ?"], [role]
        if agreement_id is not None:
            where.append("agreement_id = ?")
            args.append(agreement_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if after_ms is not None:
            where.append("updated_ms > ?")
            args.append(after_ms)
        return self._documents(kind, "WHERE " + " AND ".join(where), tuple(args))

    def unacked(self, kind: str) -> list[DocumentRecord]:
        """Documents of a kind with a message the peer has not acknowledged yet (to re-send)."""
        return self._documents(kind, "WHERE unacked != ''", ())

    def mark_acked(self, kind: str, document_id: str, role: str, acked: str, now_ms: int) -> bool:
        """Clear the unacked flag if it names the message acknowledged; returns whether it did."""
        table, id_col = _TABLES[kind]
        with self._conn:
            cur = self._conn.execute(
                f"UPDATE {table} SET unacked = '', updated_ms = ? WHERE {id_col} = ? AND role = ? AND unacked = ?",
                (now_ms, document_id, role, acked),
            )
        return cur.rowcount > 0

    def _documents(self, kind: str, where: str, args: tuple[object, ...]) -> list[DocumentRecord]:
        table, _ = _TABLES[kind]
        expect = DebitNote if kind == DEBIT_NOTE else Invoice
        rows = self._conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM {table} {where} ORDER BY issued_ms, rowid", args
        ).fetchall()
        return [
            DocumentRecord(
                document=decode(r[2], expect), role=r[0], status=r[1],
                accepted_wei=wei(r[3]) if r[3] is not None else None, allocation_id=r[4],
                reply=decode(r[5]) if r[5] is not None else None,  # type: ignore[arg-type]
                unacked=r[6], updated_ms=r[7],
            )
            for r in rows
        ]

    # -- payments ----------------------------------------------------------------------

    def add_payment(self, rec: PaymentRecord) -> bool:
        """Keep a payment made or received with its split by agreement; False if already kept (idempotent)."""
        p = rec.payment
        peer = p.payee_id if rec.role == "made" else p.payer_id
        with self._conn:
            cur = self._conn.execute(
                """
                INSERT INTO ledger_payments (payment_id, role, peer_id, platform, amount_wei, tx_hash, document,
                    unacked, created_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (payment_id, role) DO NOTHING
                """,
                (p.payment_id, rec.role, peer, p.platform, p.amount_wei, p.tx_hash, encode(p), rec.unacked, rec.created_ms),
            )
            if cur.rowcount == 0:
                return False
            self._conn.executemany(
                "INSERT INTO ledger_agreement_payments (payment_id, role, agreement_id, amount_wei) VALUES (?, ?, ?, ?)",
                [(p.payment_id, rec.role, agreement_id, amount) for agreement_id, amount in p.agreement_amounts],
            )
        return True

    def payments(
        self, role: str, *, payment_id: str | None = None, tx_hash: str | None = None, unacked: bool = False
    ) -> list[PaymentRecord]:
        """Payments made or received, oldest first; only one id's, one transaction's, or those not acknowledged if asked."""
        where, args = ["role = ?"], [role]
        if payment_id is not None:
            where.append("payment_id = ?")
            args.append(payment_id)
        if tx_hash is not None:
            where.append("lower(tx_hash) = lower(?)")
            args.append(tx_hash)
        if unacked:
            where.append("unacked != ''")
        rows = self._conn.execute(
            "SELECT document, role, created_ms, unacked FROM ledger_payments WHERE "
            + " AND ".join(where) + " ORDER BY created_ms, rowid",
            tuple(args),
        ).fetchall()
        return [PaymentRecord(decode(r[0], PaymentSent), r[1], r[2], r[3]) for r in rows]

    def mark_payment_acked(self, payment_id: str, role: str) -> bool:
        """Clear a payment's unacked flag; returns whether it was set."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE ledger_payments SET unacked = '' WHERE payment_id = ? AND role = ? AND unacked != ''",
                (payment_id, role),
            )
        return cur.rowcount > 0

    def paid_wei(self, agreement_id: str, role: str = "made") -> int:
        """The total paid (made) or received for an agreement."""
        rows = self._conn.execute(
            "SELECT amount_wei FROM ledger_agreement_payments WHERE agreement_id = ? AND role = ?",
            (agreement_id, role),
        ).fetchall()
        return sum(wei(r[0]) for r in rows)

    # -- derived views -----------------------------------------------------------------

    def agreement_account(self, agreement_id: str) -> AgreementAccount:
        """The payer's account of an agreement rebuilt from its accepted documents and payments made."""
        account = AgreementAccount(agreement_id)
        # Debit notes are cumulative per activity: an agreement's total is the sum over its
        # activities of each one's highest accepted total.
        highest: dict[str, int] = {}
        due: dict[str, int] = {}
        for rec in self.documents(DEBIT_NOTE, "received", agreement_id=agreement_id):
            if rec.status in ACCEPTED_STATUSES:
                note = rec.document
                assert isinstance(note, DebitNote)
                accepted = rec.accepted_wei if rec.accepted_wei is not None else rec.amount_wei
                highest[note.activity_id] = max(highest.get(note.activity_id, 0), accepted)
                if note.payment_due_ms is not None:
                    due[note.activity_id] = max(due.get(note.activity_id, 0), accepted)
        if highest:
            account = account.accept_debit_note("", sum(highest.values()), False)
        if due:
            account = account.accept_debit_note("", sum(due.values()), True)
        for rec in self.documents(INVOICE, "received", agreement_id=agreement_id):
            if rec.status in ACCEPTED_STATUSES:
                accepted = rec.accepted_wei if rec.accepted_wei is not None else rec.amount_wei
                account = account.accept_invoice(rec.document_id, accepted)
        return dataclasses.replace(account, paid_wei=self.paid_wei(agreement_id, "made"))

    def status_totals(self, role: str) -> list[StatusTotal]:
        """Documents of a role by kind, platform and status, with their amounts.

        Debit-note totals are cumulative, so for debit notes only the highest total of each
        activity in a status counts (summing every note would count the same work many times).
        """
        totals: list[StatusTotal] = []
        rows = self._conn.execute(
            "SELECT platform, status, amount_wei FROM invoices WHERE role = ?", (role,)
        ).fetchall()
        acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for platform, status, amount in rows:
            acc[(platform, status)][0] += 1
            acc[(platform, status)][1] += wei(amount)
        totals += [StatusTotal(INVOICE, p, s, c, a) for (p, s), (c, a) in sorted(acc.items())]
        rows = self._conn.execute(
            "SELECT platform, status, activity_id, amount_wei FROM debit_notes WHERE role = ?", (role,)
        ).fetchall()
        counts: dict[tuple[str, str], int] = defaultdict(int)
        highest: dict[tuple[str, str, str], int] = {}
        for platform, status, activity_id, amount in rows:
            counts[(platform, status)] += 1
            key = (platform, status, activity_id)
            highest[key] = max(highest.get(key, 0), wei(amount))
        amounts: dict[tuple[str, str], int] = defaultdict(int)
        for (platform, status, _), amount in highest.items():
            amounts[(platform, status)] += amount
        totals += [StatusTotal(DEBIT_NOTE, p, s, c, amounts[(p, s)]) for (p, s), c in sorted(counts.items())]
        return totals
