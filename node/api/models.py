"""REST response models: Loam's market, activity and agreement objects as Golem's JSON shapes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.market.events import AgreementOperationEvent, Proposal
    from actors.market.store import AgreementRecord
    from protocol.activity import ActivityRuntimeEvent, ExeResult
    from protocol.market import MarketDemand, MarketOffer

__all__ = [
    "timestamp",
    "demand_json",
    "offer_json",
    "proposal_json",
    "agreement_json",
    "agreement_list_entry",
    "proposal_event",
    "proposal_rejected_event",
    "agreement_event",
    "agreement_operation_event",
    "exe_result_json",
    "runtime_event_json",
    "activity_state_json",
    "reason_json",
]


def timestamp(ms: int) -> str:
    """RFC 3339 with an offset and microseconds, as Golem's clients parse it.

    >>> timestamp(0)
    '1970-01-01T00:00:00.000000+00:00'
    """
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="microseconds")


def reason_json(reason: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Reason (which needs a message) from whatever reason map Loam keeps."""
    if reason is None:
        return None
    out = dict(reason)
    if not isinstance(out.get("message"), str):
        out["message"] = str(out.get("message", ""))
    return out


def demand_json(doc: MarketDemand) -> dict[str, Any]:
    """A Demand."""
    return {
        "properties": dict(doc.properties), "constraints": doc.constraints,
        "demandId": doc.demand_id, "requestorId": doc.requestor_id, "timestamp": timestamp(doc.created_ms),
    }


def offer_json(doc: MarketOffer) -> dict[str, Any]:
    """An Offer."""
    return {
        "properties": dict(doc.properties), "constraints": doc.constraints,
        "offerId": doc.offer_id, "providerId": doc.provider_id, "timestamp": timestamp(doc.created_ms),
    }


def proposal_json(p: Proposal) -> dict[str, Any]:
    """A Proposal."""
    out: dict[str, Any] = {
        "properties": dict(p.properties), "constraints": p.constraints, "proposalId": p.proposal_id,
        "issuerId": p.issuer_id, "state": p.state, "timestamp": timestamp(p.timestamp_ms),
    }
    if p.prev_proposal_id:
        out["prevProposalId"] = p.prev_proposal_id
    return out


def agreement_json(rec: AgreementRecord) -> dict[str, Any]:
    """An Agreement, with its demand and offer sides as last proposed."""
    t = rec.terms
    out: dict[str, Any] = {
        "agreementId": t.agreement_id,
        "demand": {
            "properties": dict(t.demand_properties), "constraints": t.demand_constraints,
            "demandId": t.demand_proposal_id, "requestorId": t.requestor_id, "timestamp": timestamp(t.created_ms),
        },
        "offer": {
            "properties": dict(t.offer_properties), "constraints": t.offer_constraints,
            "offerId": t.offer_proposal_id, "providerId": t.provider_id, "timestamp": timestamp(t.created_ms),
        },
        "validTo": timestamp(t.valid_to_ms),
        "state": rec.state,
        "timestamp": timestamp(t.created_ms),
    }
    if rec.approved_ms:
        out["approvedDate"] = timestamp(rec.approved_ms)
    if t.app_session_id:
        out["appSessionId"] = t.app_session_id
    if rec.requestor_signature:
        out["proposedSignature"] = "0x" + rec.requestor_signature.hex()
    if rec.provider_signature:
        out["approvedSignature"] = "0x" + rec.provider_signature.hex()
    return out


def agreement_list_entry(rec: AgreementRecord) -> dict[str, Any]:
    """An AgreementListEntry."""
    out: dict[str, Any] = {
        "id": rec.agreement_id, "timestamp": timestamp(rec.terms.created_ms),
        "role": "Requestor" if rec.role == "requestor" else "Provider",
    }
    if rec.approved_ms:
        out["approvedDate"] = timestamp(rec.approved_ms)
    return out


def proposal_event(event_ms: int, p: Proposal) -> dict[str, Any]:
    """A ProposalEvent."""
    return {"eventType": "ProposalEvent", "eventDate": timestamp(event_ms), "proposal": proposal_json(p)}


def proposal_rejected_event(event_ms: int, proposal_id: str, reason: dict[str, Any] | None) -> dict[str, Any]:
    """A ProposalRejectedEvent."""
    out: dict[str, Any] = {"eventType": "ProposalRejectedEvent", "eventDate": timestamp(event_ms), "proposalId": proposal_id}
    if reason is not None:
        out["reason"] = reason_json(reason)
    return out


def agreement_event(event_ms: int, rec: AgreementRecord) -> dict[str, Any]:
    """An AgreementEvent (provider: an agreement awaits approval)."""
    return {"eventType": "AgreementEvent", "eventDate": timestamp(event_ms), "agreement": agreement_json(rec)}


def agreement_operation_event(event: AgreementOperationEvent, rec: AgreementRecord | None) -> dict[str, Any]:
    """An AgreementApproved/Rejected/Cancelled/TerminatedEvent."""
    out: dict[str, Any] = {"eventType": event.kind, "eventDate": timestamp(event.event_ms), "agreementId": event.agreement_id}
    if event.reason is not None and event.kind != "AgreementApprovedEvent":
        out["reason"] = reason_json(event.reason)
    if event.kind == "AgreementTerminatedEvent":
        out["terminator"] = event.terminator or "Requestor"
        sig = rec.end_signature if rec is not None else None
        out["signature"] = "0x" + sig.hex() if sig else ""
    return out


def exe_result_json(r: ExeResult) -> dict[str, Any]:
    """An ExeScriptCommandResult."""
    out: dict[str, Any] = {"index": r.index, "eventDate": timestamp(r.event_ms), "result": r.result}
    for key, value in (("stdout", r.stdout), ("stderr", r.stderr), ("message", r.message)):
        if value is not None:
            out[key] = value
    out["isBatchFinished"] = r.is_batch_finished
    return out


def runtime_event_json(batch_id: str, index: int, ts_ms: int, kind: dict[str, Any]) -> dict[str, Any]:
    """A RuntimeEvent as the streaming clients read it (``finished`` carries ``return_code``)."""
    return {"batchId": batch_id, "index": index, "timestamp": timestamp(ts_ms), "kind": kind}


def runtime_kind(event: ActivityRuntimeEvent) -> dict[str, Any]:
    """The kind object of a streamed event of a running command."""
    if event.kind == "started":
        return {"started": {"command": {"run": {"entry_point": event.data}}}}
    if event.kind == "finished":
        code = event.return_code if event.return_code is not None else -1
        return {"finished": {"return_code": code, "message": event.message}}
    return {event.kind: event.data}


def activity_state_json(state: str, reason: str, error: str) -> dict[str, Any]:
    """An ActivityState: the (current, next) pair and why it ended."""
    out: dict[str, Any] = {"state": [state, None]}
    if reason:
        out["reason"] = reason
    if error:
        out["errorMessage"] = error
    return out
