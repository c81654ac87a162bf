"""Payment messages: content ids, signatures by the right node, canonical wei amounts."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from protocol import payment
from protocol.codec import decode, encode, to_wire
from protocol.errors import DecodeError, SignatureError
from tests.unit.protocol.samples import BOB, MALLORY, PROVIDER, REQUESTOR, SAMPLES, debit_note, invoice, payment_sent

SIGNED = [
    payment.DebitNote.TYPE,
    payment.Invoice.TYPE,
    payment.DocumentAccepted.TYPE,
    payment.DocumentRejected.TYPE,
    payment.PaymentSent.TYPE,
]
SIGNER = {
    payment.DebitNote.TYPE: PROVIDER,
    payment.Invoice.TYPE: PROVIDER,
    payment.DocumentAccepted.TYPE: REQUESTOR,
    payment.DocumentRejected.TYPE: REQUESTOR,
    payment.PaymentSent.TYPE: REQUESTOR,
}


@pytest.mark.parametrize("tag", SIGNED)
def test_signed_document_verifies_after_a_round_trip(tag: str) -> None:
    doc = decode(encode(SAMPLES[tag]()))
    doc.verify(SIGNER[tag].node_id)


@pytest.mark.parametrize("tag", [payment.DebitNote.TYPE, payment.Invoice.TYPE, payment.PaymentSent.TYPE])
def test_issuer_documents_verify_against_their_own_issuer(tag: str) -> None:
    SAMPLES[tag]().verify()


@pytest.mark.parametrize("tag", SIGNED)
def test_document_signed_by_another_node_fails(tag: str) -> None:
    doc = SAMPLES[tag]()
    forged = doc.signed(MALLORY)
    with pytest.raises(SignatureError):
        forged.verify(SIGNER[tag].node_id)


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (debit_note, "total_amount_due_wei", "1250000000000001"),
        (debit_note, "usage_counter_vector", (120.5, 181.0)),
        (debit_note, "payment_due_ms", None),
        (invoice, "amount_wei", "1"),
        (invoice, "activity_ids", ()),
        (payment_sent, "tx_hash", "0x" + "00" * 32),
    ],
)
def test_tampered_document_fails_its_id_check(make, field: str, value: object) -> None:
    tampered = dataclasses.replace(make(), **{field: value})
    with pytest.raises(DecodeError, match="does not match its content"):
        tampered.verify()


def test_tampered_document_with_recomputed_id_fails_the_signature() -> None:
    note = debit_note()
    tampered = dataclasses.replace(note, total_amount_due_wei="9" * 30)
    tampered = dataclasses.replace(tampered, debit_note_id=tampered.content_id())
    with pytest.raises(SignatureError):
        tampered.verify()


def test_acceptance_tampered_amount_fails() -> None:
    acc = SAMPLES[payment.DocumentAccepted.TYPE]()
    with pytest.raises(SignatureError):
        dataclasses.replace(acc, total_amount_accepted_wei="99999999999999999999").verify(REQUESTOR.node_id)


def test_acceptance_signature_is_not_valid_as_a_rejection() -> None:
    acc = SAMPLES[payment.DocumentAccepted.TYPE]()
    rej = payment.DocumentRejected(acc.document_id, acc.kind, "BadService", "", "0", acc.timestamp_ms, acc.signature)
    with pytest.raises(SignatureError):
        rej.verify(REQUESTOR.node_id)


def test_content_id_depends_on_the_issuer() -> None:
    a, b = debit_note(), debit_note()
    assert a.debit_note_id == b.debit_note_id
    other = payment.make_debit_note(
        BOB, agreement_id=a.agreement_id, activity_id=a.activity_id, recipient_id=a.recipient_id,
        payment_platform=a.payment_platform, total_amount_due_wei=int(a.total_amount_due_wei),
        usage_counter_vector=a.usage_counter_vector, timestamp_ms=a.timestamp_ms,
        previous_debit_note_id=a.previous_debit_note_id, payment_due_ms=a.payment_due_ms,
    )
    assert other.debit_note_id != a.debit_note_id


def test_amounts_above_64_bits_round_trip_exactly() -> None:
    inv = decode(encode(invoice(2**200 + 1)), payment.Invoice)
    assert payment.wei(inv.amount_wei) == 2**200 + 1
    inv.verify()


@pytest.mark.parametrize("bad", ["", "-1", "01", "1.5", "1e18", " 1", "0x10"])
def test_non_canonical_wei_is_refused_on_decode(bad: str) -> None:
    body = to_wire(invoice())
    body["amount_wei"] = bad
    frame = msgpack.packb({"t": payment.Invoice.TYPE, "v": 1, "b": body}, use_bin_type=True)
    with pytest.raises(DecodeError, match="amount of wei"):
        decode(frame)


@pytest.mark.parametrize("bad", ["", "-1", "01", "1.5", 1])
def test_wei_parses_only_canonical_strings(bad: object) -> None:
    with pytest.raises(ValueError):
        payment.wei(bad)  # type: ignore[arg-type]


def test_wei_str_refuses_negative_and_non_int() -> None:
    assert payment.wei_str(0) == "0"
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError):
            payment.wei_str(bad)  # type: ignore[arg-type]


def test_unknown_rejection_reason_and_kind_are_refused() -> None:
    rej = SAMPLES[payment.DocumentRejected.TYPE]()
    with pytest.raises(ValueError):
        dataclasses.replace(rej, reason="TooExpensive")
    with pytest.raises(ValueError):
        dataclasses.replace(rej, kind="receipt")


def test_payment_split_must_add_up() -> None:
    sent = payment_sent()
    with pytest.raises(ValueError, match="do not add up"):
        dataclasses.replace(sent, agreement_amounts=(("a", "1"),))
