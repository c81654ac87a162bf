"""REST response models: Loam's objects in Golem's JSON shapes, and the served OpenAPI document."""

from __future__ import annotations

from datetime import datetime

from actors.market.events import AgreementOperationEvent, Proposal
from actors.market.store import AgreementRecord
from node.api import models
from node.api.openapi import openapi_document
from node.api.server import all_routes
from protocol.activity import ActivityRuntimeEvent, ExeResult
from protocol.market import AgreementTerms, MarketDemand


def test_timestamps_are_rfc3339_with_offset_and_microseconds() -> None:
    stamp = models.timestamp(1_700_000_000_123)
    assert stamp == "2023-11-14T22:13:20.123000+00:00"
    assert datetime.fromisoformat(stamp).timestamp() == 1_700_000_000.123


def _terms(**kw: object) -> AgreementTerms:
    base = dict(
        agreement_id="ag", requestor_id="0xR", provider_id="0xP", demand_id="d", offer_id="o",
        demand_proposal_id="dp", offer_proposal_id="op", demand_properties={"a": 1}, demand_constraints="()",
        offer_properties={"golem.runtime.name": "wasmtime"}, offer_constraints="(x=1)",
        valid_to_ms=2_000, created_ms=1_000, app_session_id="s",
    )
    base.update(kw)
    return AgreementTerms(**base)  # type: ignore[arg-type]


def test_an_agreement_has_its_offer_and_demand_sides() -> None:
    rec = AgreementRecord(_terms(), "requestor", "Approved", requestor_signature=b"\x01", provider_signature=b"\x02", approved_ms=1_500)
    out = models.agreement_json(rec)
    assert out["agreementId"] == "ag" and out["state"] == "Approved" and out["appSessionId"] == "s"
    assert out["offer"] == {
        "properties": {"golem.runtime.name": "wasmtime"}, "constraints": "(x=1)", "offerId": "op",
        "providerId": "0xP", "timestamp": models.timestamp(1_000),
    }
    assert out["demand"]["requestorId"] == "0xR" and out["demand"]["properties"] == {"a": 1}
    assert out["validTo"] == models.timestamp(2_000) and out["approvedDate"] == models.timestamp(1_500)
    assert out["proposedSignature"] == "0x01" and out["approvedSignature"] == "0x02"
    assert models.agreement_list_entry(rec) == {
        "id": "ag", "timestamp": models.timestamp(1_000), "role": "Requestor", "approvedDate": models.timestamp(1_500),
    }


def test_market_events_carry_event_type_and_date() -> None:
    p = Proposal("p2", "0xP", {"a": 1}, "()", "Draft", 5, "p1", "d", "o")
    event = models.proposal_event(7, p)
    assert event["eventType"] == "ProposalEvent" and event["eventDate"] == models.timestamp(7)
    assert event["proposal"] == {
        "properties": {"a": 1}, "constraints": "()", "proposalId": "p2", "issuerId": "0xP", "state": "Draft",
        "timestamp": models.timestamp(5), "prevProposalId": "p1",
    }
    assert "prevProposalId" not in models.proposal_json(Proposal("p", "0xP", {}, "()", "Initial", 5, None, "d", "o"))
    rejected = models.proposal_rejected_event(8, "p2", {"code": 3})
    assert rejected["proposalId"] == "p2" and rejected["reason"] == {"code": 3, "message": ""}
    rec = AgreementRecord(_terms(), "requestor", "Terminated", end_signature=b"\xab")
    ended = models.agreement_operation_event(
        AgreementOperationEvent(9, "ag", "AgreementTerminatedEvent", "Provider", {"message": "bye"}), rec
    )
    assert ended == {
        "eventType": "AgreementTerminatedEvent", "eventDate": models.timestamp(9), "agreementId": "ag",
        "reason": {"message": "bye"}, "terminator": "Provider", "signature": "0xab",
    }
    approved = models.agreement_operation_event(AgreementOperationEvent(9, "ag", "AgreementApprovedEvent"), rec)
    assert set(approved) == {"eventType", "eventDate", "agreementId"}


def test_a_demand_as_listed() -> None:
    doc = MarketDemand("d1", "0xR", {"a": 1}, "()", "", 10, 20)
    assert models.demand_json(doc) == {
        "properties": {"a": 1}, "constraints": "()", "demandId": "d1", "requestorId": "0xR", "timestamp": models.timestamp(10),
    }


def test_exe_results_and_runtime_events_in_the_clients_shapes() -> None:
    ok = models.exe_result_json(ExeResult(2, 1_000, "Ok", "out", None, None, True))
    assert ok == {"index": 2, "eventDate": models.timestamp(1_000), "result": "Ok", "stdout": "out", "isBatchFinished": True}
    finished = ActivityRuntimeEvent("a", "b", 1, 5, "finished", "", 3, "exited with 3")
    assert models.runtime_kind(finished) == {"finished": {"return_code": 3, "message": "exited with 3"}}
    assert models.runtime_kind(ActivityRuntimeEvent("a", "b", 1, 5, "stdout", "hi", None, None)) == {"stdout": "hi"}
    event = models.runtime_event_json("b", 1, 5, {"stdout": "hi"})
    assert event == {"batchId": "b", "index": 1, "timestamp": models.timestamp(5), "kind": {"stdout": "hi"}}
    assert models.activity_state_json("Ready", "", "") == {"state": ["Ready", None]}
    assert models.activity_state_json("Terminated", "done", "boom") == {
        "state": ["Terminated", None], "reason": "done", "errorMessage": "boom",
    }


def test_the_openapi_document_lists_every_served_operation_once() -> None:
    routes = all_routes(with_payment=True)
    doc = openapi_document(routes, "0.1.0")
    ops = [(path, method) for path, item in doc["paths"].items() for method in item]
    assert len(ops) == len(routes) == len(set(ops))
    assert len({op["operationId"] for item in doc["paths"].values() for op in item.values()}) == len(routes)
    for path, method in [
        ("/market-api/v1/demands", "post"), ("/market-api/v1/demands/{subscriptionId}/events", "get"),
        ("/market-api/v1/agreements/{agreementId}/wait", "post"), ("/market-api/v1/agreementEvents", "get"),
        ("/activity-api/v1/activity", "post"), ("/activity-api/v1/activity/{activityId}/exec/{batchId}", "get"),
        ("/payment-api/v1/allocations", "post"), ("/payment-api/v1/invoiceEvents", "get"),
        ("/payment-api/v1/demandDecorations", "get"), ("/me", "get"), ("/version/get", "get"),
    ]:
        assert method in doc["paths"][path], (path, method)
    refs = {v for v in _refs(doc)}
    assert refs <= {f"#/components/schemas/{name}" for name in doc["components"]["schemas"]}


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
