"""Exactly-once ERC-20 settlement: schedule payments, batch, sign, record, send, reconcile (actor-free)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from eth_account import Account
from eth_utils import is_address, to_checksum_address
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3Exception

from actors.payment import chain as ch
from actors.payment.driver_store import (
    LIVE_TX_STATUSES,
    DriverStore,
    PaymentConflictError,
    TxRow,
)
from protocol.errors import ChainError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "ChainIO",
    "PaymentConflictError",
    "PaymentDriver",
    "bump_fee",
]

# A node accepts a replacement with the same nonce only if both fees rise by at least 10 %
# (geth's default); 12.5 % is what geth and most wallets bump by, with room to spare.
_BUMP_NUM, _BUMP_DEN = 9, 8
_GAS_MARGIN = 1.2
# Members of a nonce family whose receipt may still appear (a reorg can revive a 'replaced').
_RECEIPT_STATUSES = (*LIVE_TX_STATUSES, "replaced")


def bump_fee(fee_wei: int) -> int:
    """The smallest fee a node accepts as a replacement of ``fee_wei``: +12.5 %, rounded up."""
    return -(-fee_wei * _BUMP_NUM // _BUMP_DEN)


class ChainIO:
    """The few chain calls the driver makes, on a Chain. Tests subclass it to hold back or
    delay transactions (a 'stuck' transaction) while the chain underneath stays real."""

    def __init__(self, chain: ch.Chain) -> None:
        self.chain = chain

    def nonce(self, address: str, block: str) -> int:
        """The account's transaction count at ``block`` ('pending' or 'latest')."""
        return self.chain.call(lambda w3: w3.eth.get_transaction_count(address, block), f"nonce of {address}")  # type: ignore[arg-type]

    def estimate_gas(self, tx: dict[str, Any], what: str) -> int:
        """Gas the call needs now.

        Raises:
            ChainError: it would revert (with the reason).
        """
        return int(self.chain.call(lambda w3: w3.eth.estimate_gas(tx), what))  # type: ignore[arg-type]

    def base_fee(self) -> int:
        """The latest block's base fee in wei."""
        return int(self.chain.call(lambda w3: w3.eth.get_block("latest").get("baseFeePerGas") or 0, "base fee"))

    def suggest_fees(self, max_fee_cap_wei: int) -> tuple[int, int]:
        """``(max_fee_wei, priority_fee_wei)`` following the chain, clipped to the cap."""
        return ch.suggest_fees(self.chain, max_fee_cap_wei)

    def send_raw(self, raw_tx: bytes, tx_hash: str) -> None:
        """Sends signed bytes. Sending what the chain already has (pending or mined) is a success.

        Raises:
            ChainError: the node refuses it (nonce used by another transaction, no gas money).
        """

        def send(w3: Web3) -> None:
            try:
                w3.eth.send_raw_transaction(raw_tx)
            except ch._TRANSPORT_ERRORS:
                raise  # the endpoint is down: let Chain.call fail over
            except Exception as exc:  # nodes word "already have it" differently; eth-tester raises its own
                # Already pending or mined (a retry, or a re-send after a crash): that is success.
                if _known(w3, tx_hash):
                    return
                raise ChainError(f"send of {tx_hash} failed: {ch._reason(exc)}") from exc

        self.chain.call(send, f"send {tx_hash}")

    def receipt(self, tx_hash: str) -> ch.TxReceipt | None:
        """The receipt, or None while the transaction is pending or unknown."""
        return ch.receipt(self.chain, tx_hash)


def _known(w3: Web3, tx_hash: str) -> bool:
    try:
        return w3.eth.get_transaction(tx_hash) is not None  # type: ignore[arg-type]
    except (TransactionNotFound, Web3Exception, ValueError):
        return False


class PaymentDriver:
    """Pays scheduled ERC-20 payments exactly once, in batches, from one account on one chain.

    Synchronous and actor-free: the payments actor calls ``cycle()`` on a timer. Exactly once
    rests on two rules. (1) A transaction is recorded (raw bytes, hash, its payments marked
    batched) in one database transaction *before* it is sent, so after a crash the driver
    knows everything that may be on the chain and re-sends the same bytes. (2) Payments get
    a new transaction only when their old one can never be mined: a replacement reuses the
    nonce, so at most one of its family is mined; a failed one is final (reverted and
    confirmed, or its nonce taken).

        driver = PaymentDriver(store, chain, key, token, multi, confirmations=3, max_fee_cap_wei=100 * 10**9)
        driver.schedule("invoice-17", payee, 2 * 10**18)
        driver.cycle()  # every few seconds
    """

    def __init__(
        self,
        store: DriverStore,
        chain: ch.Chain | ChainIO,
        key: str | bytes | LocalAccount,
        token: str,
        multi: str | None,
        *,
        confirmations: int,
        max_fee_cap_wei: int,
        batch_min: int = 2,
        batch_max: int = 100,
        stuck_after_s: float = 60.0,
        gas_cap: int = ch.DEFAULT_GAS_CAP,
        platform: str = "erc20-local-tglm",
        now: Callable[[], float] = time.time,
    ) -> None:
        if confirmations < 0 or max_fee_cap_wei <= 0 or batch_min < 1 or batch_max < batch_min:
            raise ValueError("driver settings out of range: confirmations >= 0, max fee cap > 0, 1 <= batch_min <= batch_max")
        self._store = store
        self._io = chain if isinstance(chain, ChainIO) else ChainIO(chain)
        self._account: LocalAccount = key if hasattr(key, "sign_transaction") else Account.from_key(key)  # type: ignore[assignment]
        self.sender: str = self._account.address
        self._token = to_checksum_address(token)
        self._multi = to_checksum_address(multi) if multi else None
        self._confirmations = confirmations
        self._max_fee_cap_wei = max_fee_cap_wei
        self._batch_min = batch_min
        self._batch_max = batch_max
        self._stuck_after_ms = int(stuck_after_s * 1000)
        self._gas_cap = gas_cap
        self.platform = platform
        self._now = now
        abi = ch.load_artifact
        self._erc20 = Web3().eth.contract(abi=abi("TestGLM")["abi"])
        self._multi_abi = Web3().eth.contract(abi=abi("MultiTransfer")["abi"])
        self._log = structlog.get_logger().bind(actor="payment", part="driver", platform=platform, sender=self.sender)

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    # --- the public operations -------------------------------------------------------

    def schedule(self, payment_id: str, payee: str, amount_wei: int) -> bool:
        """Schedules a payment; returns False if this very payment was scheduled before.

        Raises:
            PaymentConflictError: the id was scheduled with another payee or amount.
            ValueError: a bad payee address or amount.
        """
        if not payment_id:
            raise ValueError("payment id is empty")
        if not isinstance(payee, str) or not is_address(payee):
            raise ValueError(f"payment {payment_id}: payee {payee!r} is not an address")
        if not isinstance(amount_wei, int) or isinstance(amount_wei, bool) or not 0 < amount_wei <= ch.MAX_UINT256:
            raise ValueError(f"payment {payment_id}: amount {amount_wei!r} is not a positive wei amount")
        added = self._store.add_payment(
            payment_id, self.platform, to_checksum_address(payee), amount_wei, now_ms=self._now_ms()
        )
        if added:
            self._log.info("payment_scheduled", payment_id=payment_id, payee=payee, amount_wei=str(amount_wei))
        return added

    def status(self) -> dict[str, int]:
        """Amounts in wei by payment status: pending, batched, confirmed, failed."""
        return self._store.totals(self.platform)

    def cycle(self) -> list[str]:
        """One step of work: reconcile what is on the chain, then batch what is pending.

        Safe to call again at any time, also after a crash. Returns the hashes sent this cycle.

        Raises:
            ChainError: the chain cannot be reached, or a new batch would revert (its payments
                stay pending; what was recorded is re-sent next cycle).
        """
        sent = self.reconcile()
        sent += self.batch()
        return sent

    # --- (a) reconcile ---------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """Brings every live transaction up to date with the chain; returns the hashes (re)sent."""
        families: dict[int, list[TxRow]] = {}
        for tx in self._store.txs(self.platform, self.sender):
            families.setdefault(tx.nonce, []).append(tx)
        sent: list[str] = []
        for nonce in sorted(families):
            family = families[nonce]
            if any(tx.status in LIVE_TX_STATUSES for tx in family):
                sent += self._reconcile_family(nonce, family)
        return sent

    def _reconcile_family(self, nonce: int, family: list[TxRow]) -> list[str]:
        now_ms = self._now_ms()
        # The nonce first, receipts second: a family member mined in between shows up as a
        # receipt, never as "the nonce went to someone else".
        used_nonces = self._io.nonce(self.sender, "latest")
        candidates = [tx for tx in family if tx.status in _RECEIPT_STATUSES]
        for tx in candidates:
            r = self._io.receipt(tx.tx_hash)
            if r is not None:
                self._settle(tx, family, r, now_ms)
                return []
        # Nothing of this family is in the chain (any more).
        for tx in family:
            if tx.status == "mined":
                self._log.warning("tx_reorged_out", tx_hash=tx.tx_hash, nonce=nonce)
                self._store.unmine(tx.tx_id)
        newest = family[-1]
        if used_nonces > nonce:
            error = f"nonce {nonce} of {self.sender} was used by a transaction that is not ours"
            self._log.warning("tx_nonce_taken", tx_hash=newest.tx_hash, nonce=nonce)
            self._store.mark_failed(newest, family, error, block=None, now_ms=now_ms)
            return []
        if newest.status not in LIVE_TX_STATUSES:
            return []
        if newest.status == "signed" or (newest.sent_ms is not None and now_ms - newest.sent_ms >= self._stuck_after_ms):
            replacement = self._replacement(newest, now_ms) if newest.status != "signed" else None
            if replacement is not None:
                return [h for h in [self._send(replacement)] if h]
            # Never sent (a crash between record and send), or old: the same bytes again.
            return [h for h in [self._send(newest)] if h]
        return []

    def _settle(self, tx: TxRow, family: list[TxRow], r: ch.TxReceipt, now_ms: int) -> None:
        deep = r.confirmations >= max(self._confirmations, 1)
        if r.succeeded and deep:
            if tx.status != "confirmed":
                self._store.mark_confirmed(tx, family, r.block_number, now_ms=now_ms)
                self._log.info("tx_confirmed", tx_hash=tx.tx_hash, block=r.block_number, nonce=tx.nonce)
        elif not r.succeeded and deep:
            # Final only when deep: a revert reorged out could come back as a success.
            error = f"transaction {tx.tx_hash} reverted in block {r.block_number}"
            self._store.mark_failed(tx, family, error, block=r.block_number, now_ms=now_ms)
            self._log.warning("tx_reverted", tx_hash=tx.tx_hash, block=r.block_number, nonce=tx.nonce)
        elif tx.status != "mined" or tx.block != r.block_number:
            error = None if r.succeeded else f"reverted in block {r.block_number}, waiting for confirmations"
            self._store.mark_mined(tx, family, r.block_number, error=error, now_ms=now_ms)
            self._log.info("tx_mined", tx_hash=tx.tx_hash, block=r.block_number, succeeded=r.succeeded)

    def _replacement(self, old: TxRow, now_ms: int) -> TxRow | None:
        """A new signed transaction with the old one's nonce and payments and higher fees,
        recorded; or None if the old one is not stuck or the fee cap leaves no room."""
        base_fee = self._io.base_fee()
        if old.max_fee_wei >= base_fee:
            return None  # it can still be mined: just wait (it is re-sent below)
        suggested_max, suggested_tip = self._io.suggest_fees(self._max_fee_cap_wei)
        max_fee = min(max(bump_fee(old.max_fee_wei), suggested_max), self._max_fee_cap_wei)
        tip = min(max(bump_fee(old.priority_fee_wei), suggested_tip), max_fee)
        if max_fee < bump_fee(old.max_fee_wei) or tip < bump_fee(old.priority_fee_wei):
            self._log.warning(
                "tx_stuck_at_fee_cap", tx_hash=old.tx_hash, base_fee_wei=base_fee, max_fee_cap_wei=self._max_fee_cap_wei
            )
            self._store.set_error(old.tx_id, f"stuck: base fee {base_fee} wei, and the fee cap allows no bump")
            return None
        payments = self._store.payments_of(old.tx_id)
        if not payments:
            return None
        new = self._sign(old.kind, [(p.payee, p.amount_wei) for p in payments], old.nonce, max_fee, tip, now_ms)
        self._store.record_replacement(new, old, now_ms=now_ms)
        self._log.info(
            "tx_replaced", old_hash=old.tx_hash, tx_hash=new.tx_hash, nonce=old.nonce, max_fee_wei=max_fee, priority_fee_wei=tip
        )
        return new

    # --- (b) batch -------------------------------------------------------------------

    def batch(self) -> list[str]:
        """Signs, records and sends transactions for the pending payments; returns their hashes.

        Raises:
            ChainError: a transaction would revert (its payments stay pending) or the chain is down.
        """
        pending = self._store.pending_payments(self.platform, limit=self._batch_max)
        if not pending:
            return []
        # One transfer per payee: payments to the same payee are summed (fewer transfers,
        # less gas); a payee gets one Transfer log per transaction, which is what it verifies.
        by_payee: dict[str, list[Any]] = {}
        for p in pending:
            by_payee.setdefault(p.payee, []).append(p)
        if len(by_payee) >= self._batch_min and self._multi is not None:
            groups = [("batch", pending)]
        else:
            groups = [("single", ps) for ps in by_payee.values()]
        sent: list[str] = []
        for kind, payments in groups:
            now_ms = self._now_ms()
            local = self._store.highest_nonce(self.sender)
            nonce = max(self._io.nonce(self.sender, "pending"), -1 if local is None else local + 1)
            max_fee, tip = self._io.suggest_fees(self._max_fee_cap_wei)
            tx = self._sign(kind, [(p.payee, p.amount_wei) for p in payments], nonce, max_fee, tip, now_ms)
            # The point of no return: from here on these payments belong to this nonce.
            self._store.record_tx(tx, [p.payment_id for p in payments], now_ms=now_ms)
            self._log.info(
                "tx_signed", tx_hash=tx.tx_hash, kind=kind, nonce=nonce, payments=len(payments),
                amount_wei=str(sum(p.amount_wei for p in payments)),
            )  # fmt: skip
            h = self._send(tx)
            if h:
                sent.append(h)
        return sent

    # --- signing and sending ---------------------------------------------------------

    def _sign(self, kind: str, payments: list[tuple[str, int]], nonce: int, max_fee: int, tip: int, now_ms: int) -> TxRow:
        merged: dict[str, int] = {}
        for payee, amount in payments:
            key = to_checksum_address(payee)
            merged[key] = merged.get(key, 0) + amount
        payments = list(merged.items())
        total = sum(amount for _, amount in payments)
        if kind == "batch":
            assert self._multi is not None
            to = self._multi
            recipients = [to_checksum_address(payee) for payee, _ in payments]
            data = self._multi_abi.encode_abi("batchTransfer", args=[self._token, recipients, [a for _, a in payments]])
            what = f"batch transfer of {total} wei to {len(payments)} payees"
        else:
            (payee, amount), = payments
            to = self._token
            data = self._erc20.encode_abi("transfer", args=[to_checksum_address(payee), amount])
            what = f"transfer of {amount} wei to {payee}"
        tx: dict[str, Any] = {"from": self.sender, "to": to, "data": data, "value": 0, "chainId": self._io.chain.chain_id}
        estimate = self._io.estimate_gas(tx, what)
        if estimate > self._gas_cap:
            raise ChainError(f"{what}: gas estimate {estimate} is over the cap {self._gas_cap}")
        tx.pop("from")
        tx.update(
            type=2, nonce=nonce, gas=min(int(estimate * _GAS_MARGIN) + 1_000, self._gas_cap),
            maxFeePerGas=max_fee, maxPriorityFeePerGas=min(tip, max_fee),
        )  # fmt: skip
        signed = self._account.sign_transaction(tx)
        return TxRow(
            tx_id=uuid.uuid4().hex, platform=self.platform, sender=self.sender, nonce=nonce,
            raw_tx=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex(), kind=kind,
            status="signed", max_fee_wei=max_fee, priority_fee_wei=min(tip, max_fee), created_ms=now_ms,
        )  # fmt: skip

    def _send(self, tx: TxRow) -> str | None:
        """Sends recorded bytes; on failure the transaction stays as it was, to be re-sent."""
        try:
            self._io.send_raw(tx.raw_tx, tx.tx_hash)
        except ChainError as exc:
            self._log.warning("tx_send_failed", tx_hash=tx.tx_hash, nonce=tx.nonce, error=str(exc))
            self._store.set_error(tx.tx_id, str(exc))
            return None
        self._store.mark_sent(tx.tx_id, now_ms=self._now_ms())
        return tx.tx_hash
