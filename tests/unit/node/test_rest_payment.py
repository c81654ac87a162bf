"""payment-api models: exact GLM strings, documents with payer and payee, Golem's event and rejection names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from actors.payment.ledger import Allocation
from actors.payment.ledger_store import DocumentRecord, PaymentRecord
from node.api import models
from node.api.errors import ApiError
from node.api.payment import (
    allocation_json,
    debit_note_json,
    event_json,
    glm,
    invoice_json,
    parse_glm_wei,
    payment_json,
)
from protocol.identity import Identity
from protocol.payment import make_debit_note, make_invoice, make_payment_sent

PLATFORM = "erc20-holesky-tglm"


def test_glm_amounts_are_exact_decimal_strings_both_ways() -> None:
    for wei in (0, 1, 10**18, 15 * 10**17, 123_456_789_012_345_678_901, 10**18 - 1):
        assert parse_glm_wei(glm(wei), "x") == wei
    assert glm(10**17) == "0.1" and glm(2 * 10**18) == "2"
    assert parse_glm_wei("0.0000000000000000015", "x") == 1  # past 18 decimals: rounded down
    assert parse_glm_wei("1e-18", "x") == 1
    for bad in ("", "abc", "-1", "NaN", "Infinity", 5, None, "1e40"):
        with pytest.raises(ApiError) as info:
            parse_glm_wei(bad, "totalAmount")
        assert info.value.status == 400 and "totalAmount" in info.value.message


def test_an_allocation_in_golem_json() -> None:
    a = Allocation("al", "0xR", PLATFORM, total_wei=3 * 10**18, spent_wei=10**18, reserved_wei=5 * 10**17,
                   timeout_ms=5_000, created_ms=1_000, updated_ms=2_000)
    out = allocation_json(a)
    assert out == {
        "allocationId": "al", "address": "0xR", "paymentPlatform": PLATFORM, "totalAmount": "3", "spentAmount": "1",
        "remainingAmount": "1.5", "timestamp": models.timestamp(2_000), "makeDeposit": False,
        "timeout": models.timestamp(5_000),
    }


def test_documents_carry_payer_and_payee_and_upper_case_status() -> None:
    provider, requestor = Identity.generate(), Identity.generate()
    note = make_debit_note(
        provider, agreement_id="ag", activity_id="ac", recipient_id=requestor.node_id, payment_platform=PLATFORM,
        total_amount_due_wei=25 * 10**16, usage_counter_vector=(1.0, 2.5), timestamp_ms=7_000,
    )
    out = debit_note_json(DocumentRecord(note, "received", "Received"))
    assert out["payeeAddr"] == provider.node_id == out["issuerId"]
    assert out["payerAddr"] == requestor.node_id == out["recipientId"]
    assert out["totalAmountDue"] == "0.25" and out["status"] == "RECEIVED" and out["usageCounterVector"] == [1.0, 2.5]
    assert "paymentDueDate" not in out and out["paymentPlatform"] == PLATFORM
    invoice = make_invoice(
        provider, agreement_id="ag", activity_ids=("ac",), recipient_id=requestor.node_id, payment_platform=PLATFORM,
        amount_wei=10**18 + 1, payment_due_ms=9_000, timestamp_ms=8_000,
    )
    out = invoice_json(DocumentRecord(invoice, "received", "Accepted"))
    assert out["amount"] == "1.000000000000000001" and out["status"] == "ACCEPTED" and out["activityIds"] == ["ac"]
    assert out["paymentDueDate"] == models.timestamp(9_000) and out["payerAddr"] == requestor.node_id
    paid = make_payment_sent(
        requestor, payee_id=provider.node_id, platform=PLATFORM, amount_wei=10**18, tx_hash="0x" + "ab" * 32,
        document_ids=(invoice.invoice_id,), timestamp_ms=10_000, agreement_amounts=(("ag", 10**18),),
    )
    out = payment_json(PaymentRecord(paid, "made", 10_000))
    assert out["payerAddr"] == requestor.node_id and out["payeeAddr"] == provider.node_id and out["amount"] == "1"
    assert out["agreementPayments"] == [{"agreementId": "ag", "amount": "1"}] and out["details"]


def PaymentEvent(event_ms: int, kind: str, document_id: str, event_type: str, role: str, reason: object = None) -> object:  # noqa: N802
    """The ledger's PaymentEvent, as far as the REST layer reads it."""
    return SimpleNamespace(event_ms=event_ms, kind=kind, document_id=document_id, event_type=event_type, role=role, reason=reason)


def test_payment_events_use_golem_event_types_and_rejection_reasons() -> None:
    assert event_json(PaymentEvent(5, "invoice", "i1", "Received", "received")) == {
        "eventType": "InvoiceReceivedEvent", "eventDate": models.timestamp(5), "invoiceId": "i1",
    }
    rejected = event_json(PaymentEvent(6, "debit_note", "d1", "Rejected", "issued", {
        "rejectionReason": "IncorrectAmount", "totalAmountAccepted": str(10**17), "message": "too much",
    }))
    assert rejected["eventType"] == "DebitNoteRejectedEvent" and rejected["debitNoteId"] == "d1"
    assert rejected["rejection"] == {"rejectionReason": "INCORRECT_AMOUNT", "totalAmountAccepted": "0.1", "message": "too much"}
