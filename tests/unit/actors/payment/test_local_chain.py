"""Contract addresses of a local chain, planned before the deploy: they must be where the deploy puts them."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from actors.payment import chain as ch
from actors.payment.chain import load_network_layers
from actors.payment.local_chain import create_address, plan
from node.settings import NETWORKS_PATH

from .conftest import fund_eth


def test_planned_addresses_are_where_the_deploy_puts_the_contracts(tmp_path: Path) -> None:
    planned = plan(tmp_path, "http://127.0.0.1:9")
    key = (tmp_path / "deployer.key").read_text().strip()
    assert (tmp_path / "deployer.key").stat().st_mode & 0o077 == 0  # owner-only
    assert Account.from_key(key).address == planned["deployer"]
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    fund_eth(w3, planned["deployer"])
    token, multi = ch.deploy_contracts(ch.Chain.from_providers([provider], w3.eth.chain_id), key)
    assert (token, multi) == (planned["token_address"], planned["multi_transfer"])
    # The networks file overrides the shipped local entry with them.
    local = load_network_layers([NETWORKS_PATH, tmp_path / "networks.toml"])["local"]
    assert (local.token_address, local.multi_transfer, local.rpc_urls) == (token, multi, ("http://127.0.0.1:9",))


def test_create_addresses_match_a_known_vector() -> None:
    # The first contract of anvil's well-known first development account.
    assert create_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", 0) == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert create_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", 1) == "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
