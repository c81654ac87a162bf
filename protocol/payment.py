"""Payment messages: debit notes, invoices, their acceptance or rejection, and payments (sent directly, signed).

Amounts are integers of wei (10**-18 GLM) carried as canonical decimal strings ("0" or digits
without a leading zero): msgpack integers stop at 2**64 wei (about 18.4 GLM), which a long
agreement or a batch can exceed, and a float would lose wei. One canonical spelling per amount
keeps content ids and signatures unambiguous. Use `wei()` and `wei_str()` to convert.

Every signed document has a `digest()` over all of its fields but the signature, under a
domain of its own, so a signature on one kind of document never verifies as another:

>>> note = make_debit_note(alice, agreement_id=..., total_amount_due_wei=10**15, ...)  # doctest: +SKIP
>>> note.verify()  # doctest: +SKIP   (raises SignatureError unless the issuer signed it)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack

from protocol.codec import Message, register, to_wire
from protocol.errors import DecodeError, SignatureError
from protocol.identity import keccak, recover_signer

if TYPE_CHECKING:
    from protocol.identity import Identity

__all__ = [
    "DEBIT_NOTE",
    "INVOICE",
    "PAYMENT",
    "DOCUMENT_KINDS",
    "REJECTION_REASONS",
    "DebitNote",
    "Invoice",
    "DocumentAccepted",
    "DocumentRejected",
    "PaymentSent",
    "DocumentAck",
    "wei",
    "wei_str",
    "make_debit_note",
    "make_invoice",
    "make_payment_sent",
    "accept_document",
    "reject_document",
]

DEBIT_NOTE = "debit_note"
INVOICE = "invoice"
PAYMENT = "payment"
DOCUMENT_KINDS = frozenset({DEBIT_NOTE, INVOICE})
REJECTION_REASONS = frozenset({"UnsolicitedService", "BadService", "IncorrectAmount"})

_WEI_RE = re.compile(r"0|[1-9][0-9]*")


def wei(text: str) -> int:
    """A canonical wei string as an int.

    Raises:
        ValueError: not a canonical non-negative decimal integer.
    """
    if type(text) is not str or not _WEI_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an amount of wei (a canonical decimal integer)")
    return int(text)


def wei_str(amount_wei: int) -> str:
    """An int amount of wei as its canonical string.

    Raises:
        ValueError: a negative amount, or not an int.
    """
    if type(amount_wei) is not int or amount_wei < 0:
        raise ValueError(f"{amount_wei!r} is not a non-negative int amount of wei")
    return str(amount_wei)


def _check_wei(cls_name: str, name: str, value: str) -> None:
    if type(value) is not str or not _WEI_RE.fullmatch(value):
        raise ValueError(f"{cls_name}.{name} {value!r} is not an amount of wei (a canonical decimal integer)")


def _hash(domain: bytes, values: list[Any]) -> bytes:
    return keccak(domain + msgpack.packb(values, use_bin_type=True))


class _Signed(Message):
    """What signed payment documents share: a digest of every field but the signature."""

    __slots__ = ()
    _DOMAIN: ClassVar[bytes]
    _SIGNER_FIELD: ClassVar[str] = ""
    _ID_FIELD: ClassVar[str] = ""
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name in self._WEI_FIELDS:
            _check_wei(type(self).__name__, name, getattr(self, name))

    def _values(self, *skip: str) -> list[Any]:
        return [to_wire(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip]  # type: ignore[arg-type]

    def digest(self) -> bytes:
        """The 32-byte hash the signer signs: every field except the signature."""
        return _hash(self._DOMAIN, self._values("signature"))

    def content_id(self) -> str:
        """The id this document must have: a hash of its content (without id and signature)."""
        return _hash(self._DOMAIN + b"id\x00", self._values("signature", self._ID_FIELD)).hex()

    def check_id(self) -> None:
        """Raises DecodeError unless the document's id is the hash of its content."""
        if not self._ID_FIELD:
            return
        doc_id = getattr(self, self._ID_FIELD)
        if self.content_id() != doc_id:
            raise DecodeError(f"{self.TYPE} id {doc_id} does not match its content")

    def signed(self, identity: Identity) -> Any:
        """This document with its id derived from the content and signed by identity."""
        doc = self
        if self._ID_FIELD:
            doc = dataclasses.replace(doc, **{self._ID_FIELD: doc.content_id()})  # type: ignore[type-var]
        return dataclasses.replace(doc, signature=identity.sign(doc.digest()))  # type: ignore[type-var]

    def verify(self, signer: str | None = None) -> None:
        """Raises SignatureError unless signer (by default the document's issuer or payer) signed it,
        and DecodeError if its id does not match its content."""
        self.check_id()
        expected = signer if signer is not None else getattr(self, self._SIGNER_FIELD, None)
        if not expected:
            raise SignatureError(f"{self.TYPE}: no signer to verify against")
        if recover_signer(self.digest(), self.signature) != expected:  # type: ignore[attr-defined]
            raise SignatureError(f"{self.TYPE} {self._describe()} is not signed by {expected}")

    def _describe(self) -> str:
        return str(getattr(self, self._ID_FIELD or "document_id", ""))


@register
@dataclass(frozen=True, slots=True)
class DebitNote(_Signed):
    """Provider → requestor during an activity: the cumulative amount due so far.

    A `payment_due_ms` makes it a mid-agreement payment; without one it only informs.
    """

    TYPE: ClassVar[str] = "payment.debit_note"
    _DOMAIN: ClassVar[bytes] = b"loam/debit-note/1\x00"
    _SIGNER_FIELD: ClassVar[str] = "issuer_id"
    _ID_FIELD: ClassVar[str] = "debit_note_id"
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ("total_amount_due_wei",)
    debit_note_id: str
    previous_debit_note_id: str  # "" for the first note of an activity
    agreement_id: str
    activity_id: str
    issuer_id: str  # the provider
    recipient_id: str  # the requestor
    payment_platform: str
    total_amount_due_wei: str  # cumulative since the activity started
    usage_counter_vector: tuple[float, ...]
    payment_due_ms: int | None
    timestamp_ms: int
    signature: bytes


@register
@dataclass(frozen=True, slots=True)
class Invoice(_Signed):
    """Provider → requestor at the end of an agreement: the whole amount owed for it."""

    TYPE: ClassVar[str] = "payment.invoice"
    _DOMAIN: ClassVar[bytes] = b"loam/invoice/1\x00"
    _SIGNER_FIELD: ClassVar[str] = "issuer_id"
    _ID_FIELD: ClassVar[str] = "invoice_id"
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ("amount_wei",)
    invoice_id: str
    agreement_id: str
    activity_ids: tuple[str, ...]
    issuer_id: str  # the provider
    recipient_id: str  # the requestor
    payment_platform: str
    amount_wei: str
    payment_due_ms: int
    timestamp_ms: int
    signature: bytes


@register
@dataclass(frozen=True, slots=True)
class DocumentAccepted(_Signed):
    """Requestor → provider: a debit note or invoice accepted, up to a total (signed by the requestor)."""

    TYPE: ClassVar[str] = "payment.document_accepted"
    _DOMAIN: ClassVar[bytes] = b"loam/document-accepted/1\x00"
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ("total_amount_accepted_wei",)
    document_id: str
    kind: str  # "debit_note" or "invoice"
    total_amount_accepted_wei: str
    allocation_id: str | None
    timestamp_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _Signed.__post_init__(self)
        if self.kind not in DOCUMENT_KINDS:
            raise ValueError(f"document kind {self.kind!r} is not one of {sorted(DOCUMENT_KINDS)}")


@register
@dataclass(frozen=True, slots=True)
class DocumentRejected(_Signed):
    """Requestor → provider: a debit note or invoice rejected, with a reason (signed by the requestor)."""

    TYPE: ClassVar[str] = "payment.document_rejected"
    _DOMAIN: ClassVar[bytes] = b"loam/document-rejected/1\x00"
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ("total_amount_accepted_wei",)
    document_id: str
    kind: str
    reason: str  # "UnsolicitedService", "BadService" or "IncorrectAmount"
    message: str
    total_amount_accepted_wei: str  # what the requestor would accept (may be "0")
    timestamp_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _Signed.__post_init__(self)
        if self.kind not in DOCUMENT_KINDS:
            raise ValueError(f"document kind {self.kind!r} is not one of {sorted(DOCUMENT_KINDS)}")
        if self.reason not in REJECTION_REASONS:
            raise ValueError(f"rejection reason {self.reason!r} is not one of {sorted(REJECTION_REASONS)}")


@register
@dataclass(frozen=True, slots=True)
class PaymentSent(_Signed):
    """Payer → payee: a transfer made on a platform, what it settles and how it splits by agreement."""

    TYPE: ClassVar[str] = "payment.payment_sent"
    _DOMAIN: ClassVar[bytes] = b"loam/payment-sent/1\x00"
    _SIGNER_FIELD: ClassVar[str] = "payer_id"
    _ID_FIELD: ClassVar[str] = "payment_id"
    _WEI_FIELDS: ClassVar[tuple[str, ...]] = ("amount_wei",)
    payment_id: str
    payer_id: str
    payee_id: str
    platform: str
    amount_wei: str
    tx_hash: str
    document_ids: tuple[str, ...]
    timestamp_ms: int
    signature: bytes
    # (agreement_id, amount_wei) pairs summing to amount_wei: a batch pays several agreements.
    agreement_amounts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _Signed.__post_init__(self)
        if self.agreement_amounts:
            for agreement_id, amount in self.agreement_amounts:
                _check_wei("PaymentSent", f"agreement_amounts[{agreement_id}]", amount)
            if sum(int(a) for _, a in self.agreement_amounts) != int(self.amount_wei):
                raise ValueError(f"payment amounts by agreement do not add up to {self.amount_wei}")


@register
@dataclass(frozen=True, slots=True)
class DocumentAck(Message):
    """Receipt of a payment message, so the sender stops re-sending it."""

    TYPE: ClassVar[str] = "payment.document_ack"
    document_id: str  # a debit note, invoice or payment id
    kind: str  # "debit_note", "invoice" or "payment"
    acked: str = ""  # the TYPE of the message acknowledged (the document, or its acceptance/rejection)


def make_debit_note(
    issuer: Identity, *, agreement_id: str, activity_id: str, recipient_id: str, payment_platform: str,
    total_amount_due_wei: int, usage_counter_vector: tuple[float, ...], timestamp_ms: int,
    previous_debit_note_id: str = "", payment_due_ms: int | None = None,
) -> DebitNote:
    """A debit note issued and signed by the provider, with its content id."""
    return DebitNote(
        "", previous_debit_note_id, agreement_id, activity_id, issuer.node_id, recipient_id, payment_platform,
        wei_str(total_amount_due_wei), tuple(float(u) for u in usage_counter_vector), payment_due_ms,
        timestamp_ms, b"",
    ).signed(issuer)


def make_invoice(
    issuer: Identity, *, agreement_id: str, activity_ids: tuple[str, ...], recipient_id: str,
    payment_platform: str, amount_wei: int, payment_due_ms: int, timestamp_ms: int,
) -> Invoice:
    """An invoice issued and signed by the provider, with its content id."""
    return Invoice(
        "", agreement_id, tuple(activity_ids), issuer.node_id, recipient_id, payment_platform,
        wei_str(amount_wei), payment_due_ms, timestamp_ms, b"",
    ).signed(issuer)


def make_payment_sent(
    payer: Identity, *, payee_id: str, platform: str, amount_wei: int, tx_hash: str,
    document_ids: tuple[str, ...], timestamp_ms: int, agreement_amounts: tuple[tuple[str, int], ...] = (),
) -> PaymentSent:
    """A payment notice signed by the payer, with its content id."""
    return PaymentSent(
        "", payer.node_id, payee_id, platform, wei_str(amount_wei), tx_hash, tuple(document_ids), timestamp_ms,
        b"", tuple((a, wei_str(x)) for a, x in agreement_amounts),
    ).signed(payer)


def accept_document(
    requestor: Identity, *, document_id: str, kind: str, total_amount_accepted_wei: int,
    allocation_id: str | None, timestamp_ms: int,
) -> DocumentAccepted:
    """The requestor's signed acceptance of a debit note or invoice."""
    return DocumentAccepted(
        document_id, kind, wei_str(total_amount_accepted_wei), allocation_id, timestamp_ms, b""
    ).signed(requestor)


def reject_document(
    requestor: Identity, *, document_id: str, kind: str, reason: str, message: str, timestamp_ms: int,
    total_amount_accepted_wei: int = 0,
) -> DocumentRejected:
    """The requestor's signed rejection of a debit note or invoice."""
    return DocumentRejected(
        document_id, kind, reason, message, wei_str(total_amount_accepted_wei), timestamp_ms, b""
    ).signed(requestor)
