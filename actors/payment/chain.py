"""Plain, actor-free access to an EVM chain: the payment networks, RPC fail-over, our contracts, ERC-20 transfers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import structlog
from eth_account import Account
from eth_utils import is_address, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
)

from actors.payment.networks import (
    Network,
    load_network_layers,
    load_networks,
    platform_name,
)
from protocol.errors import ChainError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3.providers.base import BaseProvider

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_GAS_CAP",
    "MAX_UINT256",
    "TRANSFER_TOPIC",
    "Chain",
    "Network",
    "Transfer",
    "TxReceipt",
    "allowance",
    "balance_of",
    "batch_transfer",
    "deploy_contracts",
    "ensure_allowance",
    "find_transfers",
    "load_artifact",
    "load_networks",
    "load_network_layers",
    "mint",
    "platform_name",
    "receipt",
    "single_transfer",
    "suggest_fees",
    "transact",
    "wait_for_receipt",
]

T = TypeVar("T")

# The committed output of contracts/compile.mjs (the repo is installed editable).
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
MAX_UINT256 = 2**256 - 1
# keccak("Transfer(address,address,uint256)"): topic 0 of every ERC-20 Transfer log.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
# No single transaction of ours needs more; a bigger estimate means something is wrong.
DEFAULT_GAS_CAP = 5_000_000
# Estimates are exact for the state they ran on; the state can move before inclusion.
_GAS_MARGIN = 1.2
# Fallback tip when the node has no eth_maxPriorityFeePerGas.
_DEFAULT_PRIORITY_FEE_WEI = 1_000_000_000

_log = structlog.get_logger().bind(actor="payment", part="chain")

# What a dead, slow or rate-limiting endpoint raises: try the next one. Anything else is
# the chain's answer and the same on every endpoint.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    ProviderConnectionError,
    OSError,
    TimeoutError,
)


# The networks live in networks.py (no web3); re-exported here.

# --- the chain ----------------------------------------------------------------------


class Chain:
    """A chain reached through one or more RPC endpoints, tried in order (fail-over).

    Each endpoint's chain id is checked once before it is used, so a misconfigured URL
    can never send a payment to another chain. An endpoint that works stays the first
    choice until it fails. Not thread-safe: one payments worker owns a Chain.

        chain = Chain(["http://127.0.0.1:8545"], chain_id=31337)
        chain.call(lambda w3: w3.eth.block_number, "block number")
    """

    def __init__(self, rpc_urls: Sequence[str], chain_id: int, *, timeout_s: float = 10.0) -> None:
        if not rpc_urls:
            raise ChainError(f"chain {chain_id}: no RPC URLs")
        providers = [
            # Our fail-over replaces web3's own retries with back-off on one endpoint.
            HTTPProvider(url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None)
            for url in rpc_urls
        ]
        self._init(list(rpc_urls), providers, chain_id)

    @classmethod
    def from_providers(cls, providers: Sequence[BaseProvider], chain_id: int) -> Chain:
        """A Chain on ready-made web3 providers (in-process tests: EthereumTesterProvider)."""
        chain = cls.__new__(cls)
        chain._init([type(p).__name__ for p in providers], list(providers), chain_id)
        return chain

    def _init(self, names: list[str], providers: list[BaseProvider], chain_id: int) -> None:
        self.chain_id = chain_id
        self._names = names
        self._w3s = [Web3(p) for p in providers]
        self._verified = [False] * len(providers)
        self._current = 0

    @property
    def rpc_urls(self) -> tuple[str, ...]:
        """The endpoints, in the order they are tried."""
        return tuple(self._names)

    def call(self, fn: Callable[[Web3], T], what: str) -> T:
        """Runs ``fn(w3)`` on the first endpoint that answers; ``what`` names it in errors.

        Raises:
            ChainError: no endpoint answers (each one's failure is in the message), or the
                chain answered with an error (a revert, a rejected transaction).
        """
        failures: list[str] = []
        n = len(self._w3s)
        for step in range(n):
            i = (self._current + step) % n
            w3 = self._w3s[i]
            try:
                if not self._verified[i]:
                    actual = w3.eth.chain_id
                    if actual != self.chain_id:
                        failures.append(f"{self._names[i]}: chain id {actual}, expected {self.chain_id}")
                        continue
                    self._verified[i] = True
                result = fn(w3)
            except _TRANSPORT_ERRORS as exc:
                failures.append(f"{self._names[i]}: {type(exc).__name__}: {exc}")
                _log.warning("rpc_endpoint_failed", chain_id=self.chain_id, url=self._names[i], what=what, error=str(exc))
                continue
            except ChainError:
                raise
            except ContractLogicError as exc:
                raise ChainError(f"{what} on chain {self.chain_id} reverted: {_reason(exc)}") from exc
            except Exception as exc:
                # The chain's answer (a rejected transaction; eth-tester's TransactionFailed
                # for a revert), the same on every endpoint: no fail-over.
                text = _reason(exc)
                verb = "reverted" if "revert" in text.lower() else "failed"
                raise ChainError(f"{what} on chain {self.chain_id} {verb}: {text}") from exc
            self._current = i
            return result
        raise ChainError(f"{what}: no RPC endpoint of chain {self.chain_id} answers: " + "; ".join(failures))


def _reason(exc: BaseException) -> str:
    """The readable part of a web3 error (its message, not a repr of a dict)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    if exc.args and isinstance(exc.args[0], dict) and "message" in exc.args[0]:
        return str(exc.args[0]["message"])
    return str(exc) or type(exc).__name__


# --- contracts ----------------------------------------------------------------------


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The compiled artifact contracts/artifacts/<name>.json (abi, bytecode, ...).

    Raises:
        ChainError: the artifact is missing (run ``node contracts/compile.mjs``).
    """
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChainError(f"contract artifact {name}: {exc} (run `npm ci && node contracts/compile.mjs`)") from exc


def _contract(name: str, address: str | None = None) -> Any:
    """A web3 contract object for ABI encoding and decoding (no connection needed)."""
    kwargs: dict[str, Any] = {"abi": load_artifact(name)["abi"]}
    if address is not None:
        kwargs["address"] = _address(address, "contract")
    return Web3().eth.contract(**kwargs)


def _address(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ChainError(f"{what} {value!r} is not an address")
    return to_checksum_address(value)


def _account(key: str | bytes | LocalAccount) -> LocalAccount:
    if hasattr(key, "sign_transaction"):
        return key  # type: ignore[return-value]
    try:
        return Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise ChainError(f"not a private key: {type(exc).__name__}") from None


# --- transactions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A mined transaction: whether it succeeded, where, and how deep it is now."""

    tx_hash: str
    succeeded: bool
    block_number: int
    confirmations: int  # 1 when in the latest block
    gas_used: int
    effective_gas_price_wei: int
    contract_address: str | None


@dataclass(frozen=True, slots=True)
class Transfer:
    """One ERC-20 Transfer log."""

    tx_hash: str
    block_number: int
    log_index: int
    sender: str
    recipient: str
    amount_wei: int


def suggest_fees(chain: Chain, max_fee_cap_wei: int | None = None) -> tuple[int, int]:
    """EIP-1559 fees that follow the chain: ``(max_fee_wei, priority_fee_wei)``.

    max fee = 2 × the latest base fee + the tip, so a transaction survives a few full
    blocks of rising base fee; both are clipped to ``max_fee_cap_wei``.
    """

    def fetch(w3: Web3) -> tuple[int, int]:
        base = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        try:
            tip = int(w3.eth.max_priority_fee)
        except (Web3Exception, ValueError, NotImplementedError):
            tip = _DEFAULT_PRIORITY_FEE_WEI
        return base, tip

    base, tip = chain.call(fetch, "fee suggestion")
    max_fee = 2 * base + tip
    if max_fee_cap_wei is not None:
        max_fee = min(max_fee, max_fee_cap_wei)
    return max_fee, min(tip, max_fee)


def transact(
    chain: Chain,
    key: str | bytes | LocalAccount,
    to: str | None,
    data: str,
    *,
    what: str,
    nonce: int | None = None,
    max_fee_wei: int | None = None,
    priority_fee_wei: int | None = None,
    gas_cap: int = DEFAULT_GAS_CAP,
    value_wei: int = 0,
) -> str:
    """Estimates, signs locally (EIP-1559) and sends a transaction; returns its hash.

    ``to=None`` creates a contract. A nonce of None takes the account's pending nonce;
    fees of None follow the chain (suggest_fees). The gas limit is the estimate plus a
    margin, never above ``gas_cap``. Sending the same signed transaction again is
    harmless: "already known" counts as sent.

    Raises:
        ChainError: the call would revert (with the reason), gas is over the cap, or the
            node refuses the transaction (nonce too low, no funds for gas).
    """
    account = _account(key)
    tx: dict[str, Any] = {"from": account.address, "data": data, "value": value_wei, "chainId": chain.chain_id}
    if to is not None:
        tx["to"] = _address(to, "recipient")
    estimate = chain.call(lambda w3: w3.eth.estimate_gas(tx), what)  # type: ignore[arg-type]
    if estimate > gas_cap:
        raise ChainError(f"{what}: gas estimate {estimate} is over the cap {gas_cap}")
    if nonce is None:
        nonce = chain.call(lambda w3: w3.eth.get_transaction_count(account.address, "pending"), f"{what}: nonce")
    if max_fee_wei is None or priority_fee_wei is None:
        suggested_max, suggested_tip = suggest_fees(chain, max_fee_wei)
        max_fee_wei = suggested_max if max_fee_wei is None else max_fee_wei
        priority_fee_wei = min(suggested_tip, max_fee_wei) if priority_fee_wei is None else priority_fee_wei
    if priority_fee_wei > max_fee_wei:
        raise ChainError(f"{what}: priority fee {priority_fee_wei} wei is above the max fee {max_fee_wei} wei")
    tx.update(
        type=2,
        nonce=nonce,
        gas=min(int(estimate * _GAS_MARGIN) + 1_000, gas_cap),
        maxFeePerGas=max_fee_wei,
        maxPriorityFeePerGas=priority_fee_wei,
    )
    tx.pop("from")
    signed = account.sign_transaction(tx)
    tx_hash = "0x" + bytes(signed.hash).hex()

    def send(w3: Web3) -> str:
        try:
            w3.eth.send_raw_transaction(signed.raw_transaction)
        except (Web3Exception, ValueError) as exc:
            # A retry after a timeout, or fail-over to an endpoint that already has it.
            if "already known" in _reason(exc).lower() or "known transaction" in _reason(exc).lower():
                return tx_hash
            raise
        return tx_hash

    return chain.call(send, f"{what} (from {account.address}, nonce {nonce})")


def receipt(chain: Chain, tx_hash: str) -> TxReceipt | None:
    """The receipt of a mined transaction, or None while it is pending or unknown."""

    def fetch(w3: Web3) -> TxReceipt | None:
        try:
            r = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        if r is None or r.get("blockNumber") is None:
            return None
        latest = w3.eth.block_number
        contract = r.get("contractAddress")
        return TxReceipt(
            tx_hash=tx_hash,
            succeeded=r["status"] == 1,
            block_number=r["blockNumber"],
            confirmations=max(latest - r["blockNumber"] + 1, 0),
            gas_used=r["gasUsed"],
            effective_gas_price_wei=int(r.get("effectiveGasPrice") or 0),
            contract_address=to_checksum_address(contract) if contract else None,
        )

    return chain.call(fetch, f"receipt of {tx_hash}")


def wait_for_receipt(chain: Chain, tx_hash: str, *, timeout_s: float = 120.0, poll_s: float = 0.2) -> TxReceipt:
    """Polls until the transaction is mined.

    Raises:
        ChainError: not mined within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        r = receipt(chain, tx_hash)
        if r is not None:
            return r
        if time.monotonic() >= deadline:
            raise ChainError(f"transaction {tx_hash} not mined within {timeout_s} s") from TimeExhausted()
        time.sleep(poll_s)


def _send_and_wait(chain: Chain, key: str | bytes | LocalAccount, to: str | None, data: str, what: str) -> TxReceipt:
    r = wait_for_receipt(chain, transact(chain, key, to, data, what=what))
    if not r.succeeded:
        raise ChainError(f"{what}: transaction {r.tx_hash} reverted in block {r.block_number}")
    return r


def deploy_contracts(chain: Chain, deployer_key: str | bytes | LocalAccount) -> tuple[str, str]:
    """Deploys TestGLM and MultiTransfer and waits for both: ``(token_address, multi_address)``.

    For a fresh local chain (the testnet script) or a test network without tGLM.

    Raises:
        ChainError: a deployment failed.
    """
    addresses = []
    for name in ("TestGLM", "MultiTransfer"):
        r = _send_and_wait(chain, deployer_key, None, load_artifact(name)["bytecode"], f"deploy {name}")
        assert r.contract_address is not None  # a successful creation always has one
        addresses.append(r.contract_address)
    return addresses[0], addresses[1]


# --- ERC-20 -------------------------------------------------------------------------


def balance_of(chain: Chain, token: str, owner: str) -> int:
    """The token balance of ``owner`` in wei."""
    token, owner = _address(token, "token"), _address(owner, "owner")
    abi = load_artifact("TestGLM")["abi"]
    return chain.call(
        lambda w3: w3.eth.contract(address=token, abi=abi).functions.balanceOf(owner).call(),
        f"balance of {owner}",
    )


def allowance(chain: Chain, token: str, owner: str, spender: str) -> int:
    """How much ``spender`` may still move from ``owner``, in wei."""
    token, owner, spender = _address(token, "token"), _address(owner, "owner"), _address(spender, "spender")
    abi = load_artifact("TestGLM")["abi"]
    return chain.call(
        lambda w3: w3.eth.contract(address=token, abi=abi).functions.allowance(owner, spender).call(),
        f"allowance {owner} -> {spender}",
    )


def mint(chain: Chain, key: str | bytes | LocalAccount, token: str, to: str, amount_wei: int, **fees: int) -> str:
    """Mints test tokens (TestGLM only; anyone may) and returns the transaction hash."""
    _check_amount(amount_wei)
    data = _contract("TestGLM").encode_abi("mint", args=[_address(to, "recipient"), amount_wei])
    return transact(chain, key, token, data, what=f"mint {amount_wei} wei to {to}", **fees)


def ensure_allowance(
    chain: Chain, key: str | bytes | LocalAccount, token: str, spender: str, amount_wei: int, **fees: int
) -> str | None:
    """Approves ``spender`` (the multi-transfer contract) for everything when its allowance
    is below ``amount_wei``; returns the approve transaction's hash, or None if none was needed.

    batch_transfer does not approve by itself: the driver sends this first, with its own
    nonce, so that both transactions are in its records.
    """
    owner = _account(key).address
    if allowance(chain, token, owner, spender) >= amount_wei:
        return None
    data = _contract("TestGLM").encode_abi("approve", args=[_address(spender, "spender"), MAX_UINT256])
    return transact(chain, key, token, data, what=f"approve {spender}", **fees)


def single_transfer(
    chain: Chain,
    key: str | bytes | LocalAccount,
    token: str,
    to: str,
    amount_wei: int,
    nonce: int | None = None,
    max_fee_wei: int | None = None,
    priority_fee_wei: int | None = None,
    gas_cap: int = DEFAULT_GAS_CAP,
) -> str:
    """One ERC-20 transfer to one payee; returns the transaction hash (not yet mined).

    Raises:
        ChainError: it would revert (insufficient balance), or the node refuses it.
    """
    _check_amount(amount_wei)
    data = _contract("TestGLM").encode_abi("transfer", args=[_address(to, "payee"), amount_wei])
    return transact(
        chain, key, token, data, what=f"transfer {amount_wei} wei to {to}",
        nonce=nonce, max_fee_wei=max_fee_wei, priority_fee_wei=priority_fee_wei, gas_cap=gas_cap,
    )  # fmt: skip


def batch_transfer(
    chain: Chain,
    key: str | bytes | LocalAccount,
    token: str,
    multi: str,
    payments: Iterable[tuple[str, int]],
    nonce: int | None = None,
    max_fee_wei: int | None = None,
    priority_fee_wei: int | None = None,
    gas_cap: int = DEFAULT_GAS_CAP,
) -> str:
    """Pays many payees in one transaction through MultiTransfer; returns the transaction hash.

    The payer must have approved ``multi`` on ``token`` first (ensure_allowance). The batch
    is paid entirely or not at all.

        tx = batch_transfer(chain, key, token, multi, [(alice, 10**18), (bob, 5 * 10**17)], nonce=7)

    Raises:
        ChainError: an empty batch, a bad address or amount, or the batch would revert
            (insufficient balance or allowance, with the token's reason).
    """
    payments = list(payments)
    if not payments:
        raise ChainError("batch transfer: no payments")
    recipients = [_address(to, "payee") for to, _ in payments]
    amounts = [_check_amount(amount) for _, amount in payments]
    data = _contract("MultiTransfer").encode_abi("batchTransfer", args=[_address(token, "token"), recipients, amounts])
    return transact(
        chain, key, multi, data, what=f"batch transfer of {sum(amounts)} wei to {len(payments)} payees",
        nonce=nonce, max_fee_wei=max_fee_wei, priority_fee_wei=priority_fee_wei, gas_cap=gas_cap,
    )  # fmt: skip


def _check_amount(amount_wei: int) -> int:
    if not isinstance(amount_wei, int) or isinstance(amount_wei, bool) or not 0 <= amount_wei <= MAX_UINT256:
        raise ChainError(f"amount {amount_wei!r} is not a wei amount (an int in 0..2**256-1)")
    return amount_wei


def _address_topic(address: str, what: str) -> str:
    return "0x" + "0" * 24 + _address(address, what)[2:].lower()


def find_transfers(
    chain: Chain,
    token: str,
    to: str | None,
    from_block: int,
    to_block: int | None = None,
    *,
    sender: str | None = None,
    chunk_blocks: int = 5_000,
) -> list[Transfer]:
    """The token's Transfer logs to ``to`` (and/or from ``sender``) in ``from_block..to_block``.

    How a provider verifies a payment on the chain. ``to_block=None`` means the latest
    block. The range is read in chunks of ``chunk_blocks``, the limit of many public RPCs.
    """
    token = _address(token, "token")
    topics: list[str | None] = [TRANSFER_TOPIC, None, None]
    if sender is not None:
        topics[1] = _address_topic(sender, "sender")
    if to is not None:
        topics[2] = _address_topic(to, "recipient")
    if to_block is None:
        to_block = chain.call(lambda w3: w3.eth.block_number, "block number")
    found: list[Transfer] = []
    start = max(from_block, 0)
    while start <= to_block:
        end = min(start + chunk_blocks - 1, to_block)
        query = {"address": token, "topics": topics, "fromBlock": start, "toBlock": end}
        logs = chain.call(lambda w3: w3.eth.get_logs(query), f"Transfer logs of {token} in blocks {start}..{end}")  # type: ignore[arg-type]  # noqa: B023
        for log in logs:
            found.append(
                Transfer(
                    tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                    block_number=log["blockNumber"],
                    log_index=log["logIndex"],
                    sender=to_checksum_address(bytes(log["topics"][1])[-20:]),
                    recipient=to_checksum_address(bytes(log["topics"][2])[-20:]),
                    amount_wei=int.from_bytes(bytes(log["data"]), "big"),
                )
            )
        start = end + 1
    return found
