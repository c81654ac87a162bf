"""The ledger's tracking tables: agreements' terms, activities' usage, payments handed to the driver."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from actors.payment.tracking_store import AgreementTerms, ScheduledPayment, TrackedActivity, TrackedAgreement, TrackingStore
from node.storage import open_database

TERMS = AgreementTerms((0.001, 0.002, 0.5), ("golem.usage.cpu_sec", "golem.usage.duration_sec"), 5.0, 30.0, None, 4)


def _agreement(state: str = "open") -> TrackedAgreement:
    return TrackedAgreement("ag", "requestor", "0xP", "erc20-local-tglm", "0xPay", "0xReq", TERMS, None, False, state, None, 1, 1)


def test_agreements_round_trip_once_and_move_on(tmp_path: Path) -> None:
    store = TrackingStore(open_database(tmp_path / "loam.db"))
    assert store.add_agreement(_agreement())
    assert not store.add_agreement(_agreement("ended"))  # tracked already: unchanged
    assert store.agreement("ag", "requestor") == _agreement()
    assert store.agreement("ag", "provider") is None
    store.update_agreement(dataclasses.replace(_agreement(), state="ended", ended_ms=9, allocation_id="al", auto_accept=True))
    got = store.agreement("ag", "requestor")
    assert got is not None and (got.state, got.ended_ms, got.allocation_id, got.auto_accept) == ("ended", 9, "al", True)
    assert got.terms == TERMS
    assert [a.agreement_id for a in store.agreements("requestor", ("ended",))] == ["ag"]
    assert store.agreements("requestor", ("open",)) == []


def test_activities_keep_usage_and_note_timing(tmp_path: Path) -> None:
    store = TrackingStore(open_database(tmp_path / "loam.db"))
    store.save_activity(TrackedActivity("act", "ag", (1.5, 2.0), 2**70, False, "", 5, 5))
    store.save_activity(TrackedActivity("act", "ag", (3.0, 4.0), 2**71, True, "note-1", 7, 7))
    assert store.activity("act") == TrackedActivity("act", "ag", (3.0, 4.0), 2**71, True, "note-1", 7, 7)
    assert store.activities("ag", running=True) == []
    assert len(store.activities()) == 1


def test_a_scheduled_payment_is_recorded_once_and_settles_once(tmp_path: Path) -> None:
    store = TrackingStore(open_database(tmp_path / "loam.db"))
    p = ScheduledPayment("p1", "ag", "0xP", "0xPay", "erc20-local-tglm", 2**66, ("inv",), "scheduled", None, 1, 1)
    assert store.add_scheduled(p) and not store.add_scheduled(p)
    assert store.set_scheduled_status("p1", "confirmed", "0xtx", 2)
    assert not store.set_scheduled_status("p1", "failed", None, 3)  # final: a late report changes nothing
    got = store.scheduled("p1")
    assert got is not None and (got.status, got.tx_hash, got.amount_wei) == ("confirmed", "0xtx", 2**66)
    assert store.scheduled_payments(status="scheduled") == []
    assert [x.payment_id for x in store.scheduled_payments(agreement_id="ag")] == ["p1"]
