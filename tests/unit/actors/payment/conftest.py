"""Fixtures for the chain tests: an in-process chain (eth-tester + py-evm) with our contracts on it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from actors.payment import chain as ch

__all__ = ["Deployed"]


@dataclass
class Deployed:
    chain: ch.Chain
    w3: Web3
    payer_key: str
    payer: str
    token: str
    multi: str


def fund_eth(w3: Web3, to: str, amount_wei: int = 10**20) -> None:
    """Gives ``to`` gas money from eth-tester's unlocked, pre-funded account."""
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": to, "value": amount_wei}))


@pytest.fixture(scope="module")
def deployed() -> Deployed:
    """A fresh in-process chain with TestGLM and MultiTransfer deployed by a funded payer."""
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    account = Account.create()
    fund_eth(w3, account.address)
    chain = ch.Chain.from_providers([provider], chain_id=w3.eth.chain_id)
    key = account.key.hex()
    token, multi = ch.deploy_contracts(chain, key)
    return Deployed(chain=chain, w3=w3, payer_key=key, payer=account.address, token=token, multi=multi)
