"""Agreement records: the states they may move between, and their round trip through SQLite."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.market.events import AgreementOperationEvent, InvalidTransitionError
from actors.market.store import FINAL_STATES, TRANSITIONS, AgreementRecord, AgreementStore, check_transition
from node.storage import open_database
from protocol.market import sign_act, verify_act
from tests.unit.protocol.samples import PROVIDER, REQUESTOR, T0_MS, agreement_terms, reason_text

STATES = sorted(TRANSITIONS)
LEGAL = [(a, b) for a in STATES for b in sorted(TRANSITIONS[a])]
ILLEGAL = [(a, b) for a in STATES for b in STATES + ["Unknown"] if b not in TRANSITIONS[a]]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_database(tmp_path / "loam.db")
    yield connection
    connection.close()


@pytest.fixture
def store(conn: sqlite3.Connection) -> AgreementStore:
    return AgreementStore(conn)


def record(state: str = "Proposal", role: str = "requestor", **changes: object) -> AgreementRecord:
    return dataclasses.replace(AgreementRecord(agreement_terms(), role, state, updated_ms=T0_MS + 5_000), **changes)


def ended_record() -> AgreementRecord:
    """A record with every optional field set, as a terminated agreement has them."""
    terms = agreement_terms()
    reason = {"message": "done", "golem.requestor.code": "Success", "nested": {"n": [1, 2.5, None, True]}}
    return AgreementRecord(
        terms=terms,
        role="provider",
        state="Terminated",
        requestor_signature=sign_act(REQUESTOR, "propose", terms),
        provider_signature=sign_act(PROVIDER, "approve", terms, T0_MS + 6_000),
        approved_ms=T0_MS + 6_000,
        terminator=REQUESTOR.node_id,
        reason=reason,
        end_signature=sign_act(REQUESTOR, "terminate", terms, reason_text(reason), T0_MS + 600_000),
        end_ms=T0_MS + 600_000,
        unacked="market.agreement_terminated",
        updated_ms=T0_MS + 600_001,
    )


# ---- transitions ------------------------------------------------------------------------------


def test_transitions_are_golems_agreement_states() -> None:
    assert set(STATES) == {"Proposal", "Pending", "Approved", "Cancelled", "Rejected", "Expired", "Terminated"}
    assert FINAL_STATES == {"Cancelled", "Rejected", "Expired", "Terminated"}
    for targets in TRANSITIONS.values():
        assert targets <= set(STATES)


@pytest.mark.parametrize(("current", "new"), LEGAL, ids=[f"{a}-{b}" for a, b in LEGAL])
def test_legal_transition_is_allowed(current: str, new: str) -> None:
    check_transition("ag-1", current, new)
    rec = record(current)
    moved = rec.moved(new, T0_MS + 7_000, unacked="x")
    assert moved.state == new
    assert moved.updated_ms == T0_MS + 7_000
    assert moved.unacked == "x"
    assert moved.terms == rec.terms
    assert rec.state == current  # records are values


@pytest.mark.parametrize(("current", "new"), ILLEGAL, ids=[f"{a}-{b}" for a, b in ILLEGAL])
def test_illegal_transition_names_the_agreement_and_both_states(current: str, new: str) -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        check_transition("ag-42", current, new)
    assert "ag-42" in str(caught.value)
    assert current in str(caught.value) and new in str(caught.value)
    rec = record(current)
    with pytest.raises(InvalidTransitionError, match=rec.agreement_id):
        rec.moved(new, T0_MS)


def test_unknown_current_state_allows_nothing() -> None:
    with pytest.raises(InvalidTransitionError, match="Limbo"):
        check_transition("ag-1", "Limbo", "Approved")


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_state_is_final(state: str) -> None:
    for new in STATES:
        with pytest.raises(InvalidTransitionError):
            record(state).moved(new, T0_MS)


def test_record_knows_its_id_and_peer() -> None:
    terms = agreement_terms()
    assert record().agreement_id == terms.agreement_id
    assert record(role="requestor").peer == terms.provider_id == PROVIDER.node_id
    assert record(role="provider").peer == terms.requestor_id == REQUESTOR.node_id


# ---- SQLite -----------------------------------------------------------------------------------


def test_empty_store_loads_nothing(store: AgreementStore) -> None:
    assert store.load_all() == []
    assert store.events() == []


def test_save_and_load_round_trip_every_field(store: AgreementStore, tmp_path: Path) -> None:
    rec = ended_record()
    store.save(rec)
    assert store.load_all() == [rec]
    # and from another connection, as after a restart
    other = open_database(tmp_path / "loam.db")
    try:
        (back,) = AgreementStore(other).load_all()
    finally:
        other.close()
    assert back == rec
    assert back.terms.digest() == rec.terms.digest()
    assert back.reason == rec.reason
    assert type(back.requestor_signature) is bytes


def test_save_and_load_a_fresh_record_keeps_the_nones(store: AgreementStore) -> None:
    rec = record()
    store.save(rec)
    (back,) = store.load_all()
    assert back == rec
    assert back.requestor_signature is None and back.reason is None and back.end_ms is None


def test_empty_reason_is_not_none(store: AgreementStore) -> None:
    store.save(record(reason={}))
    assert store.load_all()[0].reason == {}


def test_save_updates_a_record_in_place(store: AgreementStore) -> None:
    rec = record()
    store.save(rec)
    terms = dataclasses.replace(rec.terms, app_session_id="session-2")  # as confirm_agreement does
    pending = dataclasses.replace(rec, terms=terms).moved(
        "Pending", T0_MS + 5_100, requestor_signature=sign_act(REQUESTOR, "propose", terms)
    )
    store.save(pending)
    assert store.load_all() == [pending]
    approved = pending.moved("Approved", T0_MS + 6_000, provider_signature=b"\x01" * 65, approved_ms=T0_MS + 6_000)
    store.save(approved)
    terminated = approved.moved(
        "Terminated", T0_MS + 7_000, terminator=PROVIDER.node_id, reason={"message": "bye"},
        end_signature=b"\x02" * 65, end_ms=T0_MS + 7_000, unacked="market.agreement_terminated",
    )
    store.save(terminated)
    assert store.load_all() == [terminated]
    store.save(dataclasses.replace(terminated, unacked=""))
    assert store.load_all()[0].unacked == ""


def test_changed_terms_are_saved_so_the_stored_signature_still_verifies(store: AgreementStore) -> None:
    """confirm_agreement adds the app session id to the terms it signs; after a restart the
    re-sent AgreementProposed must carry the terms that signature covers."""
    rec = record()
    store.save(rec)
    terms = dataclasses.replace(rec.terms, app_session_id="session-2")
    signature = sign_act(REQUESTOR, "propose", terms)
    store.save(dataclasses.replace(rec, terms=terms).moved("Pending", T0_MS + 5_100, requestor_signature=signature))
    (back,) = store.load_all()
    assert back.terms.app_session_id == "session-2"
    verify_act(REQUESTOR.node_id, back.requestor_signature, "propose", back.terms)


def test_several_agreements_are_kept_apart(store: AgreementStore) -> None:
    a = record()
    b = record(terms=agreement_terms(agreement_id="bb" * 32), role="provider", state="Pending")
    store.save(a)
    store.save(b)
    assert sorted(store.load_all(), key=lambda r: r.agreement_id) == sorted([a, b], key=lambda r: r.agreement_id)


def test_events_are_listed_in_the_order_added(store: AgreementStore) -> None:
    store.save(record())
    aid = record().agreement_id
    added = [
        AgreementOperationEvent(T0_MS + 3, aid, "AgreementApprovedEvent"),
        AgreementOperationEvent(T0_MS + 1, aid, "AgreementTerminatedEvent", "Requestor", {"message": "x", "n": [1]}),
        AgreementOperationEvent(T0_MS + 2, aid, "AgreementCancelledEvent", reason={}),
    ]
    for event in added:
        store.add_event(event)
    assert store.events() == added  # the order added, not by time
    assert store.events(limit=2) == added[1:]  # the newest, oldest first
    assert store.events(limit=0) == []


def test_event_of_an_unknown_agreement_is_refused(store: AgreementStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_event(AgreementOperationEvent(T0_MS, "no-such-agreement", "AgreementApprovedEvent"))
    assert store.events() == []
