"""The payment networks (config/networks.toml and a node's own networks file), without web3.

The ledger reads them at start-up; importing web3 costs a second, so what only needs the
networks stays here and chain.py (which talks to the chain) imports it from here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from protocol.errors import SettingsError

__all__ = ["Network", "load_networks", "load_network_layers", "platform_name"]

_TOKEN_SYMBOLS = ("GLM", "tGLM")


@dataclass(frozen=True, slots=True)
class Network:
    """One payment network of config/networks.toml."""

    name: str
    chain_id: int
    token: str  # the symbol: GLM or tGLM
    token_address: str | None  # None: deployed at run time (the local chain)
    multi_transfer: str | None  # None: deployed at run time, or single transfers only
    confirmations: int
    testnet: bool
    rpc_urls: tuple[str, ...]
    multi_transfer_abi: str = "loam"  # "golem": Golem's own contract, whose ABI the driver does not speak

    @property
    def batch_contract(self) -> str | None:
        """The multi-transfer contract the driver can batch through (ours), or None: single transfers."""
        return self.multi_transfer if self.multi_transfer_abi == "loam" else None


def load_networks(path: str | Path) -> dict[str, Network]:
    """Reads the payment networks from a TOML file such as config/networks.toml.

    Raises:
        SettingsError: the file is missing or malformed, or a value is out of range.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"payment networks {path}: {exc}") from exc
    table = raw.get("networks")
    if not isinstance(table, dict) or not table:
        raise SettingsError(f"payment networks {path}: no [networks.<name>] tables")
    return {name: _parse_network(name, entry, path) for name, entry in table.items()}


def load_network_layers(paths: Sequence[str | Path]) -> dict[str, Network]:
    """Payment networks from several TOML files, later files overriding earlier ones key by key.

    The node's own networks file (the testnet writes one) only needs the keys it changes,
    e.g. the deployed ``token_address`` and ``multi_transfer`` and the ``rpc_urls`` of local.

    Raises:
        SettingsError: a file is missing or malformed, or a merged value is out of range.
    """
    merged: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"payment networks {path}: {exc}") from exc
        table = raw.get("networks", {})
        if not isinstance(table, dict):
            raise SettingsError(f"payment networks {path}: [networks] is not a table")
        for name, entry in table.items():
            if not isinstance(entry, dict):
                raise SettingsError(f"payment network {name!r} in {path}: not a table")
            merged.setdefault(name, {}).update(entry)
            where[name] = str(path)
    if not merged:
        raise SettingsError(f"payment networks {', '.join(map(str, paths))}: no [networks.<name>] tables")
    return {name: _parse_network(name, entry, where[name]) for name, entry in merged.items()}


def _parse_network(name: str, entry: Any, path: str | Path) -> Network:
    where = f"payment network {name!r} in {path}"
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: not a table")
    if not name.isidentifier() or name != name.lower():
        raise SettingsError(f"{where}: the name must be lower-case letters, digits and _")

    def field(key: str, kind: type) -> Any:
        value = entry.get(key)
        # bool is an int in Python: keep true/false out of numeric fields.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingsError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
        return value

    def address(key: str) -> str | None:
        value = field(key, str)
        if value == "":
            return None
        if not is_address(value):
            raise SettingsError(f"{where}: {key} {value!r} is not an address")
        return to_checksum_address(value)

    chain_id = field("chain_id", int)
    if chain_id <= 0:
        raise SettingsError(f"{where}: chain_id must be positive, got {chain_id}")
    token = field("token", str)
    if token not in _TOKEN_SYMBOLS:
        raise SettingsError(f"{where}: token must be one of {_TOKEN_SYMBOLS}, got {token!r}")
    confirmations = field("confirmations", int)
    if not 0 <= confirmations <= 1000:
        raise SettingsError(f"{where}: confirmations must be 0..1000, got {confirmations}")
    urls = field("rpc_urls", list)
    if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        raise SettingsError(f"{where}: rpc_urls must be a non-empty list of http(s) URLs")
    return Network(
        name=name,
        chain_id=chain_id,
        token=token,
        token_address=address("token_address"),
        multi_transfer=address("multi_transfer"),
        confirmations=confirmations,
        testnet=field("testnet", bool),
        rpc_urls=tuple(urls),
        multi_transfer_abi=_abi(entry.get("multi_transfer_abi", "loam"), where),
    )


def _abi(value: Any, where: str) -> str:
    if value not in ("loam", "golem"):
        raise SettingsError(f"{where}: multi_transfer_abi must be \"loam\" or \"golem\", got {value!r}")
    return str(value)


def platform_name(network: Network) -> str:
    """The payment platform of a network: ``erc20-holesky-tglm``, ``erc20-polygon-glm``."""
    return f"erc20-{network.name}-{network.token.lower()}"
