"""Loading the payment networks from config/networks.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from actors.payment.chain import load_networks, platform_name
from protocol.errors import SettingsError

SHIPPED = Path(__file__).resolve().parents[4] / "config" / "networks.toml"


def test_shipped_networks_load_with_the_golem_platform_names() -> None:
    nets = load_networks(SHIPPED)
    assert {platform_name(n) for n in nets.values()} == {
        "erc20-local-tglm",
        "erc20-holesky-tglm",
        "erc20-hoodi-tglm",
        "erc20-sepolia-tglm",
        "erc20-amoy-tglm",
        "erc20-polygon-glm",
        "erc20-mainnet-glm",
    }
    ids = {name: n.chain_id for name, n in nets.items()}
    assert ids == {
        "local": 31337, "holesky": 17000, "hoodi": 560048, "sepolia": 11155111,
        "amoy": 80002, "polygon": 137, "mainnet": 1,
    }  # fmt: skip
    assert nets["mainnet"].token_address == "0x7DD9c5Cba05E151C895FDe1CF355C9A1D5DA6429"
    # Lower-case addresses in the file come out checksummed.
    assert nets["polygon"].multi_transfer == to_checksum_address("0x50100d4faf5f3b09987dea36dc2eddd57a3e561b")
    assert nets["local"].token_address is None and nets["local"].multi_transfer is None
    assert not nets["mainnet"].testnet and nets["holesky"].testnet
    assert all(n.rpc_urls for n in nets.values())


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "networks.toml"
    p.write_text(body)
    return p


GOOD = """
[networks.x]
chain_id = 5
token = "tGLM"
token_address = ""
multi_transfer = ""
confirmations = 1
testnet = true
rpc_urls = ["http://127.0.0.1:8545"]
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("chain_id = 5", "chain_id = 0"), "chain_id must be positive"),
        (("chain_id = 5", 'chain_id = "5"'), "chain_id must be a int"),
        (('token = "tGLM"', 'token = "ETH"'), "token must be one of"),
        (('token_address = ""', 'token_address = "0x1234"'), "is not an address"),
        (("confirmations = 1", "confirmations = -1"), "confirmations must be"),
        (('rpc_urls = ["http://127.0.0.1:8545"]', "rpc_urls = []"), "rpc_urls"),
        (('rpc_urls = ["http://127.0.0.1:8545"]', 'rpc_urls = ["ftp://x"]'), "rpc_urls"),
    ],
)
def test_bad_network_values_fail_at_load(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert load_networks(_write(tmp_path, GOOD))["x"].chain_id == 5
    with pytest.raises(SettingsError, match=message):
        load_networks(_write(tmp_path, GOOD.replace(*change)))


def test_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nope.toml"):
        load_networks(tmp_path / "nope.toml")


def test_golems_own_multi_transfer_contracts_are_not_batched_through() -> None:
    from node.settings import NETWORKS_PATH

    nets = load_networks(NETWORKS_PATH)
    for name in ("holesky", "hoodi", "polygon", "mainnet"):
        assert nets[name].multi_transfer is not None and nets[name].multi_transfer_abi == "golem"
        assert nets[name].batch_contract is None  # another ABI: the driver pays single transfers there
    assert nets["local"].multi_transfer_abi == "loam"
