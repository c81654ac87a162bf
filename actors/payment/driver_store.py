"""The payment driver's records: payments to make and the signed transactions that make them."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Literal

from protocol.errors import PaymentConflictError, StorageError

__all__ = [
    "LIVE_TX_STATUSES",
    "PaymentConflictError",
    "PaymentRow",
    "DriverStore",
    "TxRow",
]

PaymentStatus = Literal["pending", "batched", "confirmed", "failed"]
TxStatus = Literal["signed", "sent", "mined", "confirmed", "failed", "replaced"]
TxKind = Literal["batch", "single"]

# A transaction in one of these may still be mined: its payments must not be paid again.
LIVE_TX_STATUSES: tuple[str, ...] = ("signed", "sent", "mined")


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """One payment as stored."""

    payment_id: str
    platform: str
    payee: str
    amount_wei: int
    status: str
    tx_id: str | None
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class TxRow:
    """One signed transaction as stored; ``raw_tx`` is exactly what goes to the chain."""

    tx_id: str
    platform: str
    sender: str
    nonce: int
    raw_tx: bytes
    tx_hash: str
    kind: str
    status: str
    max_fee_wei: int
    priority_fee_wei: int
    created_ms: int
    sent_ms: int | None = None
    block: int | None = None
    error: str | None = None


_PAYMENT_COLS = "payment_id, platform, payee, amount_wei, status, tx_id, created_ms, updated_ms"
_TX_COLS = (
    "tx_id, platform, sender, nonce, raw_tx, tx_hash, kind, status, max_fee_wei, priority_fee_wei, "
    "created_ms, sent_ms, block, error"
)


def _payment(row: tuple) -> PaymentRow:
    return PaymentRow(row[0], row[1], row[2], int(row[3]), row[4], row[5], row[6], row[7])


def _tx(row: tuple) -> TxRow:
    return TxRow(
        tx_id=row[0], platform=row[1], sender=row[2], nonce=row[3], raw_tx=bytes(row[4]), tx_hash=row[5],
        kind=row[6], status=row[7], max_fee_wei=int(row[8]), priority_fee_wei=int(row[9]),
        created_ms=row[10], sent_ms=row[11], block=row[12], error=row[13],
    )  # fmt: skip


class DriverStore:
    """Payments and transactions in the node's database (tables of the payment_driver migration).

    Every method is one database transaction, so a crash leaves either all of a step or
    none of it.

        store = DriverStore(open_database(db_path(data_dir)))
        store.add_payment("inv-1", "erc20-holesky-tglm", payee, 10**18, now_ms=now)
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    # --- payments ---------------------------------------------------------------------

    def add_payment(self, payment_id: str, platform: str, payee: str, amount_wei: int, *, now_ms: int) -> bool:
        """Stores a new pending payment; returns False if the same payment is already there.

        Raises:
            PaymentConflictError: the id is taken by a payment with another platform, payee or amount.
        """
        with self._lock, self._conn:
            row = self._conn.execute(
                f"SELECT {_PAYMENT_COLS} FROM payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
            if row is not None:
                old = _payment(row)
                if (old.platform, old.payee, old.amount_wei) != (platform, payee, amount_wei):
                    raise PaymentConflictError(
                        f"payment {payment_id} is already scheduled as {old.amount_wei} wei to {old.payee} "
                        f"on {old.platform}, not {amount_wei} wei to {payee} on {platform}"
                    )
                return False
            self._conn.execute(
                f"INSERT INTO payments ({_PAYMENT_COLS}) VALUES (?, ?, ?, ?, 'pending', NULL, ?, ?)",
                (payment_id, platform, payee, str(amount_wei), now_ms, now_ms),
            )
            return True

    def payment(self, payment_id: str) -> PaymentRow | None:
        """One payment, or None if the id is unknown."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_PAYMENT_COLS} FROM payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
        return _payment(row) if row else None

    def pending_payments(self, platform: str, limit: int) -> list[PaymentRow]:
        """Up to ``limit`` pending payments of a platform, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_PAYMENT_COLS} FROM payments WHERE platform = ? AND status = 'pending' "
                "ORDER BY created_ms, payment_id LIMIT ?",
                (platform, int(limit)),
            ).fetchall()
        return [_payment(r) for r in rows]

    def payments_of(self, tx_id: str) -> list[PaymentRow]:
        """The payments a transaction (or the one that replaced it) carries."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_PAYMENT_COLS} FROM payments WHERE tx_id = ? ORDER BY payment_id", (tx_id,)
            ).fetchall()
        return [_payment(r) for r in rows]

    def open_platforms(self) -> list[str]:
        """Platforms with payments not yet final (pending or batched)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT platform FROM payments WHERE status IN ('pending', 'batched') ORDER BY platform"
            ).fetchall()
        return [r[0] for r in rows]

    def settled_since(self, since_ms: int) -> list[tuple[str, str, str | None, int]]:
        """Payments confirmed or failed at or after ``since_ms``: (payment_id, status, tx_hash, updated_ms)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.payment_id, p.status, t.tx_hash, p.updated_ms FROM payments p "
                "LEFT JOIN transactions t ON p.tx_id = t.tx_id "
                "WHERE p.status IN ('confirmed', 'failed') AND p.updated_ms >= ? ORDER BY p.updated_ms",
                (since_ms,),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def totals(self, platform: str) -> dict[str, int]:
        """The sum of amounts by payment status (every status present, 0 when empty)."""
        totals = dict.fromkeys(("pending", "batched", "confirmed", "failed"), 0)
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, amount_wei FROM payments WHERE platform = ?", (platform,)
            ).fetchall()
        # Summed in Python: the amounts are TEXT because they exceed 64 bits.
        for status, amount in rows:
            totals[status] += int(amount)
        return totals

    # --- transactions -----------------------------------------------------------------

    def record_tx(self, tx: TxRow, payment_ids: list[str], *, now_ms: int) -> None:
        """Stores a signed transaction and marks its payments batched, all or nothing.

        Raises:
            StorageError: one of the payments is no longer pending (another transaction has it).
        """
        with self._lock, self._conn:
            self._insert_tx(tx)
            for payment_id in payment_ids:
                n = self._conn.execute(
                    "UPDATE payments SET status = 'batched', tx_id = ?, updated_ms = ? "
                    "WHERE payment_id = ? AND status = 'pending'",
                    (tx.tx_id, now_ms, payment_id),
                ).rowcount
                if n != 1:
                    # Raising rolls the whole step back: the transaction is never recorded.
                    raise StorageError(f"payment {payment_id} is not pending: not recording {tx.tx_hash}")

    def record_replacement(self, tx: TxRow, replaces: TxRow, *, now_ms: int) -> None:
        """Stores a transaction with the same nonce as ``replaces``; its payments follow it."""
        if (tx.sender, tx.nonce) != (replaces.sender, replaces.nonce):
            raise StorageError(f"transaction {tx.tx_hash} does not share the nonce of {replaces.tx_hash}")
        with self._lock, self._conn:
            self._insert_tx(tx)
            self._conn.execute(
                "UPDATE payments SET tx_id = ?, updated_ms = ? WHERE tx_id = ?", (tx.tx_id, now_ms, replaces.tx_id)
            )

    def _insert_tx(self, tx: TxRow) -> None:
        self._conn.execute(
            f"INSERT INTO transactions ({_TX_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tx.tx_id, tx.platform, tx.sender, tx.nonce, tx.raw_tx, tx.tx_hash, tx.kind, tx.status,
                str(tx.max_fee_wei), str(tx.priority_fee_wei), tx.created_ms, tx.sent_ms, tx.block, tx.error,
            ),
        )  # fmt: skip

    def tx(self, tx_id: str) -> TxRow | None:
        """One transaction, or None if the id is unknown."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_TX_COLS} FROM transactions WHERE tx_id = ?", (tx_id,)).fetchone()
        return _tx(row) if row else None

    def txs(self, platform: str, sender: str, statuses: tuple[str, ...] | None = None) -> list[TxRow]:
        """A sender's transactions on a platform (optionally only some statuses), by nonce then age."""
        query = f"SELECT {_TX_COLS} FROM transactions WHERE platform = ? AND sender = ?"
        args: list[object] = [platform, sender]
        if statuses is not None:
            query += f" AND status IN ({', '.join('?' * len(statuses))})"
            args.extend(statuses)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY nonce, created_ms, rowid", args).fetchall()
        return [_tx(r) for r in rows]

    def highest_nonce(self, sender: str) -> int | None:
        """The highest nonce this sender has signed, on any platform of this database."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(nonce) FROM transactions WHERE sender = ?", (sender,)).fetchone()
        return None if row[0] is None else int(row[0])

    def mark_sent(self, tx_id: str, *, now_ms: int) -> None:
        """The chain has the transaction (the first time only: sent_ms is when it left).

        The first send clears a send error; a re-send keeps a note such as "stuck at the fee cap".
        """
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE transactions SET sent_ms = COALESCE(sent_ms, ?), "
                "error = CASE WHEN status = 'signed' THEN NULL ELSE error END, status = 'sent' "
                "WHERE tx_id = ? AND status IN ('signed', 'sent', 'mined')",
                (now_ms, tx_id),
            )

    def set_error(self, tx_id: str, error: str) -> None:
        """Remembers why the last step on a transaction failed; its status stays."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE transactions SET error = ? WHERE tx_id = ?", (error, tx_id))

    def mark_mined(self, winner: TxRow, family: list[TxRow], block: int, *, error: str | None, now_ms: int) -> None:
        """``winner`` is in ``block`` (not yet deep enough); the rest of its nonce family lost."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE transactions SET status = 'mined', block = ?, error = ? WHERE tx_id = ?",
                (block, error, winner.tx_id),
            )
            self._move_payments_to(winner, family, now_ms)

    def mark_confirmed(self, winner: TxRow, family: list[TxRow], block: int, *, now_ms: int) -> None:
        """``winner`` succeeded and is deep enough: it and its payments are final."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE transactions SET status = 'confirmed', block = ?, error = NULL WHERE tx_id = ?",
                (block, winner.tx_id),
            )
            self._move_payments_to(winner, family, now_ms)
            self._conn.execute(
                "UPDATE payments SET status = 'confirmed', updated_ms = ? WHERE tx_id = ?", (now_ms, winner.tx_id)
            )

    def mark_failed(self, failed: TxRow, family: list[TxRow], error: str, *, block: int | None, now_ms: int) -> None:
        """The nonce family can never pay (reverted, or its nonce went elsewhere): its payments are
        pending again, free for a later transaction with another nonce."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE transactions SET status = 'failed', block = ?, error = ? WHERE tx_id = ?",
                (block, error, failed.tx_id),
            )
            self._move_payments_to(failed, family, now_ms)
            self._conn.execute(
                "UPDATE payments SET status = 'pending', tx_id = NULL, updated_ms = ? WHERE tx_id = ?",
                (now_ms, failed.tx_id),
            )

    def unmine(self, tx_id: str) -> None:
        """A reorg took a mined transaction out of the chain: it is pending again."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE transactions SET status = 'sent', block = NULL WHERE tx_id = ? AND status = 'mined'", (tx_id,)
            )

    def _move_payments_to(self, winner: TxRow, family: list[TxRow], now_ms: int) -> None:
        # Whichever member of the family the chain took, the others can no longer be mined
        # (same nonce), and the payments belong to the one that was.
        for other in family:
            if other.tx_id == winner.tx_id:
                continue
            self._conn.execute(
                "UPDATE transactions SET status = 'replaced' WHERE tx_id = ? AND status IN ('signed', 'sent', 'mined')",
                (other.tx_id,),
            )
            self._conn.execute(
                "UPDATE payments SET tx_id = ?, updated_ms = ? WHERE tx_id = ?", (winner.tx_id, now_ms, other.tx_id)
            )
