"""The payment ledger in SQLite: round trips, idempotent receipt, re-sending, accounts and status totals."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.payment.ledger import Allocation, InvalidPaymentTransitionError
from actors.payment.ledger_store import DocumentRecord, LedgerStore, PaymentRecord, StatusTotal
from node.storage import open_database
from protocol import payment
from tests.unit.protocol.samples import PLATFORM, PROVIDER, REQUESTOR, debit_note, invoice, payment_sent


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_database(tmp_path / "loam.db")
    yield connection
    connection.close()


@pytest.fixture
def store(conn: sqlite3.Connection) -> LedgerStore:
    return LedgerStore(conn)


def test_allocation_round_trips_with_amounts_beyond_64_bits(store: LedgerStore) -> None:
    a = Allocation("al", REQUESTOR.node_id, PLATFORM, total_wei=2**80, timeout_ms=9, make_deposit=True, created_ms=1)
    a = a.reserve(2**70, 2)
    store.save_allocation(a)
    assert store.allocation("al") == a
    store.save_allocation(a.spend(2**70, 3).release(4))
    assert store.allocation("al").spent_wei == 2**70
    assert [x.allocation_id for x in store.allocations("released")] == ["al"]
    assert store.allocations("active") == []
    assert store.allocation("nope") is None


def test_document_round_trips_with_its_reply(store: LedgerStore) -> None:
    note = debit_note()
    rec = DocumentRecord(note, "received", "Received", updated_ms=1)
    assert store.add_document(rec)
    acc = payment.accept_document(
        REQUESTOR, document_id=note.debit_note_id, kind=payment.DEBIT_NOTE,
        total_amount_accepted_wei=rec.amount_wei, allocation_id="al", timestamp_ms=2,
    )
    accepted = rec.moved("Accepted", 2, accepted_wei=rec.amount_wei, allocation_id="al", reply=acc,
                         unacked=payment.DocumentAccepted.TYPE)
    store.save_document(accepted)
    assert store.document(payment.DEBIT_NOTE, note.debit_note_id, "received") == accepted
    assert store.document(payment.DEBIT_NOTE, note.debit_note_id, "issued") is None
    assert accepted.peer_id == PROVIDER.node_id


def test_duplicate_document_is_kept_once(store: LedgerStore) -> None:
    rec = DocumentRecord(invoice(), "received", "Received")
    assert store.add_document(rec)
    store.save_document(rec.moved("Accepted", 5, accepted_wei=rec.amount_wei))
    assert not store.add_document(rec)  # the re-sent copy changes nothing
    assert store.document(payment.INVOICE, rec.document_id, "received").status == "Accepted"


def test_same_document_may_be_kept_issued_and_received(store: LedgerStore) -> None:
    assert store.add_document(DocumentRecord(invoice(), "issued", "Issued"))
    assert store.add_document(DocumentRecord(invoice(), "received", "Received"))


def test_repeated_status_is_unchanged_and_illegal_one_refused() -> None:
    rec = DocumentRecord(invoice(), "received", "Accepted")
    assert rec.moved("Accepted", 9) is rec
    with pytest.raises(InvalidPaymentTransitionError):
        rec.moved("Rejected", 9)


def test_unacked_documents_are_listed_until_acknowledged(store: LedgerStore) -> None:
    note = debit_note()
    store.add_document(DocumentRecord(note, "issued", "Issued", unacked=payment.DebitNote.TYPE))
    assert [r.document_id for r in store.unacked(payment.DEBIT_NOTE)] == [note.debit_note_id]
    # An ack of some other message leaves the flag.
    assert not store.mark_acked(payment.DEBIT_NOTE, note.debit_note_id, "issued", payment.DocumentAccepted.TYPE, 3)
    assert store.mark_acked(payment.DEBIT_NOTE, note.debit_note_id, "issued", payment.DebitNote.TYPE, 3)
    assert store.unacked(payment.DEBIT_NOTE) == []


def test_payments_are_kept_once_and_counted_per_agreement(store: LedgerStore) -> None:
    sent = payment_sent()
    assert store.add_payment(PaymentRecord(sent, "made", 10, unacked=payment.PaymentSent.TYPE))
    assert not store.add_payment(PaymentRecord(sent, "made", 11))
    assert store.add_payment(PaymentRecord(sent, "received", 12))
    assert store.paid_wei(sent.agreement_amounts[0][0], "made") == 2**70 + 7
    assert store.paid_wei(sent.agreement_amounts[0][0], "received") == 2**70 + 7
    assert store.payments("made") == [PaymentRecord(sent, "made", 10, payment.PaymentSent.TYPE)]
    assert store.payments("made", unacked=True) == store.payments("made")
    assert [r.payment for r in store.payments("received", payment_id=sent.payment_id)] == [sent]
    assert store.payments("received", payment_id="other") == []
    assert [r.payment for r in store.payments("received", tx_hash=sent.tx_hash.upper())] == [sent]  # any case
    assert store.payments("received", tx_hash="0x" + "00" * 32) == []
    assert store.mark_payment_acked(sent.payment_id, "made")
    assert store.payments("made")[0].unacked == ""
    assert store.payments("made", unacked=True) == []


def test_agreement_account_is_rebuilt_from_the_store(store: LedgerStore) -> None:
    early, late = debit_note(1_000), debit_note(3_000)
    agreement_id = early.agreement_id
    for n in (late, early):  # out of order
        rec = DocumentRecord(n, "received", "Received")
        store.add_document(rec)
        store.save_document(rec.moved("Accepted", 1, accepted_wei=rec.amount_wei))
    account = store.agreement_account(agreement_id)
    assert (account.due_wei, account.to_pay_wei()) == (3_000, 3_000)
    inv = invoice(5_000)
    rec = DocumentRecord(inv, "received", "Received")
    store.add_document(rec)
    store.save_document(rec.moved("Accepted", 2, accepted_wei=5_000))
    first = payment.make_payment_sent(
        REQUESTOR, payee_id=PROVIDER.node_id, platform=PLATFORM, amount_wei=3_000, tx_hash="0x01",
        document_ids=(late.debit_note_id,), timestamp_ms=3, agreement_amounts=((agreement_id, 3_000),),
    )
    store.add_payment(PaymentRecord(first, "made", 3))
    store.add_payment(PaymentRecord(first, "made", 4))  # a duplicate record of the same payment
    assert store.agreement_account(agreement_id).to_pay_wei() == 2_000


def test_status_totals_by_platform_and_status(store: LedgerStore) -> None:
    store.add_document(DocumentRecord(invoice(2**70), "issued", "Issued"))
    store.add_document(DocumentRecord(debit_note(1_000), "issued", "Accepted"))
    store.add_document(DocumentRecord(debit_note(3_000), "issued", "Accepted"))  # cumulative: counts once
    assert store.status_totals("issued") == [
        StatusTotal(payment.INVOICE, PLATFORM, "Issued", 1, 2**70),
        StatusTotal(payment.DEBIT_NOTE, PLATFORM, "Accepted", 2, 3_000),
    ]
    assert store.status_totals("received") == []


def test_documents_filter_by_agreement_status_and_time(store: LedgerStore) -> None:
    store.add_document(DocumentRecord(debit_note(1_000), "received", "Received", updated_ms=5))
    store.add_document(DocumentRecord(debit_note(2_000), "received", "Accepted", updated_ms=9))
    agreement_id = debit_note().agreement_id
    assert len(store.documents(payment.DEBIT_NOTE, "received", agreement_id=agreement_id)) == 2
    assert [r.amount_wei for r in store.documents(payment.DEBIT_NOTE, "received", status="Accepted")] == [2_000]
    assert [r.amount_wei for r in store.documents(payment.DEBIT_NOTE, "received", after_ms=5)] == [2_000]
    assert store.documents(payment.DEBIT_NOTE, "received", agreement_id="other") == []


def test_ledger_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "loam.db"
    first = open_database(path)
    LedgerStore(first).add_document(DocumentRecord(invoice(), "issued", "Issued", unacked=payment.Invoice.TYPE))
    first.close()
    again = open_database(path)
    try:
        assert [r.document for r in LedgerStore(again).unacked(payment.INVOICE)] == [invoice()]
    finally:
        again.close()


def test_an_agreements_debit_notes_count_per_activity_and_add_up_across_activities(store: LedgerStore) -> None:
    agreement_id = invoice().agreement_id

    def note(activity_id: str, total: int, due: bool) -> payment.DebitNote:
        return payment.make_debit_note(
            PROVIDER, agreement_id=agreement_id, activity_id=activity_id, recipient_id=REQUESTOR.node_id,
            payment_platform=PLATFORM, total_amount_due_wei=total, usage_counter_vector=(1.0, 2.0),
            timestamp_ms=total, payment_due_ms=total + 1 if due else None,
        )  # fmt: skip

    # Activity a: cumulative 10 then 30 (due); activity b: 5, then a late duplicate-ish 4.
    for n in (note("a" * 32, 10, False), note("a" * 32, 30, True), note("b" * 32, 5, False), note("b" * 32, 4, False)):
        store.add_document(DocumentRecord(n, "received", "Accepted", accepted_wei=int(n.total_amount_due_wei)))
    account = store.agreement_account(agreement_id)
    assert account.debit_note_wei == 30 + 5  # the highest of each activity, summed
    assert account.due_wei == 30
    assert account.to_pay_wei() == 30  # only what is due is payable before the invoice
