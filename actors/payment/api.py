"""The payment methods the control channel offers (target "payment"), with plain-data arguments and results.

Amounts cross as strings: wei exceed msgpack's 64-bit integers. GLM amounts given by people
(`loam payment fund --amount 1000`) are decimal strings or numbers of GLM.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from actors.payment.ledger import WEI_PER_GLM
from protocol.errors import PaymentError

__all__ = ["control_methods", "parse_glm", "format_glm"]

_FUND_TIMEOUT_S = 120.0


def parse_glm(value: Any, what: str = "amount") -> int:
    """A GLM amount (decimal string or number) as wei.

    Raises:
        PaymentError: not a positive amount with at most 18 decimals.
    """
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise PaymentError(f"{what} {value!r} is not an amount of GLM") from None
    wei = amount * WEI_PER_GLM
    if not amount.is_finite() or amount <= 0 or wei != wei.to_integral_value():
        raise PaymentError(f"{what} {value!r} must be a positive amount of GLM with at most 18 decimals")
    return int(wei)


def format_glm(amount_wei: int) -> str:
    """Wei as an exact GLM decimal string ("1.5", "0.000000000000000001", "0")."""
    text = format(Decimal(amount_wei) / WEI_PER_GLM, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _record(rec: Any) -> dict[str, Any]:
    doc = rec.document
    return {
        "kind": rec.kind, "document_id": rec.document_id, "role": rec.role, "status": rec.status,
        "agreement_id": rec.agreement_id, "peer_id": rec.peer_id, "platform": doc.payment_platform,
        "amount_glm": format_glm(rec.amount_wei), "amount_wei": str(rec.amount_wei),
        "activity_id": getattr(doc, "activity_id", ""), "timestamp_ms": doc.timestamp_ms,
    }  # fmt: skip


def control_methods(ledger: Any, driver: Any, ask_timeout_s: float) -> dict[str, Callable[..., Any]]:
    """Method name -> callable for ControlApi's "payment" target, over the ledger and driver proxies."""

    def ask(future: Any, timeout_s: float = ask_timeout_s) -> Any:
        return future.get(timeout=timeout_s)

    def status() -> dict[str, Any]:
        out = ask(ledger.status())
        for side in ("requestor", "provider"):
            for row in out[side]:
                row["amount_glm"] = format_glm(row["amount_wei"])
                row["amount_wei"] = str(row["amount_wei"])
        for a in out["allocations"]:
            for key in ("total_wei", "spent_wei", "reserved_wei"):
                a[key] = str(a[key])
        for key in ("paid_wei", "received_wei"):
            out[key] = str(out[key])
        out["balances"] = {
            p: {k: (None if v is None else str(v)) for k, v in b.items()} for p, b in out["balances"].items()
        }
        out["driver"] = {p: {k: str(v) for k, v in t.items()} for p, t in ask(driver.status()).items()}
        return out

    def accounts() -> list[dict[str, Any]]:
        return [dataclasses.asdict(a) for a in ask(ledger.accounts())]

    def create_allocation(amount: Any, platform: str | None = None, timeout_ms: int | None = None) -> dict[str, Any]:
        a = ask(ledger.create_allocation(parse_glm(amount), platform, None, timeout_ms, False))
        return _allocation(a)

    def allocations() -> list[dict[str, Any]]:
        return [_allocation(a) for a in ask(ledger.allocations())]

    def release_allocations() -> list[str]:
        return list(ask(ledger.release_allocations()))

    def release_allocation(allocation_id: str) -> None:
        ask(ledger.release_allocation(allocation_id))

    def pay_agreement_from(agreement_id: str, allocation_id: str, auto_accept: bool = True) -> None:
        ask(ledger.pay_agreement_from(agreement_id, allocation_id, auto_accept))

    def documents(kind: str) -> list[dict[str, Any]]:
        return [_record(r) for r in ask(ledger.documents(kind))]

    def accept(kind: str, document_id: str, allocation_id: str) -> None:
        rec = ask(ledger.document(kind, document_id))
        ask(ledger.accept_document(kind, document_id, rec.amount_wei, allocation_id))

    def reject(kind: str, document_id: str, reason: str, message: str = "") -> None:
        ask(ledger.reject_document(kind, document_id, reason, message, 0))

    def scheduled() -> list[dict[str, Any]]:
        return [
            {**dataclasses.asdict(p), "amount_wei": str(p.amount_wei), "amount_glm": format_glm(p.amount_wei)}
            for p in ask(ledger.scheduled())
        ]

    def payments() -> list[dict[str, Any]]:
        return [
            {"payment_id": r.payment.payment_id, "role": r.role, "payer_id": r.payment.payer_id,
             "payee_id": r.payment.payee_id, "platform": r.payment.platform, "amount_wei": r.payment.amount_wei,
             "amount_glm": format_glm(int(r.payment.amount_wei)), "tx_hash": r.payment.tx_hash,
             "agreements": [a for a, _ in r.payment.agreement_amounts], "acked": not r.unacked}
            for r in ask(ledger.payments())
        ]  # fmt: skip

    def fund(amount: Any = "1000", platform: str | None = None) -> dict[str, Any]:
        platform = platform or ask(ledger.default_platform())
        # The driver hands back a future of the chain thread's work: wait on it here, not in an actor.
        out = ask(driver.fund(platform, parse_glm(amount))).result(timeout=_FUND_TIMEOUT_S)
        return {**out, "token_wei": str(out["token_wei"]), "gas_wei": str(out["gas_wei"]),
                "token_glm": format_glm(out["token_wei"])}  # fmt: skip

    def balance(platform: str | None = None) -> dict[str, Any]:
        platform = platform or ask(ledger.default_platform())
        token, gas = ask(driver.balance(platform)).result(timeout=_FUND_TIMEOUT_S)
        return {"platform": platform, "token_wei": str(token), "gas_wei": str(gas), "token_glm": format_glm(token)}

    return {
        "status": status, "accounts": accounts, "create_allocation": create_allocation, "allocations": allocations,
        "release_allocations": release_allocations, "release_allocation": release_allocation,
        "pay_agreement_from": pay_agreement_from, "documents": documents, "accept": accept, "reject": reject,
        "scheduled": scheduled, "payments": payments, "fund": fund, "balance": balance,
    }  # fmt: skip


def _allocation(a: Any) -> dict[str, Any]:
    return {
        "allocation_id": a.allocation_id, "platform": a.platform, "address": a.address, "state": a.state,
        "total_glm": format_glm(a.total_wei), "spent_glm": format_glm(a.spent_wei),
        "reserved_glm": format_glm(a.reserved_wei), "remaining_glm": format_glm(a.remaining_wei),
        "timeout_ms": a.timeout_ms,
    }  # fmt: skip
