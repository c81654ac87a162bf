"""Messages between the payment ledger and the payment driver (in the node, not on the wire), and their helpers.

Kept apart from the driver so that the ledger can start without importing web3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pykka

from node.settings import NETWORKS_PATH
from protocol.errors import PaymentError

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = [
    "SchedulePayment",
    "VerifyPayment",
    "PaymentVerified",
    "PaymentsSettled",
    "BalanceUpdate",
    "WatchBalance",
    "network_paths",
    "split_platform",
]


def network_paths(settings: Settings) -> list[Path]:
    """The networks files a node reads: the shipped one, then its own (networks_file or <data dir>/networks.toml)."""
    paths = [NETWORKS_PATH]
    own = settings.payment.networks_file
    extra = Path(settings.data_dir) / (own or "networks.toml")
    if own or extra.exists():
        paths.append(extra)
    return paths


def split_platform(platform: str) -> tuple[str, str, str]:
    """``erc20-holesky-tglm`` as ``("erc20", "holesky", "tglm")``.

    Raises:
        PaymentError: not a platform name of that shape.
    """
    parts = platform.split("-") if isinstance(platform, str) else []
    if len(parts) != 3 or not all(parts):
        raise PaymentError(f"{platform!r} is not a payment platform (erc20-<network>-<token>)")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class SchedulePayment:
    """Ledger → driver: pay this (idempotent by payment id)."""

    payment_id: str
    platform: str
    payee_address: str
    amount_wei: int


@dataclass(frozen=True, slots=True)
class VerifyPayment:
    """Ledger → driver: how much did tx_hash move from payer to payee on the platform's token?"""

    payment_id: str
    platform: str
    tx_hash: str
    payer_address: str
    payee_address: str
    reply_to: pykka.ActorRef


@dataclass(frozen=True, slots=True)
class PaymentVerified:
    """Driver → ledger: the answer to VerifyPayment; amount None while unconfirmed, or with an error."""

    payment_id: str
    tx_hash: str
    transferred_wei: int | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class PaymentsSettled:
    """Driver → ledger: payments that reached a final status: (payment_id, "confirmed"|"failed", tx_hash)."""

    settled: tuple[tuple[str, str, str | None], ...]


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    """Driver → ledger: the node's token and gas balance on a platform (None: unknown, chain unreachable)."""

    platform: str
    address: str
    token_wei: int | None
    gas_wei: int | None


@dataclass(frozen=True, slots=True)
class WatchBalance:
    """Ledger → driver: report this platform's balance now and after every cycle."""

    platform: str
