"""market-api v1: offers, demands, proposals, agreements and their events, over the MarketActor."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiohttp import web

from actors.market.events import (
    AgreementEvent,
    AgreementNotFoundError,
    InvalidTransitionError,
    ProposalEvent,
    ProposalRejectedEvent,
    SubscriptionNotFoundError,
)
from node.api import models
from node.api.errors import ApiError
from node.api.routing import ApiContext, Route, body_of, json_response, no_content
from node.api.validation import (
    MAX_POLL_S,
    agreement_proposal,
    demand_offer_base,
    query_float,
    query_int,
    query_time_ms,
    reason,
    require_object,
)

__all__ = ["market_routes", "PREFIX"]

PREFIX = "/market-api/v1"
_SUBSCRIPTION_TTL_S = 3600.0
_SCAN_TTL_S = 30.0
_MAX_SCANS = 1000


def _subscription_ttl(props: dict[str, Any]) -> float:
    """How long a demand or offer lives: an hour, or until its golem.srv.comp.expiration if sooner."""
    expiration = props.get("golem.srv.comp.expiration")
    if isinstance(expiration, (int, float)) and not isinstance(expiration, bool):
        left = expiration / 1000 - time.time()
        if 60 <= left < _SUBSCRIPTION_TTL_S:
            return left
    return _SUBSCRIPTION_TTL_S


# -- subscriptions -------------------------------------------------------------------------


async def _subscribe(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    props, cons = demand_offer_base(await body_of(request), f"the {kind}")
    method = ctx.market.subscribe_demand if kind == "demand" else ctx.market.subscribe_offer
    sub_id = await ctx.call(method, props, cons, "", _subscription_ttl(props))
    return json_response(sub_id, 201)


async def subscribe_demand(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /demands: publish a demand."""
    return await _subscribe(ctx, request, "demand")


async def subscribe_offer(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /offers: publish an offer."""
    return await _subscribe(ctx, request, "offer")


async def get_demands(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /demands: this node's active demands."""
    return json_response([models.demand_json(d) for d in await ctx.call(ctx.market.subscriptions, "demand")])


async def get_offers(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /offers: this node's active offers."""
    return json_response([models.offer_json(o) for o in await ctx.call(ctx.market.subscriptions, "offer")])


async def _unsubscribe(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    sub_id = request.match_info["subscriptionId"]
    ended: dict[str, None] = ctx.extra.setdefault("unsubscribed", {})
    try:
        await _own_subscription(ctx, sub_id, kind)
    except ApiError:
        if sub_id in ended:
            raise ApiError(410, f"{kind} subscription {sub_id} was unsubscribed already") from None
        raise
    await ctx.call(ctx.market.unsubscribe, sub_id)
    ended[sub_id] = None
    while len(ended) > _MAX_SCANS * 10:
        del ended[next(iter(ended))]
    return no_content()


async def unsubscribe_demand(ctx: ApiContext, request: web.Request) -> web.Response:
    """DELETE /demands/{subscriptionId}: withdraw a demand."""
    return await _unsubscribe(ctx, request, "demand")


async def unsubscribe_offer(ctx: ApiContext, request: web.Request) -> web.Response:
    """DELETE /offers/{subscriptionId}: withdraw an offer."""
    return await _unsubscribe(ctx, request, "offer")


async def _own_subscription(ctx: ApiContext, sub_id: str, kind: str) -> None:
    docs = await ctx.call(ctx.market.subscriptions, kind)
    key = "demand_id" if kind == "demand" else "offer_id"
    if not any(getattr(d, key) == sub_id for d in docs):
        raise ApiError(404, f"{kind} subscription {sub_id} not found (unknown, unsubscribed or expired)")


async def _collect(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    sub_id = request.match_info["subscriptionId"]
    timeout_s = min(query_float(request.query, "timeout", 5.0), MAX_POLL_S)
    max_events = query_int(request.query, "maxEvents", 10, minimum=1, maximum=100)
    await _own_subscription(ctx, sub_id, kind)
    queue = await ctx.call(ctx.market.subscription_queue, sub_id)
    try:
        events = await ctx.poll(lambda t: queue.take(max_events, t), timeout_s)
    except SubscriptionNotFoundError:
        raise ApiError(404, f"{kind} subscription {sub_id} ended (unsubscribed or expired)") from None
    out = []
    for event in events:
        if isinstance(event, ProposalEvent):
            out.append(models.proposal_event(event.event_ms, event.proposal))
        elif isinstance(event, ProposalRejectedEvent):
            out.append(models.proposal_rejected_event(event.event_ms, event.proposal_id, event.reason))
        elif isinstance(event, AgreementEvent):
            try:
                rec = await ctx.call(ctx.market.get_agreement, event.agreement_id)
            except AgreementNotFoundError:
                continue
            out.append(models.agreement_event(event.event_ms, rec))
    return json_response(out)


async def collect_offers(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /demands/{subscriptionId}/events: proposal events of a demand (long poll)."""
    return await _collect(ctx, request, "demand")


async def collect_demands(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /offers/{subscriptionId}/events: proposal and agreement events of an offer (long poll)."""
    return await _collect(ctx, request, "offer")


# -- proposals -----------------------------------------------------------------------------


async def _get_proposal(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    sub_id, pid = request.match_info["subscriptionId"], request.match_info["proposalId"]
    await _own_subscription(ctx, sub_id, kind)
    return json_response(models.proposal_json(await ctx.call(ctx.market.get_proposal, sub_id, pid)))


async def get_proposal_offer(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /demands/{subscriptionId}/proposals/{proposalId}: a proposal of a demand."""
    return await _get_proposal(ctx, request, "demand")


async def get_proposal_demand(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /offers/{subscriptionId}/proposals/{proposalId}: a proposal of an offer."""
    return await _get_proposal(ctx, request, "offer")


async def _counter(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    sub_id, pid = request.match_info["subscriptionId"], request.match_info["proposalId"]
    props, cons = demand_offer_base(await body_of(request), "the counter-proposal")
    await _own_subscription(ctx, sub_id, kind)
    try:
        new_id = await ctx.call(ctx.market.counter_proposal, sub_id, pid, props, cons)
    except InvalidTransitionError as exc:
        raise ApiError(410, str(exc)) from None  # the spec's "Proposal rejected" (or expired, or ours)
    return json_response(new_id, 201)


async def counter_proposal_demand(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /demands/{subscriptionId}/proposals/{proposalId}: counter a provider's proposal."""
    return await _counter(ctx, request, "demand")


async def counter_proposal_offer(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /offers/{subscriptionId}/proposals/{proposalId}: counter a requestor's proposal."""
    return await _counter(ctx, request, "offer")


async def _reject_proposal(ctx: ApiContext, request: web.Request, kind: str) -> web.Response:
    sub_id, pid = request.match_info["subscriptionId"], request.match_info["proposalId"]
    why = reason(await body_of(request, required=False))
    await _own_subscription(ctx, sub_id, kind)
    try:
        await ctx.call(ctx.market.reject_proposal, sub_id, pid, why)
    except InvalidTransitionError as exc:
        raise ApiError(410, str(exc)) from None  # the spec's "Proposal already rejected"
    return no_content()


async def reject_proposal_offer(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /demands/{subscriptionId}/proposals/{proposalId}/reject: reject a provider's proposal."""
    return await _reject_proposal(ctx, request, "demand")


async def reject_proposal_demand(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /offers/{subscriptionId}/proposals/{proposalId}/reject: reject a requestor's proposal."""
    return await _reject_proposal(ctx, request, "offer")


async def property_query(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /demands/{subscriptionId}/propertyQuery/{queryId}; POST /offers/{subscriptionId}/propertyQuery/{queryId}."""
    raise ApiError(404, f"property query {request.match_info['queryId']} not found (Loam's market sends none)")


# -- scan ----------------------------------------------------------------------------------


async def begin_scan(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /scan: start scanning the offers or demands this node has heard."""
    from protocol.constraints import parse

    obj = require_object(await body_of(request), "the scan")
    kind = obj.get("type")
    if kind not in ("offer", "demand"):
        raise ApiError(400, "a scan needs type, offer or demand")
    cons = obj.get("constraints")
    if cons is not None and not isinstance(cons, str):
        raise ApiError(400, "a scan's constraints must be a string")
    timeout = obj.get("timeout", _SCAN_TTL_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 3600:
        raise ApiError(400, "a scan's timeout must be 1 to 3600 seconds")
    constraint = parse(cons.strip() or "()") if cons else None
    scans: dict[str, dict[str, Any]] = ctx.extra.setdefault("scans", {})
    now = time.monotonic()
    for sid in [s for s, v in scans.items() if v["expires"] <= now]:
        del scans[sid]
    if len(scans) >= _MAX_SCANS:
        raise ApiError(429, "too many open scans on this node; close some first")
    scan_id = os.urandom(16).hex()
    scans[scan_id] = {"kind": kind, "constraint": constraint, "seen": set(), "ttl": float(timeout), "expires": now + timeout}
    return json_response(scan_id, 201)


async def collect_scan(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /scan/{subscriptionId}/events: offers or demands of a scan not returned before (long poll)."""
    from protocol.constraints import Tri

    scan_id = request.match_info["subscriptionId"]
    _scan(ctx, scan_id)
    timeout_s = min(query_float(request.query, "timeout", 5.0), MAX_POLL_S)
    max_events = query_int(request.query, "maxEvents", 10, minimum=1, maximum=100)
    peer = request.query.get("peerId") or None
    deadline = time.monotonic() + timeout_s
    while True:
        scan = _scan(ctx, scan_id)  # it may have been ended meanwhile
        scan["expires"] = time.monotonic() + scan["ttl"]
        if scan["kind"] == "offer":
            docs = [(o.offer_id, o.provider_id, models.offer_json(o), o.properties) for o in await ctx.call(ctx.market.known_offers)]
        else:
            docs = [(d.demand_id, d.requestor_id, models.demand_json(d), d.properties) for d in await ctx.call(ctx.market.known_demands)]
        out = []
        for doc_id, node_id, doc, props in docs:
            if doc_id in scan["seen"] or (peer is not None and node_id.lower() != peer.lower()):
                continue
            if scan["constraint"] is not None and scan["constraint"].evaluate(props) is not Tri.TRUE:
                continue
            scan["seen"].add(doc_id)
            out.append(doc)
            if len(out) >= max_events:
                break
        if out or time.monotonic() >= deadline:
            return json_response(out)
        # Offers and demands arrive by gossip; look again shortly.
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


async def end_scan(ctx: ApiContext, request: web.Request) -> web.Response:
    """DELETE /scan/{subscriptionId}/events: end a scan."""
    scan_id = request.match_info["subscriptionId"]
    _scan(ctx, scan_id)
    del ctx.extra["scans"][scan_id]
    return web.Response(status=201)  # what the spec says "scan deleted" answers


def _scan(ctx: ApiContext, scan_id: str) -> dict[str, Any]:
    scan = ctx.extra.get("scans", {}).get(scan_id)
    if scan is None or scan["expires"] <= time.monotonic():
        raise ApiError(404, f"scan {scan_id} not found (unknown, ended or expired)")
    return scan


# -- agreements ----------------------------------------------------------------------------


async def create_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements: make an agreement from a provider's proposal."""
    proposal_id, valid_to_ms = agreement_proposal(await body_of(request))
    agreement_id = await ctx.call(ctx.market.create_agreement, proposal_id, valid_to_ms)
    return json_response(agreement_id, 201)


async def list_agreements(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /agreements: this node's agreements."""
    state = request.query.get("state") or None
    if state is not None and state not in _AGREEMENT_STATES:
        raise ApiError(400, f"state must be one of {', '.join(_AGREEMENT_STATES)}")
    after = query_time_ms(request.query, "afterDate")
    before = query_time_ms(request.query, "beforeDate")
    session = request.query.get("appSessionId") or None
    out = []
    for rec in sorted(await ctx.call(ctx.market.list_agreements, state), key=lambda r: r.terms.created_ms):
        created = rec.terms.created_ms
        if (after is not None and created <= after) or (before is not None and created >= before):
            continue
        if session is not None and rec.terms.app_session_id != session:
            continue
        out.append(models.agreement_list_entry(rec))
    return json_response(out)


_AGREEMENT_STATES = ("Proposal", "Pending", "Cancelled", "Rejected", "Approved", "Expired", "Terminated")


async def get_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /agreements/{agreementId}: an agreement."""
    return json_response(models.agreement_json(await ctx.call(ctx.market.get_agreement, request.match_info["agreementId"])))


async def confirm_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/confirm: sign and send an agreement to its provider."""
    agreement_id = request.match_info["agreementId"]
    session = request.query.get("appSessionId", "")
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "requestor":
        raise ApiError(404, f"agreement {agreement_id} is not one this node proposes")
    if rec.state != "Proposal":
        raise ApiError(409 if rec.state in ("Pending", "Approved") else 410, f"agreement {agreement_id} is {rec.state}")
    await ctx.call(ctx.market.confirm_agreement, agreement_id, session)
    return no_content()


async def wait_for_approval(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/wait: wait for the provider's answer."""
    from actors.market.actor import wait_for_agreement

    agreement_id = request.match_info["agreementId"]
    timeout_s = query_float(request.query, "timeout", 5.0)
    timeout_s = MAX_POLL_S if timeout_s == 0 else min(timeout_s, MAX_POLL_S)
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "requestor":
        raise ApiError(404, f"agreement {agreement_id} is not one this node proposes")
    state = await ctx.poll(
        lambda t: wait_for_agreement(ctx.market, agreement_id, t, ctx.ask_timeout_s),
        timeout_s,
        lambda s: s not in ("Proposal", "Pending"),
    )
    if state == "Approved":
        return no_content()
    if state in ("Proposal", "Pending"):
        raise ApiError(408, f"agreement {agreement_id} is still {state} after {timeout_s} s")
    raise ApiError(410, state)


async def cancel_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/cancel: withdraw an agreement not yet approved."""
    agreement_id = request.match_info["agreementId"]
    why = reason(await body_of(request, required=False))
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "requestor":
        raise ApiError(404, f"agreement {agreement_id} is not one this node proposed")
    if rec.state == "Cancelled":
        return no_content()  # a repeat is a no-op
    if rec.state not in ("Proposal", "Pending"):
        raise ApiError(409 if rec.state == "Approved" else 410, f"agreement {agreement_id} is {rec.state}")
    await ctx.call(ctx.market.cancel_agreement, agreement_id, why)
    return no_content()


async def terminate_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/terminate: end an approved agreement (repeats are no-ops)."""
    agreement_id = request.match_info["agreementId"]
    why = reason(await body_of(request, required=False))
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.state == "Terminated":
        return no_content()  # a repeat is a no-op
    if rec.state in ("Proposal", "Pending"):
        raise ApiError(409, f"agreement {agreement_id} is {rec.state}; it can be terminated once Approved")
    if rec.state != "Approved":
        raise ApiError(410, rec.state)
    await ctx.call(ctx.market.terminate_agreement, agreement_id, why)
    return no_content()


async def terminate_reason(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/terminate/reason: why an agreement was terminated."""
    agreement_id = request.match_info["agreementId"]
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.state != "Terminated":
        raise ApiError(409, f"agreement {agreement_id} is {rec.state}, not Terminated")
    from actors.market.events import AgreementOperationEvent

    side = "Requestor" if rec.terminator == rec.terms.requestor_id else "Provider"
    event = AgreementOperationEvent(rec.end_ms or rec.updated_ms, agreement_id, "AgreementTerminatedEvent", side, rec.reason or {"message": ""})
    return json_response(models.agreement_operation_event(event, rec))


async def approve_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/approve: approve an agreement proposed to this node."""
    agreement_id = request.match_info["agreementId"]
    query_float(request.query, "timeout", 5.0)
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "provider":
        raise ApiError(404, f"agreement {agreement_id} is not one proposed to this node")
    if rec.state not in ("Pending", "Approved"):
        raise ApiError(410, rec.state)
    await ctx.call(ctx.market.approve_agreement, agreement_id)
    return no_content()


async def reject_agreement(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /agreements/{agreementId}/reject: reject an agreement proposed to this node."""
    agreement_id = request.match_info["agreementId"]
    why = reason(await body_of(request, required=False))
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "provider":
        raise ApiError(404, f"agreement {agreement_id} is not one proposed to this node")
    if rec.state == "Rejected":
        return no_content()
    if rec.state != "Pending":
        raise ApiError(410, rec.state)
    await ctx.call(ctx.market.reject_agreement, agreement_id, why)
    return no_content()


async def collect_agreement_events(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /agreementEvents: agreement events after a time (long poll)."""
    timeout_s = min(query_float(request.query, "timeout", 5.0), MAX_POLL_S)
    max_events = query_int(request.query, "maxEvents", 10, minimum=1, maximum=100)
    after = query_time_ms(request.query, "afterTimestamp")
    session = request.query.get("appSessionId") or None
    log = await ctx.call(ctx.market.event_log)
    mark = after if after is not None else 0
    deadline = time.monotonic() + timeout_s
    while True:
        events = await ctx.poll(
            lambda t: log.after(mark, 100 if session else max_events, t), max(0.0, deadline - time.monotonic())
        )
        out = []
        for event in events:
            mark = event.event_ms
            try:
                rec = await ctx.call(ctx.market.get_agreement, event.agreement_id)
            except AgreementNotFoundError:
                rec = None
            if session is not None and (rec is None or rec.terms.app_session_id != session):
                continue
            out.append(models.agreement_operation_event(event, rec))
            if len(out) >= max_events:
                break
        if out or not events or time.monotonic() >= deadline:
            return json_response(out)


def market_routes() -> list[Route]:
    """The market-api operations this node serves."""
    p = PREFIX
    base = {"$ref": "#/components/schemas/DemandOfferBase"}
    reason_s = {"$ref": "#/components/schemas/Reason"}
    s = {"type": "string"}
    ev = {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
    poll = (("timeout", {"type": "number", "minimum": 0}), ("maxEvents", {"type": "integer", "minimum": 1, "maximum": 100}))
    r = Route
    return [
        r("POST", f"{p}/demands", subscribe_demand, "Publish a demand", "subscribeDemand", "market", base, (201, s)),
        r("GET", f"{p}/demands", get_demands, "This node's active demands", "getDemands", "market",
          ok=(200, {"type": "array", "items": {"$ref": "#/components/schemas/Demand"}})),
        r("DELETE", f"{p}/demands/{{subscriptionId}}", unsubscribe_demand, "Withdraw a demand", "unsubscribeDemand", "market", ok=(204, None)),
        r("GET", f"{p}/demands/{{subscriptionId}}/events", collect_offers, "Proposal events of a demand (long poll)",
          "collectOffers", "market", ok=(200, ev), query=poll),
        r("GET", f"{p}/demands/{{subscriptionId}}/proposals/{{proposalId}}", get_proposal_offer, "A proposal of a demand",
          "getProposalOffer", "market", ok=(200, {"$ref": "#/components/schemas/Proposal"})),
        r("POST", f"{p}/demands/{{subscriptionId}}/proposals/{{proposalId}}", counter_proposal_demand,
          "Counter a provider's proposal", "counterProposalDemand", "market", base, (201, s)),
        r("POST", f"{p}/demands/{{subscriptionId}}/proposals/{{proposalId}}/reject", reject_proposal_offer,
          "Reject a provider's proposal", "rejectProposalOffer", "market", reason_s, (204, None)),
        r("POST", f"{p}/demands/{{subscriptionId}}/propertyQuery/{{queryId}}", property_query,
          "Answer a property query (none are ever sent: always 404)", "queryReplyDemands", "market", {"type": "object"}, (204, None)),
        r("POST", f"{p}/offers", subscribe_offer, "Publish an offer", "subscribeOffer", "market", base, (201, s)),
        r("GET", f"{p}/offers", get_offers, "This node's active offers", "getOffers", "market",
          ok=(200, {"type": "array", "items": {"$ref": "#/components/schemas/Offer"}})),
        r("DELETE", f"{p}/offers/{{subscriptionId}}", unsubscribe_offer, "Withdraw an offer", "unsubscribeOffer", "market", ok=(204, None)),
        r("GET", f"{p}/offers/{{subscriptionId}}/events", collect_demands, "Proposal and agreement events of an offer (long poll)",
          "collectDemands", "market", ok=(200, ev), query=poll),
        r("GET", f"{p}/offers/{{subscriptionId}}/proposals/{{proposalId}}", get_proposal_demand, "A proposal of an offer",
          "getProposalDemand", "market", ok=(200, {"$ref": "#/components/schemas/Proposal"})),
        r("POST", f"{p}/offers/{{subscriptionId}}/proposals/{{proposalId}}", counter_proposal_offer,
          "Counter a requestor's proposal", "counterProposalOffer", "market", base, (201, s)),
        r("POST", f"{p}/offers/{{subscriptionId}}/proposals/{{proposalId}}/reject", reject_proposal_demand,
          "Reject a requestor's proposal", "rejectProposalDemand", "market", reason_s, (204, None)),
        r("POST", f"{p}/offers/{{subscriptionId}}/propertyQuery/{{queryId}}", property_query,
          "Answer a property query (none are ever sent: always 404)", "queryReplyOffers", "market", {"type": "object"}, (204, None)),
        r("POST", f"{p}/scan", begin_scan, "Start scanning the offers or demands this node has heard", "beginScan", "market",
          {"$ref": "#/components/schemas/NewScan"}, (201, s)),
        r("GET", f"{p}/scan/{{subscriptionId}}/events", collect_scan, "Offers or demands of a scan not returned before (long poll)",
          "collectScanResults", "market", ok=(200, {"type": "array", "items": {"type": "object"}}),
          query=(*poll, ("peerId", s))),
        r("DELETE", f"{p}/scan/{{subscriptionId}}/events", end_scan, "End a scan", "endScan", "market", ok=(201, None)),
        r("POST", f"{p}/agreements", create_agreement, "Make an agreement from a provider's proposal", "createAgreement",
          "market", {"$ref": "#/components/schemas/AgreementProposal"}, (201, s)),
        r("GET", f"{p}/agreements", list_agreements, "This node's agreements", "listAgreements", "market",
          ok=(200, {"type": "array", "items": {"type": "object"}}),
          query=(("state", s), ("afterDate", s), ("beforeDate", s), ("appSessionId", s))),
        r("GET", f"{p}/agreements/{{agreementId}}", get_agreement, "An agreement", "getAgreement", "market",
          ok=(200, {"$ref": "#/components/schemas/Agreement"})),
        r("POST", f"{p}/agreements/{{agreementId}}/confirm", confirm_agreement, "Sign and send an agreement to its provider",
          "confirmAgreement", "market", ok=(204, None), query=(("appSessionId", s),)),
        r("POST", f"{p}/agreements/{{agreementId}}/wait", wait_for_approval, "Wait for the provider's answer",
          "waitForApproval", "market", ok=(204, None), query=(("timeout", {"type": "number", "minimum": 0}),)),
        r("POST", f"{p}/agreements/{{agreementId}}/cancel", cancel_agreement, "Withdraw an agreement not yet approved",
          "cancelAgreement", "market", reason_s, (204, None)),
        r("POST", f"{p}/agreements/{{agreementId}}/terminate", terminate_agreement, "End an approved agreement (repeats are no-ops)",
          "terminateAgreement", "market", reason_s, (204, None)),
        r("POST", f"{p}/agreements/{{agreementId}}/terminate/reason", terminate_reason, "Why an agreement was terminated",
          "getTerminateAgreementReason", "market", ok=(200, {"type": "object"})),
        r("POST", f"{p}/agreements/{{agreementId}}/approve", approve_agreement, "Approve an agreement proposed to this node",
          "approveAgreement", "market", ok=(204, None), query=(("timeout", {"type": "number", "minimum": 0}), ("appSessionId", s))),
        r("POST", f"{p}/agreements/{{agreementId}}/reject", reject_agreement, "Reject an agreement proposed to this node",
          "rejectAgreement", "market", reason_s, (204, None)),
        r("GET", f"{p}/agreementEvents", collect_agreement_events, "Agreement events after a time (long poll)",
          "collectAgreementEvents", "market", ok=(200, ev),
          query=(*poll, ("afterTimestamp", s), ("appSessionId", s))),
    ]
