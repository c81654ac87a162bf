"""Chain access on an in-process chain (eth-tester + py-evm): deploy, mint, pay, verify."""

from __future__ import annotations

import pytest
from eth_account import Account

from actors.payment import chain as ch
from protocol.errors import ChainError, NodeError

from .conftest import Deployed

GLM = 10**18


def _mined(d: Deployed, tx_hash: str) -> ch.TxReceipt:
    r = ch.wait_for_receipt(d.chain, tx_hash, timeout_s=10)
    assert r.succeeded, r
    return r


def _payees(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def test_deployed_token_is_tglm_and_mint_credits_the_recipient(deployed: Deployed) -> None:
    token = deployed.w3.eth.contract(address=deployed.token, abi=ch.load_artifact("TestGLM")["abi"])
    assert (token.functions.symbol().call(), token.functions.decimals().call()) == ("tGLM", 18)
    who = Account.create().address
    _mined(deployed, ch.mint(deployed.chain, deployed.payer_key, deployed.token, who, 7 * GLM))
    assert ch.balance_of(deployed.chain, deployed.token, who) == 7 * GLM


def test_batch_transfer_pays_each_payee_exactly(deployed: Deployed) -> None:
    d = deployed
    _mined(d, ch.mint(d.chain, d.payer_key, d.token, d.payer, 100 * GLM))
    approve = ch.ensure_allowance(d.chain, d.payer_key, d.token, d.multi, 100 * GLM)
    assert approve is not None
    _mined(d, approve)
    assert ch.ensure_allowance(d.chain, d.payer_key, d.token, d.multi, 100 * GLM) is None  # already enough
    payees = _payees(5)
    amounts = [GLM, 2 * GLM + 1, 3, 10**17, 5 * GLM]
    before = ch.balance_of(d.chain, d.token, d.payer)
    start = d.w3.eth.block_number
    r = _mined(d, ch.batch_transfer(d.chain, d.payer_key, d.token, d.multi, list(zip(payees, amounts))))
    assert [ch.balance_of(d.chain, d.token, p) for p in payees] == amounts
    assert ch.balance_of(d.chain, d.token, d.payer) == before - sum(amounts)
    # What a payee sees when it verifies its payment: one Transfer log in this transaction.
    found = ch.find_transfers(d.chain, d.token, payees[1], start)
    assert [(t.tx_hash, t.sender, t.recipient, t.amount_wei) for t in found] == [
        (r.tx_hash, d.payer, payees[1], amounts[1])
    ]
    assert ch.receipt(d.chain, r.tx_hash).confirmations >= 1  # type: ignore[union-attr]


def test_find_transfers_filters_by_recipient_sender_and_blocks(deployed: Deployed) -> None:
    d = deployed
    who = Account.create().address
    first = _mined(d, ch.mint(d.chain, d.payer_key, d.token, who, 1))
    second = _mined(d, ch.mint(d.chain, d.payer_key, d.token, who, 2))
    got = ch.find_transfers(d.chain, d.token, who, 0, chunk_blocks=2)  # many small chunks
    assert [(t.amount_wei, t.sender) for t in got] == [(1, ch.Web3.to_checksum_address("0x" + "0" * 40)), (2, got[1].sender)]
    assert [t.amount_wei for t in ch.find_transfers(d.chain, d.token, who, second.block_number)] == [2]
    assert ch.find_transfers(d.chain, d.token, who, 0, first.block_number - 1) == []
    assert ch.find_transfers(d.chain, d.token, who, 0, sender=d.payer) == []  # mints come from 0x0


def test_length_mismatch_reverts_with_a_chain_error(deployed: Deployed) -> None:
    d = deployed
    multi = ch._contract("MultiTransfer")
    data = multi.encode_abi("batchTransfer", args=[d.token, _payees(2), [1]])
    with pytest.raises(ChainError, match="length mismatch"):
        ch.transact(d.chain, d.payer_key, d.multi, data, what="bad batch")


def test_batch_beyond_the_balance_is_refused_and_pays_nobody(deployed: Deployed) -> None:
    d = deployed
    poor = Account.create()
    from .conftest import fund_eth

    fund_eth(d.w3, poor.address)
    _mined(d, ch.mint(d.chain, d.payer_key, d.token, poor.address, 5))
    _mined(d, ch.ensure_allowance(d.chain, poor.key.hex(), d.token, d.multi, 10))  # type: ignore[arg-type]
    payees = _payees(2)
    with pytest.raises(ChainError, match="insufficient balance") as exc:
        ch.batch_transfer(d.chain, poor.key.hex(), d.token, d.multi, [(payees[0], 4), (payees[1], 4)])
    assert isinstance(exc.value, NodeError)
    assert [ch.balance_of(d.chain, d.token, p) for p in payees] == [0, 0]
    with pytest.raises(ChainError, match="insufficient balance"):
        ch.single_transfer(d.chain, poor.key.hex(), d.token, payees[0], 6)


def test_batch_without_allowance_is_refused(deployed: Deployed) -> None:
    d = deployed
    other = Account.create()
    from .conftest import fund_eth

    fund_eth(d.w3, other.address)
    _mined(d, ch.mint(d.chain, d.payer_key, d.token, other.address, 10))
    with pytest.raises(ChainError, match="insufficient allowance"):
        ch.batch_transfer(d.chain, other.key.hex(), d.token, d.multi, [(_payees(1)[0], 1)])


@pytest.mark.parametrize(
    "payments",
    [[], [("0x1234", 1)], [("0x" + "11" * 20, -1)], [("0x" + "11" * 20, 2**256)]],
    ids=["empty", "bad-address", "negative", "too-big"],
)
def test_bad_batches_are_refused_before_sending(deployed: Deployed, payments: list[tuple[str, int]]) -> None:
    with pytest.raises(ChainError):
        ch.batch_transfer(deployed.chain, deployed.payer_key, deployed.token, deployed.multi, payments)


def test_gas_over_the_cap_is_refused(deployed: Deployed) -> None:
    d = deployed
    with pytest.raises(ChainError, match="over the cap"):
        ch.mint(d.chain, d.payer_key, d.token, d.payer, 1, gas_cap=21_000)


def test_batch_costs_less_gas_per_payee_than_single_transfers(deployed: Deployed, record_property) -> None:  # type: ignore[no-untyped-def]
    d = deployed
    n = 5
    _mined(d, ch.mint(d.chain, d.payer_key, d.token, d.payer, 100 * GLM))
    ch.ensure_allowance(d.chain, d.payer_key, d.token, d.multi, 100 * GLM)
    # Fresh payees on both sides: a first credit writes a zero slot (the expensive case).
    batch = _mined(d, ch.batch_transfer(d.chain, d.payer_key, d.token, d.multi, [(p, GLM) for p in _payees(n)]))
    single = _mined(d, ch.single_transfer(d.chain, d.payer_key, d.token, _payees(1)[0], GLM))
    # Payees that already hold tokens: a non-zero slot write.
    again = _payees(n)
    _mined(d, ch.batch_transfer(d.chain, d.payer_key, d.token, d.multi, [(p, 1) for p in again]))
    batch_warm = _mined(d, ch.batch_transfer(d.chain, d.payer_key, d.token, d.multi, [(p, GLM) for p in again]))
    single_warm = _mined(d, ch.single_transfer(d.chain, d.payer_key, d.token, again[0], GLM))
    figures = {
        "batch_new_payee_gas_per_payee": batch.gas_used // n,
        "single_new_payee_gas": single.gas_used,
        "batch_known_payee_gas_per_payee": batch_warm.gas_used // n,
        "single_known_payee_gas": single_warm.gas_used,
    }
    for k, v in figures.items():
        record_property(k, v)
    print(f"gas, batch of {n}: {figures}")
    assert figures["batch_new_payee_gas_per_payee"] < figures["single_new_payee_gas"]
    assert figures["batch_known_payee_gas_per_payee"] < figures["single_known_payee_gas"]


def test_chain_fails_over_to_the_next_endpoint_and_checks_the_chain_id(deployed: Deployed) -> None:
    d = deployed
    provider = d.w3.provider
    dead = ch.Chain(["http://127.0.0.1:9"], chain_id=d.chain.chain_id, timeout_s=1.0)
    with pytest.raises(ChainError, match="no RPC endpoint"):
        dead.call(lambda w3: w3.eth.block_number, "block number")
    mixed = ch.Chain(["http://127.0.0.1:9"], chain_id=d.chain.chain_id, timeout_s=1.0)
    mixed._init(["http://127.0.0.1:9", "tester"], [dead._w3s[0].provider, provider], d.chain.chain_id)
    assert ch.balance_of(mixed, d.token, d.payer) == ch.balance_of(d.chain, d.token, d.payer)
    wrong = ch.Chain.from_providers([provider], chain_id=1)
    with pytest.raises(ChainError, match="expected 1"):
        ch.balance_of(wrong, d.token, d.payer)
