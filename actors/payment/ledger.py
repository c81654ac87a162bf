"""Pure payment rules: prices from usage, debit-note and invoice checks, allocations, document statuses, what to pay.

Nothing here does I/O or reads a clock; callers pass `now_ms`. Amounts are int wei (10**-18 GLM).

>>> amount_due_wei([0.1, 0.01, 1.0], (2.0, 30.0))  # 0.1*2 + 0.01*30 + start fee 1.0 = 1.5 GLM
1500000000000000000
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Context, Decimal
from typing import TYPE_CHECKING

from protocol.errors import AllocationError, InvalidPaymentTransitionError, PaymentError
from protocol.payment import wei

if TYPE_CHECKING:
    from collections.abc import Sequence

    from protocol.payment import DebitNote, Invoice

__all__ = [
    "WEI_PER_GLM",
    "STATUSES",
    "STATUS_TRANSITIONS",
    "FINAL_STATUSES",
    "PaymentError",
    "AllocationError",
    "InvalidPaymentTransitionError",
    "Verdict",
    "Tolerance",
    "PaymentTerms",
    "Allocation",
    "AgreementAccount",
    "glm_to_wei",
    "amount_due_wei",
    "check_debit_note",
    "check_invoice",
    "check_status_move",
]

WEI_PER_GLM = 10**18

# Enough digits that products of floats (17 significant digits each) and sums over a usage
# vector are exact before the final rounding to wei.
_CTX = Context(prec=100)


# Document statuses (Golem's) and the moves between them. Provider side: Issued, then Received
# once the requestor has it. Requestor side: Received on arrival. A Rejected document may later
# be Accepted; an Accepted one is never Rejected (payment-api InvoiceStatus). Failed means the
# payment failed and may be retried, so it can still become Settled.
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    "Issued": frozenset({"Received", "Accepted", "Rejected", "Cancelled"}),
    "Received": frozenset({"Accepted", "Rejected", "Cancelled"}),
    "Accepted": frozenset({"Settled", "Failed"}),
    "Rejected": frozenset({"Accepted", "Cancelled"}),
    "Failed": frozenset({"Settled"}),
    "Settled": frozenset(),
    "Cancelled": frozenset(),
}
STATUSES = frozenset(STATUS_TRANSITIONS)
FINAL_STATUSES = frozenset(s for s, nxt in STATUS_TRANSITIONS.items() if not nxt)


def check_status_move(document_id: str, current: str, new: str) -> bool:
    """Whether a document should change status: False for a repeat of its current status (a duplicate).

    Raises:
        InvalidPaymentTransitionError: the move is not allowed (or a status is unknown).
    """
    if new not in STATUSES:
        raise InvalidPaymentTransitionError(f"document {document_id}: unknown status {new!r}")
    if current == new:
        return False
    if new not in STATUS_TRANSITIONS.get(current, frozenset()):
        raise InvalidPaymentTransitionError(f"document {document_id} is {current} and cannot become {new}")
    return True


def _decimal(value: float, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} {value!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{what} {value!r} is negative")
    # repr() is the shortest text that round-trips the float: the number as JSON and the
    # offer's properties show it, so both sides compute from the same decimal.
    return Decimal(repr(float(value)))


def glm_to_wei(glm: Decimal | float | str) -> int:
    """An amount of GLM as wei, rounded down (never charge a fraction of a wei up).

    Raises:
        ValueError: negative, not finite, or not a number.
    """
    try:
        amount = _decimal(glm, "amount") if isinstance(glm, (int, float)) else Decimal(glm)
    except ArithmeticError:  # decimal.InvalidOperation for text that is not a number
        raise ValueError(f"amount {glm!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"amount {glm!r} is not a finite non-negative number")
    return int(_CTX.multiply(amount, Decimal(WEI_PER_GLM)).to_integral_value(rounding=ROUND_FLOOR))


def amount_due_wei(coeffs: Sequence[float], usage: Sequence[float]) -> int:
    """The linear price of a usage vector in wei: sum(coeffs[i] * usage[i]) + coeffs[-1] (the start fee).

    Each float is taken as its shortest decimal repr, the sum is exact, and only the final GLM
    amount is rounded down to whole wei.

    Raises:
        ValueError: the vector lengths do not fit (one coefficient more than usage entries), or a
            value is negative, NaN or infinite.
    """
    if len(coeffs) != len(usage) + 1:
        raise ValueError(f"linear pricing needs {len(usage) + 1} coefficients for {len(usage)} usage counters, got {len(coeffs)}")
    total = _decimal(coeffs[-1], "start fee")
    for i, (c, u) in enumerate(zip(coeffs, usage)):
        total = _CTX.add(total, _CTX.multiply(_decimal(c, f"coefficient {i}"), _decimal(u, f"usage counter {i}")))
    return glm_to_wei(total)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The requestor's decision on a document: accept, or reject with a Golem rejection reason."""

    accepted: bool
    reason: str = ""  # "" when accepted; else UnsolicitedService, BadService or IncorrectAmount
    message: str = ""

    @classmethod
    def accept(cls) -> Verdict:
        """An acceptance."""
        return cls(True)

    @classmethod
    def reject(cls, reason: str, message: str) -> Verdict:
        """A rejection for reason, with a message naming the document."""
        return cls(False, reason, message)


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far above the requestor's own price a document may go (usage snapshots differ in time).

    The limit is `expected * (1 + relative) + absolute_wei`.
    """

    relative: float = 0.05
    absolute_wei: int = 0

    def limit_wei(self, expected_wei: int) -> int:
        """The highest amount still accepted when the requestor's price is expected_wei."""
        extra = _CTX.multiply(Decimal(expected_wei), _decimal(self.relative, "relative tolerance"))
        return expected_wei + int(extra.to_integral_value(rounding=ROUND_FLOOR)) + self.absolute_wei


@dataclass(frozen=True, slots=True)
class PaymentTerms:
    """What an agreement says about payment, as the ledger needs it."""

    agreement_id: str
    provider_id: str
    requestor_id: str
    payment_platform: str
    coeffs: tuple[float, ...]  # linear pricing: one per usage counter, then the start fee
    mid_agreement_payments: bool = False


def _check_parties(kind: str, doc_id: str, agreement_id: str, issuer: str, recipient: str, platform: str,
                   terms: PaymentTerms) -> Verdict | None:
    if agreement_id != terms.agreement_id:
        return Verdict.reject("UnsolicitedService", f"{kind} {doc_id} is for agreement {agreement_id}, not {terms.agreement_id}")
    if issuer != terms.provider_id or recipient != terms.requestor_id:
        return Verdict.reject(
            "UnsolicitedService", f"{kind} {doc_id} is from {issuer} to {recipient}, not from the agreement's provider to its requestor"
        )
    if platform != terms.payment_platform:
        return Verdict.reject(
            "UnsolicitedService", f"{kind} {doc_id} asks for platform {platform}, the agreement uses {terms.payment_platform}"
        )
    return None


def check_debit_note(
    note: DebitNote, terms: PaymentTerms, usage_seen: Sequence[float], tolerance: Tolerance = Tolerance()
) -> Verdict:
    """The requestor's check of a provider's debit note against the agreed price and the usage it sees.

    Accepted when the cumulative total is at most the price of usage_seen within tolerance, and
    no more than the price of the usage the note itself claims (within the same tolerance).
    """
    doc = note.debit_note_id
    wrong = _check_parties("debit note", doc, note.agreement_id, note.issuer_id, note.recipient_id, note.payment_platform, terms)
    if wrong is not None:
        return wrong
    if note.payment_due_ms is not None and not terms.mid_agreement_payments:
        return Verdict.reject("UnsolicitedService", f"debit note {doc} asks for a mid-agreement payment that was not negotiated")
    try:
        expected = amount_due_wei(terms.coeffs, usage_seen)
        claimed = amount_due_wei(terms.coeffs, note.usage_counter_vector)
    except ValueError as exc:
        return Verdict.reject("IncorrectAmount", f"debit note {doc}: {exc}")
    total = wei(note.total_amount_due_wei)
    if total > tolerance.limit_wei(claimed):
        return Verdict.reject(
            "IncorrectAmount", f"debit note {doc} asks {total} wei, its own usage prices at {claimed} wei"
        )
    if total > tolerance.limit_wei(expected):
        return Verdict.reject(
            "IncorrectAmount",
            f"debit note {doc} asks {total} wei, the usage seen prices at {expected} wei (limit {tolerance.limit_wei(expected)})",
        )
    return Verdict.accept()


def check_invoice(
    invoice: Invoice, terms: PaymentTerms, last_accepted_debit_note_wei: int, usage_seen: Sequence[float] | None,
    tolerance: Tolerance = Tolerance(), *, expected_wei: int | None = None,
) -> Verdict:
    """The requestor's check of an invoice: the agreement's parties and platform, and the amount.

    An amount up to the last accepted debit-note total is fine (already agreed). Above it, the
    amount must be within tolerance of the price of the final usage seen; with no usage known,
    an amount above the accepted total is refused.
    """
    doc = invoice.invoice_id
    wrong = _check_parties("invoice", doc, invoice.agreement_id, invoice.issuer_id, invoice.recipient_id, invoice.payment_platform, terms)
    if wrong is not None:
        return wrong
    amount = wei(invoice.amount_wei)
    if amount <= last_accepted_debit_note_wei:
        return Verdict.accept()
    if usage_seen is None and expected_wei is None:
        return Verdict.reject(
            "IncorrectAmount", f"invoice {doc} asks {amount} wei, more than the {last_accepted_debit_note_wei} wei accepted"
        )
    if expected_wei is not None:
        expected = expected_wei  # the caller priced the usage itself (an agreement of several activities)
    else:
        try:
            expected = amount_due_wei(terms.coeffs, usage_seen or ())
        except ValueError as exc:
            return Verdict.reject("IncorrectAmount", f"invoice {doc}: {exc}")
    limit = max(tolerance.limit_wei(expected), last_accepted_debit_note_wei)
    if amount > limit:
        return Verdict.reject(
            "IncorrectAmount", f"invoice {doc} asks {amount} wei, the usage seen prices at {expected} wei (limit {limit})"
        )
    return Verdict.accept()


def _amount(value: int, what: str, error: type[PaymentError] = AllocationError) -> int:
    if type(value) is not int or value < 0:
        raise error(f"{what} {value!r} is not a non-negative int amount of wei")
    return value


@dataclass(frozen=True, slots=True)
class Allocation:
    """Money a requestor sets aside on a platform; nothing is accepted beyond it.

    `reserved_wei` is accepted but not yet paid, `spent_wei` paid; always
    `spent_wei + reserved_wei <= total_wei`. Operations return a new Allocation.

    >>> a = Allocation("a1", "0xReq", "erc20-holesky-tglm", total_wei=100)
    >>> a.reserve(60, now_ms=0).spend(50, now_ms=0).remaining_wei
    40
    """

    allocation_id: str
    address: str
    platform: str
    total_wei: int
    spent_wei: int = 0
    reserved_wei: int = 0
    timeout_ms: int | None = None
    make_deposit: bool = False
    state: str = "active"  # "active", "released" or "expired"
    created_ms: int = 0
    updated_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("total_wei", "spent_wei", "reserved_wei"):
            _amount(getattr(self, name), f"allocation {self.allocation_id} {name}")
        if self.spent_wei + self.reserved_wei > self.total_wei:
            raise AllocationError(
                f"allocation {self.allocation_id}: spent {self.spent_wei} + reserved {self.reserved_wei} wei exceed its total {self.total_wei}"
            )
        if self.state not in ("active", "released", "expired"):
            raise AllocationError(f"allocation {self.allocation_id}: unknown state {self.state!r}")

    @property
    def remaining_wei(self) -> int:
        """What can still be reserved."""
        return self.total_wei - self.spent_wei - self.reserved_wei

    def is_expired(self, now_ms: int) -> bool:
        """Whether the timeout has passed (or the allocation was expired)."""
        return self.state == "expired" or (self.timeout_ms is not None and now_ms >= self.timeout_ms)

    def _usable(self, now_ms: int, action: str) -> None:
        if self.state != "active":
            raise AllocationError(f"allocation {self.allocation_id} is {self.state}; cannot {action}")
        if self.is_expired(now_ms):
            raise AllocationError(f"allocation {self.allocation_id} expired at {self.timeout_ms}; cannot {action}")

    def reserve(self, amount_wei: int, now_ms: int) -> Allocation:
        """Set amount_wei aside for an accepted document.

        Raises:
            AllocationError: more than remains, a negative amount, or released or expired.
        """
        _amount(amount_wei, "reservation")
        self._usable(now_ms, f"reserve {amount_wei} wei")
        if amount_wei > self.remaining_wei:
            raise AllocationError(
                f"allocation {self.allocation_id} has {self.remaining_wei} wei left, cannot reserve {amount_wei}"
            )
        return dataclasses.replace(self, reserved_wei=self.reserved_wei + amount_wei, updated_ms=now_ms)

    def unreserve(self, amount_wei: int, now_ms: int) -> Allocation:
        """Give back part of a reservation (a document later rejected or cancelled).

        Raises:
            AllocationError: more than is reserved.
        """
        _amount(amount_wei, "reservation")
        if amount_wei > self.reserved_wei:
            raise AllocationError(f"allocation {self.allocation_id} has {self.reserved_wei} wei reserved, cannot give back {amount_wei}")
        return dataclasses.replace(self, reserved_wei=self.reserved_wei - amount_wei, updated_ms=now_ms)

    def spend(self, amount_wei: int, now_ms: int) -> Allocation:
        """Record a payment: taken from the reservation first, then from what remains.

        A released or expired allocation still pays what it had reserved (already accepted).

        Raises:
            AllocationError: more than reserved plus remaining (or, after release, than reserved).
        """
        _amount(amount_wei, "payment")
        from_reserved = min(amount_wei, self.reserved_wei)
        rest = amount_wei - from_reserved
        if rest:
            self._usable(now_ms, f"spend {amount_wei} wei beyond its {self.reserved_wei} wei reserved")
            if rest > self.remaining_wei:
                raise AllocationError(
                    f"allocation {self.allocation_id} cannot spend {amount_wei} wei: "
                    f"{self.reserved_wei} reserved and {self.remaining_wei} left"
                )
        return dataclasses.replace(
            self, spent_wei=self.spent_wei + amount_wei, reserved_wei=self.reserved_wei - from_reserved, updated_ms=now_ms
        )

    def amend(self, total_wei: int, now_ms: int, timeout_ms: int | None = None) -> Allocation:
        """A new total (and optionally a new timeout).

        Raises:
            AllocationError: below what is spent and reserved, or released or expired.
        """
        _amount(total_wei, "total")
        if self.state != "active":
            raise AllocationError(f"allocation {self.allocation_id} is {self.state}; cannot amend it")
        floor = self.spent_wei + self.reserved_wei
        if total_wei < floor:
            raise AllocationError(
                f"allocation {self.allocation_id} cannot go down to {total_wei} wei: {self.spent_wei} spent, {self.reserved_wei} reserved"
            )
        new_timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if new_timeout is not None and now_ms >= new_timeout:
            raise AllocationError(f"allocation {self.allocation_id} cannot be amended to a timeout in the past")
        return dataclasses.replace(self, total_wei=total_wei, timeout_ms=new_timeout, updated_ms=now_ms)

    def release(self, now_ms: int) -> Allocation:
        """Stop using the allocation; what it had reserved is still paid. Releasing twice is a no-op."""
        if self.state == "released":
            return self
        return dataclasses.replace(self, state="released", updated_ms=now_ms)

    def expire(self, now_ms: int) -> Allocation:
        """Mark the allocation expired if its timeout has passed (otherwise unchanged)."""
        if self.state != "active" or self.timeout_ms is None or now_ms < self.timeout_ms:
            return self
        return dataclasses.replace(self, state="expired", updated_ms=now_ms)


@dataclass(frozen=True, slots=True)
class AgreementAccount:
    """The payer's running account of one agreement: what was accepted and what was paid.

    Documents may arrive out of order and twice: a debit note below the highest accepted total
    changes nothing, an invoice caps everything, and `to_pay_wei()` never counts a wei twice.

    >>> acc = AgreementAccount("ag").accept_debit_note("d1", 50, payment_due=True)
    >>> acc.pay(acc.to_pay_wei()).accept_invoice("i1", 80).to_pay_wei()
    30
    """

    agreement_id: str
    debit_note_wei: int = 0  # highest accepted cumulative debit-note total
    due_wei: int = 0  # highest accepted total of a debit note with a payment due date
    invoice_id: str | None = None
    invoice_wei: int | None = None
    paid_wei: int = 0

    def accept_debit_note(self, debit_note_id: str, total_wei: int, payment_due: bool = False) -> AgreementAccount:
        """Count an accepted debit note; a lower or equal total (late or duplicate) is a no-op."""
        _amount(total_wei, f"debit note {debit_note_id} total", PaymentError)
        due = max(self.due_wei, total_wei) if payment_due else self.due_wei
        total = max(self.debit_note_wei, total_wei)
        if (total, due) == (self.debit_note_wei, self.due_wei):
            return self
        return dataclasses.replace(self, debit_note_wei=total, due_wei=due)

    def accept_invoice(self, invoice_id: str, amount_wei: int) -> AgreementAccount:
        """Count the accepted invoice; accepting the same one again is a no-op.

        Raises:
            PaymentError: the agreement already has another accepted invoice.
        """
        _amount(amount_wei, f"invoice {invoice_id} amount", PaymentError)
        if self.invoice_id is not None:
            if self.invoice_id == invoice_id:
                return self
            raise PaymentError(f"agreement {self.agreement_id} already has invoice {self.invoice_id} accepted, not {invoice_id}")
        return dataclasses.replace(self, invoice_id=invoice_id, invoice_wei=amount_wei)

    def target_wei(self) -> int:
        """What the agreement costs so far: the invoice amount once accepted, else the due debit notes."""
        return self.invoice_wei if self.invoice_wei is not None else self.due_wei

    def to_pay_wei(self) -> int:
        """What is still to be paid (never negative, never counting a payment twice)."""
        return max(0, self.target_wei() - self.paid_wei)

    def pay(self, amount_wei: int) -> AgreementAccount:
        """Record a payment made for the agreement.

        Raises:
            PaymentError: more than is still to be paid.
        """
        _amount(amount_wei, "payment", PaymentError)
        if amount_wei > self.to_pay_wei():
            raise PaymentError(
                f"agreement {self.agreement_id}: paying {amount_wei} wei, but only {self.to_pay_wei()} wei is due"
            )
        return dataclasses.replace(self, paid_wei=self.paid_wei + amount_wei)
