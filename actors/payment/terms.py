"""An agreement's payment terms read from its properties: platform, addresses, prices, intervals and timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.payment.tracking_store import AgreementTerms, TrackedAgreement
from protocol.errors import PaymentError

if TYPE_CHECKING:
    from actors.market.store import AgreementRecord
    from protocol.market import AgreementTerms as MarketTerms

__all__ = [
    "DEBIT_NOTE_INTERVAL_KEY",
    "ACCEPT_TIMEOUT_KEY",
    "PAYMENT_TIMEOUT_KEY",
    "PaymentParties",
    "read_terms",
    "tracked_from",
]

DEBIT_NOTE_INTERVAL_KEY = "golem.com.scheme.payu.debit-note.interval-sec?"
ACCEPT_TIMEOUT_KEY = "golem.com.payment.debit-notes.accept-timeout?"
PAYMENT_TIMEOUT_KEY = "golem.com.scheme.payu.payment-timeout-sec?"
_DEFAULT_INTERVAL_S = 120.0
_MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class PaymentParties:
    """Who pays whom where, for one agreement."""

    platform: str
    payee_address: str
    payer_address: str
    terms: AgreementTerms


def _number(props: dict[str, Any], key: str) -> float | None:
    value = props.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return float(value)


def read_terms(t: MarketTerms) -> PaymentParties:
    """The payment side of an agreement, as both parties read it from the same signed terms.

    The platform is the provider's chosen one; the debit-note interval and accept timeout are
    the requestor's (the demand's) when it set them, else the offer's; mid-agreement payments
    happen only when both sides named a payment timeout.

    Raises:
        PaymentError: the agreement has no linear price or no payment platform.
    """
    offer, demand = t.offer_properties, t.demand_properties
    platform = offer.get("golem.com.payment.chosen-platform") or demand.get("golem.com.payment.chosen-platform")
    if not isinstance(platform, str) or not platform:
        platform = next(
            (k.split(".")[4] for k in offer if k.startswith("golem.com.payment.platform.") and k.endswith(".address")),
            "",
        )
    if not platform:
        raise PaymentError(f"agreement {t.agreement_id} names no payment platform")
    payee = offer.get(f"golem.com.payment.platform.{platform}.address", t.provider_id)
    payer = demand.get(f"golem.com.payment.platform.{platform}.address", t.requestor_id)
    coeffs = offer.get("golem.com.pricing.model.linear.coeffs")
    vector = offer.get("golem.com.usage.vector")
    if (
        not isinstance(coeffs, list) or not isinstance(vector, list) or len(coeffs) != len(vector) + 1
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in coeffs)
    ):  # fmt: skip
        raise PaymentError(f"agreement {t.agreement_id} has no linear price (coefficients for its usage vector and a start fee)")
    interval = _number(demand, DEBIT_NOTE_INTERVAL_KEY) or _number(offer, DEBIT_NOTE_INTERVAL_KEY) or _DEFAULT_INTERVAL_S
    accept = _number(demand, ACCEPT_TIMEOUT_KEY)
    pay_timeout = _number(demand, PAYMENT_TIMEOUT_KEY) if _number(offer, PAYMENT_TIMEOUT_KEY) is not None else None
    terms = AgreementTerms(
        coeffs=tuple(float(c) for c in coeffs), usage_vector=tuple(str(v) for v in vector),
        debit_note_interval_s=max(interval, _MIN_INTERVAL_S), accept_timeout_s=accept, payment_timeout_s=pay_timeout,
        threads=max(1, int(_number(offer, "golem.inf.cpu.threads") or 1)),
    )  # fmt: skip
    return PaymentParties(platform, str(payee), str(payer), terms)


def tracked_from(rec: AgreementRecord, now_ms: int) -> TrackedAgreement:
    """A new, open TrackedAgreement for an agreement of this node, from its side (role).

    Raises:
        PaymentError: the agreement has no linear price or no payment platform.
    """
    parties = read_terms(rec.terms)
    peer = rec.terms.requestor_id if rec.role == "provider" else rec.terms.provider_id
    return TrackedAgreement(
        rec.terms.agreement_id, rec.role, peer, parties.platform, parties.payee_address, parties.payer_address,
        parties.terms, None, False, "open", None, now_ms, now_ms,
    )  # fmt: skip
