"""The requestor's own checks of debit notes and invoices before it accepts them (pure, testable with `now`).

The node checks every document against the usage it saw as well; these checks are the
library's: the document is for an agreement of this session, addressed to us on our
platform, and asks no more than the agreed prices allow for the time the agreement ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from requestor.strategy import CPU_SEC, DURATION_SEC, ProviderOffer

__all__ = ["AgreementTerms", "check_debit_note", "check_invoice", "glm_of", "SLACK_S"]

SLACK_S = 30.0  # clocks differ and usage is counted in steps
_TOLERANCE = Decimal("1.01")


def glm_of(text: Any) -> Decimal | None:
    """A GLM amount from the API's decimal string; None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


@dataclass(frozen=True, slots=True)
class AgreementTerms:
    """What the requestor agreed to with one provider, and when the agreement ran (unix seconds)."""

    agreement_id: str
    provider_id: str
    offer: ProviderOffer
    platform: str
    payer: str
    approved_s: float
    ended_s: float | None = None

    def elapsed_s(self, now_s: float) -> float:
        return max(0.0, (self.ended_s if self.ended_s is not None else now_s) - self.approved_s)

    def price_of(self, usage: list[float]) -> Decimal:
        """The linear price of a usage vector (GLM)."""
        coeffs = self.offer.properties.get("golem.com.pricing.model.linear.coeffs") or []
        total = Decimal(str(coeffs[-1])) if coeffs else Decimal(0)
        for c, u in zip(coeffs[:-1], usage):
            total += Decimal(str(c)) * Decimal(str(u))
        return total

    def ceiling(self, now_s: float, activities: int) -> Decimal:
        """The most an agreement may cost so far: every thread busy, every activity for the whole time."""
        seconds = Decimal(str(self.elapsed_s(now_s) + SLACK_S)) * max(1, activities)
        cpu = Decimal(str(self.offer.coefficient(CPU_SEC) or 0)) * max(1, self.offer.threads)
        env = Decimal(str(self.offer.coefficient(DURATION_SEC) or 0))
        return Decimal(str(self.offer.start_price)) + (cpu + env) * seconds


def _common(doc: dict[str, Any], terms: AgreementTerms, what: str) -> str | None:
    if doc.get("agreementId") != terms.agreement_id:
        return f"{what} is for agreement {doc.get('agreementId')}, not {terms.agreement_id}"
    if str(doc.get("issuerId", "")).lower() != terms.provider_id.lower():
        return f"{what} is issued by {doc.get('issuerId')}, not the agreement's provider {terms.provider_id}"
    if str(doc.get("payerAddr", "")).lower() != terms.payer.lower():
        return f"{what} names payer {doc.get('payerAddr')}, not {terms.payer}"
    if doc.get("paymentPlatform") != terms.platform:
        return f"{what} asks payment on {doc.get('paymentPlatform')}, the agreement pays on {terms.platform}"
    return None


def check_debit_note(doc: dict[str, Any], terms: AgreementTerms, now_s: float) -> str | None:
    """Why a debit note is refused (a message), None when it may be accepted."""
    what = f"debit note {doc.get('debitNoteId')}"
    problem = _common(doc, terms, what)
    if problem:
        return problem
    amount = glm_of(doc.get("totalAmountDue"))
    if amount is None:
        return f"{what}: totalAmountDue {doc.get('totalAmountDue')!r} is not an amount of GLM"
    if doc.get("paymentDueDate"):
        return f"{what} asks payment before the agreement ends, which was not negotiated"
    usage = doc.get("usageCounterVector")
    vector = terms.offer.properties.get("golem.com.usage.vector") or []
    if not isinstance(usage, list) or len(usage) != len(vector) or not all(
        isinstance(u, (int, float)) and not isinstance(u, bool) and u >= 0 for u in usage
    ):
        return f"{what}: its usage {usage!r} does not fit the usage vector {vector}"
    elapsed = terms.elapsed_s(now_s) + SLACK_S
    named = dict(zip(vector, usage))
    if named.get(DURATION_SEC, 0) > elapsed:
        return f"{what} counts {named[DURATION_SEC]:.0f} s of activity; the agreement has run {elapsed - SLACK_S:.0f} s"
    if named.get(CPU_SEC, 0) > elapsed * max(1, terms.offer.threads):
        return f"{what} counts {named[CPU_SEC]:.0f} cpu seconds, more than {terms.offer.threads} threads give in {elapsed:.0f} s"
    priced = terms.price_of(usage)
    if amount > priced * _TOLERANCE + Decimal("1e-12"):
        return f"{what} asks {amount} GLM; its usage at the agreed prices costs {priced}"
    return None


def check_invoice(doc: dict[str, Any], terms: AgreementTerms, now_s: float) -> str | None:
    """Why an invoice is refused (a message), None when it may be accepted."""
    what = f"invoice {doc.get('invoiceId')}"
    problem = _common(doc, terms, what)
    if problem:
        return problem
    amount = glm_of(doc.get("amount"))
    if amount is None:
        return f"{what}: amount {doc.get('amount')!r} is not an amount of GLM"
    activities = doc.get("activityIds") or []
    ceiling = terms.ceiling(now_s, len(activities))
    if amount > ceiling * _TOLERANCE:
        return f"{what} asks {amount} GLM, more than the agreed prices allow for the agreement's time ({ceiling:.18f})"
    return None
