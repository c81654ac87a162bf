"""The same chain code against a real anvil process (the npm package @foundry-rs/anvil-linux-amd64)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from actors.payment import chain as ch
from protocol.errors import ChainError

ANVIL = Path(__file__).resolve().parents[4] / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
# anvil's first well-known development account (public test key, funded with test ETH).
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def anvil() -> Iterator[ch.Chain]:
    if not ANVIL.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"anvil is missing under CI: run `scripts/setup.sh anvil` ({ANVIL.name} not installed)")
        pytest.skip("anvil is not installed (scripts/setup.sh anvil)")
    port = _free_port()
    proc = subprocess.Popen([str(ANVIL), "--silent", "--host", "127.0.0.1", "--port", str(port)])
    try:
        chain = ch.Chain([f"http://127.0.0.1:{port}"], chain_id=31337, timeout_s=2.0)
        deadline = time.monotonic() + 20
        while True:
            try:
                chain.call(lambda w3: w3.eth.block_number, "block number")
                break
            except ChainError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield chain
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_deploy_mint_and_batch_transfer_on_anvil(anvil: ch.Chain) -> None:
    payer = Account.from_key(ANVIL_KEY).address
    token, multi = ch.deploy_contracts(anvil, ANVIL_KEY)
    ch.wait_for_receipt(anvil, ch.mint(anvil, ANVIL_KEY, token, payer, 10**21), timeout_s=10)
    ch.wait_for_receipt(anvil, ch.ensure_allowance(anvil, ANVIL_KEY, token, multi, 10**21), timeout_s=10)  # type: ignore[arg-type]
    payees = [Account.create().address for _ in range(5)]
    amounts = [10**18 * (i + 1) for i in range(5)]
    r = ch.wait_for_receipt(anvil, ch.batch_transfer(anvil, ANVIL_KEY, token, multi, list(zip(payees, amounts))), timeout_s=10)
    assert r.succeeded
    assert [ch.balance_of(anvil, token, p) for p in payees] == amounts
    assert [t.amount_wei for t in ch.find_transfers(anvil, token, payees[4], r.block_number)] == [amounts[4]]
    print(f"anvil: batch of 5 new payees, {r.gas_used // 5} gas per payee")
