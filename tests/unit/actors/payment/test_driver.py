"""The payment driver on an in-process chain: batches, confirmations, crashes, reverts, replacements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from actors.payment import chain as ch
from actors.payment.driver import ChainIO, PaymentConflictError, PaymentDriver, bump_fee
from actors.payment.driver_store import DriverStore
from node.storage import open_database
from protocol.errors import ChainError

from .conftest import Deployed, fund_eth

GLM = 10**18
GWEI = 10**9
CAP = 100 * GWEI


class Clock:
    """A settable ``now`` for the driver."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Crash(BaseException):
    """A process dying at a chosen point (not an Exception: nothing may catch it)."""


class FakeIO(ChainIO):
    """The real chain, with knobs: die around a send, fix the gas estimate, fake a base fee."""

    def __init__(self, chain: ch.Chain) -> None:
        super().__init__(chain)
        self.crash_before_send = False
        self.crash_after_send = False
        self.fixed_gas: int | None = None
        self.base_fee_wei: int | None = None
        self.sent: list[str] = []

    def send_raw(self, raw_tx: bytes, tx_hash: str) -> None:
        if self.crash_before_send:
            raise Crash("before send")
        self.sent.append(tx_hash)
        super().send_raw(raw_tx, tx_hash)
        if self.crash_after_send:
            raise Crash("after send")

    def estimate_gas(self, tx: dict[str, Any], what: str) -> int:
        return self.fixed_gas if self.fixed_gas is not None else super().estimate_gas(tx, what)

    def base_fee(self) -> int:
        return self.base_fee_wei if self.base_fee_wei is not None else super().base_fee()


@dataclass
class Env:
    d: Deployed
    key: str
    payer: str
    db: Path
    clock: Clock
    io: FakeIO

    def driver(self, *, io: ChainIO | None = None, **kwargs: Any) -> PaymentDriver:
        """A driver as after a (re)start: a fresh connection to the same database."""
        kwargs.setdefault("confirmations", 1)
        kwargs.setdefault("max_fee_cap_wei", CAP)
        store = DriverStore(open_database(self.db))
        return PaymentDriver(store, io or self.io, self.key, self.d.token, self.d.multi, now=self.clock, **kwargs)

    def balance(self, who: str) -> int:
        return ch.balance_of(self.d.chain, self.d.token, who)

    def mine(self, n: int = 1) -> None:
        self.d.w3.provider.ethereum_tester.mine_blocks(n)  # type: ignore[attr-defined]


@pytest.fixture
def env(deployed: Deployed, tmp_path: Path) -> Iterator[Env]:
    """A fresh payer with gas money, 1000 GLM and the multi-transfer contract approved."""
    d = deployed
    account = Account.create()
    fund_eth(d.w3, account.address)
    key = account.key.hex()
    ch.wait_for_receipt(d.chain, ch.mint(d.chain, key, d.token, account.address, 1000 * GLM), timeout_s=10)
    approve = ch.ensure_allowance(d.chain, key, d.token, d.multi, ch.MAX_UINT256)
    assert approve is not None
    ch.wait_for_receipt(d.chain, approve, timeout_s=10)
    tester = d.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    try:
        yield Env(d, key, account.address, tmp_path / "loam.db", Clock(), FakeIO(d.chain))
    finally:
        tester.enable_auto_mine_transactions()


def _payees(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def _schedule(driver: PaymentDriver, payees: list[str], amounts: list[int], prefix: str = "inv") -> None:
    for i, (payee, amount) in enumerate(zip(payees, amounts)):
        driver.schedule(f"{prefix}-{i}", payee, amount)


AMOUNTS = [GLM, 2 * GLM + 1, 3, 10**17, 5 * GLM]


def test_five_payments_go_in_one_batch_and_are_confirmed_after_n_blocks(env: Env) -> None:
    driver = env.driver(confirmations=3)
    payees = _payees(5)
    _schedule(driver, payees, AMOUNTS)
    before = env.balance(env.payer)
    sent = driver.cycle()
    assert len(sent) == 1  # one batch transaction for all five
    assert [env.balance(p) for p in payees] == AMOUNTS
    assert env.balance(env.payer) == before - sum(AMOUNTS)
    assert driver.status() == {"pending": 0, "batched": sum(AMOUNTS), "confirmed": 0, "failed": 0}
    assert driver.cycle() == []  # mined, 1 confirmation of 3: nothing to send
    assert driver.status()["batched"] == sum(AMOUNTS)
    env.mine(2)
    driver.cycle()
    assert driver.status() == {"pending": 0, "batched": 0, "confirmed": sum(AMOUNTS), "failed": 0}
    (tx,) = driver._store.txs(driver.platform, env.payer)
    assert (tx.kind, tx.status, tx.tx_hash) == ("batch", "confirmed", sent[0])
    assert [env.balance(p) for p in payees] == AMOUNTS


def test_fewer_payments_than_batch_min_go_as_single_transfers(env: Env) -> None:
    driver = env.driver(batch_min=3)
    payees = _payees(2)
    _schedule(driver, payees, [7, 2**65])  # amounts beyond 64 bits round-trip through the store
    assert len(driver.cycle()) == 2
    driver.cycle()
    txs = driver._store.txs(driver.platform, env.payer)
    assert [t.kind for t in txs] == ["single", "single"]
    assert txs[1].nonce == txs[0].nonce + 1
    assert [env.balance(p) for p in payees] == [7, 2**65]
    assert driver.status()["confirmed"] == 7 + 2**65


def test_a_payment_scheduled_twice_is_paid_once(env: Env) -> None:
    driver = env.driver()
    payee, other = _payees(2)
    assert driver.schedule("inv-1", payee, 5 * GLM) is True
    assert driver.schedule("inv-1", payee, 5 * GLM) is False
    with pytest.raises(PaymentConflictError, match="inv-1"):
        driver.schedule("inv-1", payee, 6 * GLM)
    with pytest.raises(PaymentConflictError):
        driver.schedule("inv-1", other, 5 * GLM)
    driver.cycle()
    driver.cycle()
    assert driver.schedule("inv-1", payee, 5 * GLM) is False  # also after it is confirmed
    driver.cycle()
    assert env.balance(payee) == 5 * GLM
    assert env.balance(other) == 0
    assert driver.status()["confirmed"] == 5 * GLM


def test_bad_payee_or_amount_is_refused() -> None:
    driver = PaymentDriver.__new__(PaymentDriver)
    with pytest.raises(ValueError, match="not an address"):
        driver.schedule("inv-1", "0x1234", 1)
    with pytest.raises(ValueError, match="amount"):
        driver.schedule("inv-1", Account.create().address, 0)


def test_crash_after_recording_before_sending_resends_the_same_bytes(env: Env) -> None:
    payees = _payees(3)
    first = env.driver()
    _schedule(first, payees, AMOUNTS[:3])
    env.io.crash_before_send = True
    with pytest.raises(Crash):
        first.cycle()
    (recorded,) = first._store.txs(first.platform, env.payer)
    assert recorded.status == "signed"
    assert first.status()["batched"] == sum(AMOUNTS[:3])
    assert [env.balance(p) for p in payees] == [0, 0, 0]

    env.io.crash_before_send = False
    restarted = env.driver()
    assert restarted.cycle() == [recorded.tx_hash]  # the recorded bytes, not a new transaction
    restarted.cycle()
    assert [env.balance(p) for p in payees] == AMOUNTS[:3]
    assert restarted.status()["confirmed"] == sum(AMOUNTS[:3])
    assert [t.tx_hash for t in restarted._store.txs(restarted.platform, env.payer)] == [recorded.tx_hash]


def test_crash_after_sending_before_the_receipt_finds_the_receipt(env: Env) -> None:
    payees = _payees(2)
    first = env.driver()
    _schedule(first, payees, AMOUNTS[:2])
    env.io.crash_after_send = True  # on the chain, but "sent" never recorded
    with pytest.raises(Crash):
        first.cycle()
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]

    env.io.crash_after_send = False
    restarted = env.driver()
    assert restarted.cycle() == []  # the receipt is found: nothing is sent again
    assert restarted.status()["confirmed"] == sum(AMOUNTS[:2])
    assert len(restarted._store.txs(restarted.platform, env.payer)) == 1
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]


def test_sending_the_same_raw_transaction_twice_is_harmless(env: Env) -> None:
    driver = env.driver()
    payees = _payees(2)
    _schedule(driver, payees, AMOUNTS[:2])
    driver.cycle()
    (tx,) = driver._store.txs(driver.platform, env.payer)
    env.io.send_raw(tx.raw_tx, tx.tx_hash)  # already mined
    env.io.send_raw(tx.raw_tx, tx.tx_hash)
    driver.cycle()
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]
    assert driver.status()["confirmed"] == sum(AMOUNTS[:2])


def test_a_reverted_batch_returns_its_payments_and_a_later_batch_pays_them_once(env: Env) -> None:
    d = env.d
    payees = _payees(3)
    revoke = ch._contract("TestGLM").encode_abi("approve", args=[d.multi, 0])
    ch.wait_for_receipt(d.chain, ch.transact(d.chain, env.key, d.token, revoke, what="revoke"), timeout_s=10)
    driver = env.driver()
    _schedule(driver, payees, AMOUNTS[:3])
    # An honest estimate refuses the batch up front: nothing is signed, nothing recorded.
    with pytest.raises(ChainError, match="allowance"):
        driver.cycle()
    assert driver._store.txs(driver.platform, env.payer) == []
    assert driver.status()["pending"] == sum(AMOUNTS[:3])
    # The state moved between estimate and inclusion: the batch is mined, and reverts.
    env.io.fixed_gas = 200_000
    driver.cycle()
    env.io.fixed_gas = None
    driver.reconcile()  # reconcile only: a new batch would still be refused by the estimate
    (reverted,) = driver._store.txs(driver.platform, env.payer)
    assert reverted.status == "failed" and "reverted" in (reverted.error or "")
    assert driver.status()["pending"] == sum(AMOUNTS[:3])
    assert [env.balance(p) for p in payees] == [0, 0, 0]

    ch.wait_for_receipt(d.chain, ch.ensure_allowance(d.chain, env.key, d.token, d.multi, GLM) or "", timeout_s=10)
    driver.cycle()
    driver.cycle()
    txs = driver._store.txs(driver.platform, env.payer)
    assert [t.status for t in txs] == ["failed", "confirmed"]
    assert txs[1].nonce > txs[0].nonce
    assert [env.balance(p) for p in payees] == AMOUNTS[:3]
    assert driver.status() == {"pending": 0, "batched": 0, "confirmed": sum(AMOUNTS[:3]), "failed": 0}


def _stuck_batch(env: Env, payees: list[str]) -> tuple[PaymentDriver, Any]:
    """A batch sent but not mined (auto-mining off), then old enough and under a higher base fee."""
    env.d.w3.provider.ethereum_tester.disable_auto_mine_transactions()  # type: ignore[attr-defined]
    driver = env.driver(stuck_after_s=30)
    _schedule(driver, payees, AMOUNTS[:2])
    (h,) = driver.cycle()
    (old,) = driver._store.txs(driver.platform, env.payer)
    assert (old.status, old.tx_hash) == ("sent", h)
    env.clock.t += 10
    env.io.base_fee_wei = old.max_fee_wei + 1
    assert driver.cycle() == []  # not stuck long enough yet
    env.clock.t += 30
    return driver, old


def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_bumped_fees(env: Env) -> None:
    payees = _payees(2)
    driver, old = _stuck_batch(env, payees)
    (h,) = driver.cycle()
    old_row, new = driver._store.txs(driver.platform, env.payer)
    assert new.tx_hash == h != old.tx_hash
    assert new.nonce == old.nonce
    assert new.max_fee_wei >= old.max_fee_wei * 9 // 8 and new.priority_fee_wei >= old.priority_fee_wei * 9 // 8
    assert old_row.status == "sent"  # replaced only once the new one is mined
    assert [p.tx_id for p in driver._store.payments_of(new.tx_id)] == [new.tx_id] * 2
    env.io.base_fee_wei = None
    env.mine()
    driver.cycle()
    statuses = {t.tx_hash: t.status for t in driver._store.txs(driver.platform, env.payer)}
    assert statuses == {old.tx_hash: "replaced", new.tx_hash: "confirmed"}
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]
    assert driver.status()["confirmed"] == sum(AMOUNTS[:2])


def test_when_the_original_is_mined_instead_the_replacement_is_marked_replaced(env: Env) -> None:
    payees = _payees(2)
    driver, old = _stuck_batch(env, payees)

    class DropNew(FakeIO):
        def send_raw(self, raw_tx: bytes, tx_hash: str) -> None:
            if tx_hash != old.tx_hash:
                return  # the network never saw the replacement
            super().send_raw(raw_tx, tx_hash)

    io = DropNew(env.d.chain)
    io.base_fee_wei = env.io.base_fee_wei
    driver._io = io
    driver.cycle()
    _, new = driver._store.txs(driver.platform, env.payer)
    assert new.nonce == old.nonce
    io.base_fee_wei = None
    env.mine()
    driver.cycle()
    statuses = {t.tx_hash: t.status for t in driver._store.txs(driver.platform, env.payer)}
    assert statuses == {old.tx_hash: "confirmed", new.tx_hash: "replaced"}
    assert {p.tx_id for p in driver._store.payments_of(old.tx_id)} == {old.tx_id}
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]
    assert driver.status()["confirmed"] == sum(AMOUNTS[:2])


def test_fees_are_clipped_to_the_cap_and_a_stuck_transaction_at_the_cap_is_not_replaced(env: Env) -> None:
    base = env.io.base_fee()
    cap = base + 1  # above the base fee, below the suggested 2 * base + tip
    env.d.w3.provider.ethereum_tester.disable_auto_mine_transactions()  # type: ignore[attr-defined]
    driver = env.driver(max_fee_cap_wei=cap, stuck_after_s=1)
    payees = _payees(2)
    _schedule(driver, payees, AMOUNTS[:2])
    driver.cycle()
    (tx,) = driver._store.txs(driver.platform, env.payer)
    assert tx.max_fee_wei == cap and tx.priority_fee_wei <= cap
    env.clock.t += 5
    env.io.base_fee_wei = cap + 1
    driver.cycle()  # no room under the cap for a +12.5 % bump: the same bytes are re-sent instead
    (still,) = driver._store.txs(driver.platform, env.payer)
    assert still.tx_hash == tx.tx_hash and "fee cap" in (still.error or "")
    env.io.base_fee_wei = None
    env.mine()
    driver.cycle()
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]
    assert driver.status()["confirmed"] == sum(AMOUNTS[:2])


def test_a_recorded_transaction_whose_nonce_went_elsewhere_fails_and_is_paid_by_another(env: Env) -> None:
    d = env.d
    payees = _payees(2)
    first = env.driver()
    _schedule(first, payees, AMOUNTS[:2])
    env.io.crash_before_send = True
    with pytest.raises(Crash):
        first.cycle()
    env.io.crash_before_send = False
    # Someone else spends the recorded nonce with the same key (a manual mint).
    ch.wait_for_receipt(d.chain, ch.mint(d.chain, env.key, d.token, env.payer, 1), timeout_s=10)
    restarted = env.driver()
    restarted.cycle()  # the family fails; its payments go into a new batch with a new nonce
    restarted.cycle()
    txs = restarted._store.txs(restarted.platform, env.payer)
    assert [t.status for t in txs] == ["failed", "confirmed"]
    assert "not ours" in (txs[0].error or "")
    assert [env.balance(p) for p in payees] == AMOUNTS[:2]
    assert restarted.status()["confirmed"] == sum(AMOUNTS[:2])


def test_bump_fee_rounds_up_to_at_least_an_eighth_more() -> None:
    assert bump_fee(8) == 9
    assert bump_fee(1) == 2
    assert bump_fee(10**9) == 1_125_000_000


def test_payments_to_the_same_payee_are_summed_into_one_transfer(env: Env) -> None:
    driver = env.driver(batch_min=2)
    a, b = _payees(2)
    for i, (payee, amount) in enumerate([(a, 5), (b, 7), (a, 11), (a, 13)]):
        driver.schedule(f"agr-{i}", payee, amount)
    (tx_hash,) = driver.cycle()  # two payees: one batch of two transfers
    receipt = ch.wait_for_receipt(env.d.chain, tx_hash, timeout_s=10)
    to_a = ch.find_transfers(env.d.chain, env.d.token, a, receipt.block_number, receipt.block_number)
    assert [t.amount_wei for t in to_a] == [5 + 11 + 13]
    assert env.balance(a) == 29 and env.balance(b) == 7
    driver.cycle()
    assert driver.status()["confirmed"] == 36  # each payment counted once, all four confirmed


def test_payments_to_one_payee_alone_go_as_one_single_transfer(env: Env) -> None:
    driver = env.driver(batch_min=2)
    (a,) = _payees(1)
    driver.schedule("x-1", a, 3)
    driver.schedule("x-2", a, 4)
    assert len(driver.cycle()) == 1
    (tx,) = driver._store.txs(driver.platform, env.payer)
    assert tx.kind == "single" and env.balance(a) == 7
