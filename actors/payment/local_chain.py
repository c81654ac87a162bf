"""A local chain's contract addresses known before they are deployed, so nodes can start while the deploy runs.

A contract's address depends only on its deployer and the deployer's nonce (CREATE: the last
20 bytes of keccak(rlp([deployer, nonce]))). A fresh deployer key deploys the test GLM token
with nonce 0 and the multi-transfer contract with nonce 1, so `plan` can write the networks
file at once; `loam payment deploy-local --key-file` deploys them later and checks the
addresses came out as planned. Light on imports on purpose (no web3): the testnet calls it
on its critical path::

    python -m actors.payment.local_chain --dir .testnet --rpc http://127.0.0.1:7698
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from protocol.identity import Identity, keccak, to_checksum_address

__all__ = ["create_address", "plan", "write_networks_file", "main"]


def create_address(deployer: str, nonce: int) -> str:
    """The address of the contract that `deployer` creates with `nonce` (nonces 0..127)."""
    if not 0 <= nonce < 128:
        raise ValueError("only nonces 0..127 are supported")
    raw = bytes.fromhex(deployer[2:] if deployer.startswith("0x") else deployer)
    nonce_rlp = b"\x80" if nonce == 0 else bytes([nonce])
    payload = b"\x94" + raw + nonce_rlp
    return to_checksum_address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


def write_networks_file(out: Path, *, network: str, rpc_url: str, token: str, multi: str) -> None:
    """The node networks file for the local chain: its contracts and RPC URL."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Written for this testnet's local chain: the contracts deployed on it and its RPC URL.\n"
        f"[networks.{network}]\nchain_id = 31337\ntoken_address = \"{token}\"\n"
        f"multi_transfer = \"{multi}\"\nrpc_urls = [\"{rpc_url}\"]\n"
    )


def plan(folder: Path, rpc_url: str, network: str = "local") -> dict[str, str]:
    """A deployer key (folder/deployer.key, owner-only) and the networks file (folder/networks.toml)."""
    folder.mkdir(parents=True, exist_ok=True)
    deployer = Identity.generate()
    key_file = folder / "deployer.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(deployer.private_key.hex() + "\n")
    token, multi = create_address(deployer.node_id, 0), create_address(deployer.node_id, 1)
    write_networks_file(folder / "networks.toml", network=network, rpc_url=rpc_url, token=token, multi=multi)
    return {"deployer": deployer.node_id, "token_address": token, "multi_transfer": multi,
            "key_file": str(key_file), "networks_file": str(folder / "networks.toml")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: plan a local chain's contracts in a folder; prints them as JSON."""
    parser = argparse.ArgumentParser(description="Plan the contract addresses of a local chain's deploy.")
    parser.add_argument("--dir", type=Path, required=True, help="where deployer.key and networks.toml go")
    parser.add_argument("--rpc", required=True, help="the chain's RPC URL, for the networks file")
    parser.add_argument("--network", default="local")
    args = parser.parse_args(argv)
    print(json.dumps(plan(args.dir, args.rpc, args.network)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
