"""payment-api v1: accounts, allocations, demand decorations, debit notes, invoices, their events, payments.

Over the PaymentLedgerActor's proxy. Amounts in Golem's JSON are decimal strings of GLM
(exact: wei / 10**18); the ledger counts wei.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from node.api import models
from node.api.errors import ApiError
from node.api.routing import ApiContext, Route, body_of, json_response
from node.api.validation import MAX_POLL_S, parse_time_ms, query_float, query_int, query_time_ms, require_object

__all__ = ["payment_routes", "PREFIX", "glm", "parse_glm_wei", "REJECTION_REASONS"]

PREFIX = "/payment-api/v1"
WEI_PER_GLM = 10**18
DEBIT_NOTE, INVOICE = "debit_note", "invoice"
# Golem's RejectionReason and the ledger's names for the same reasons.
REJECTION_REASONS = {
    "UNSOLICITED_SERVICE": "UnsolicitedService",
    "BAD_SERVICE": "BadService",
    "INCORRECT_AMOUNT": "IncorrectAmount",
}
_TO_GOLEM_REASON = {v: k for k, v in REJECTION_REASONS.items()}


def glm(amount_wei: int) -> str:
    """wei as an exact decimal string of GLM.

    >>> glm(1_500_000_000_000_000_000), glm(1), glm(0)
    ('1.5', '0.000000000000000001', '0')
    """
    whole, frac = divmod(int(amount_wei), WEI_PER_GLM)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:018d}".rstrip("0")


def parse_glm_wei(text: Any, what: str) -> int:
    """A GLM decimal string as wei (rounded down past 18 decimals).

    Raises:
        ApiError: 400 unless a finite non-negative number written as a string.
    """
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, f"{what} must be an amount of GLM written as a decimal string")
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ApiError(400, f"{what} {text!r} is not an amount of GLM") from None
    if not amount.is_finite() or amount < 0:
        raise ApiError(400, f"{what} {text!r} must be a finite, non-negative amount of GLM")
    if amount > Decimal(10) ** 30:
        raise ApiError(400, f"{what} {text!r} is more GLM than exist")
    return int((amount * WEI_PER_GLM).to_integral_value(rounding="ROUND_FLOOR"))


def _status(status: str) -> str:
    return status.upper()


def allocation_json(a: Any) -> dict[str, Any]:
    """An Allocation."""
    remaining = a.remaining_wei() if callable(a.remaining_wei) else a.remaining_wei
    out: dict[str, Any] = {
        "allocationId": a.allocation_id, "address": a.address, "paymentPlatform": a.platform,
        "totalAmount": glm(a.total_wei), "spentAmount": glm(a.spent_wei), "remainingAmount": glm(remaining),
        "timestamp": models.timestamp(a.updated_ms or a.created_ms), "makeDeposit": bool(a.make_deposit),
    }
    if a.timeout_ms is not None:
        out["timeout"] = models.timestamp(a.timeout_ms)
    return out


def debit_note_json(rec: Any) -> dict[str, Any]:
    """A DebitNote (payee = issuer, payer = recipient: node ids are the accounts)."""
    d = rec.document
    out: dict[str, Any] = {
        "debitNoteId": d.debit_note_id, "issuerId": d.issuer_id, "recipientId": d.recipient_id,
        "payeeAddr": d.issuer_id, "payerAddr": d.recipient_id, "paymentPlatform": d.payment_platform,
        "timestamp": models.timestamp(d.timestamp_ms), "agreementId": d.agreement_id, "activityId": d.activity_id,
        "totalAmountDue": glm(int(d.total_amount_due_wei)), "usageCounterVector": list(d.usage_counter_vector),
        "status": _status(rec.status),
    }
    if d.previous_debit_note_id:
        out["previousDebitNoteId"] = d.previous_debit_note_id
    if d.payment_due_ms is not None:
        out["paymentDueDate"] = models.timestamp(d.payment_due_ms)
    return out


def invoice_json(rec: Any) -> dict[str, Any]:
    """An Invoice."""
    d = rec.document
    return {
        "invoiceId": d.invoice_id, "issuerId": d.issuer_id, "recipientId": d.recipient_id,
        "payeeAddr": d.issuer_id, "payerAddr": d.recipient_id, "paymentPlatform": d.payment_platform,
        "timestamp": models.timestamp(d.timestamp_ms), "agreementId": d.agreement_id,
        "activityIds": list(d.activity_ids), "amount": glm(int(d.amount_wei)),
        "paymentDueDate": models.timestamp(d.payment_due_ms), "status": _status(rec.status),
    }


def payment_json(rec: Any) -> dict[str, Any]:
    """A Payment, from the payer's signed notice."""
    p = rec.payment
    tx = p.tx_hash[2:] if p.tx_hash.startswith("0x") else p.tx_hash
    try:
        details = base64.b64encode(bytes.fromhex(tx)).decode()
    except ValueError:
        details = ""
    return {
        "paymentId": p.payment_id, "payerId": p.payer_id, "payeeId": p.payee_id,
        "payerAddr": p.payer_id, "payeeAddr": p.payee_id, "paymentPlatform": p.platform,
        "amount": glm(int(p.amount_wei)), "timestamp": models.timestamp(p.timestamp_ms),
        "agreementPayments": [{"agreementId": a, "amount": glm(int(w))} for a, w in p.agreement_amounts],
        "activityPayments": [], "details": details,
    }


def event_json(event: Any) -> dict[str, Any]:
    """A DebitNote…Event or Invoice…Event."""
    prefix, key = ("DebitNote", "debitNoteId") if event.kind == DEBIT_NOTE else ("Invoice", "invoiceId")
    out: dict[str, Any] = {
        "eventType": f"{prefix}{event.event_type}Event", "eventDate": models.timestamp(event.event_ms), key: event.document_id,
    }
    if event.event_type == "Rejected" and event.reason:
        r = event.reason
        rejection: dict[str, Any] = {
            "rejectionReason": _TO_GOLEM_REASON.get(str(r.get("rejectionReason")), str(r.get("rejectionReason"))),
            "totalAmountAccepted": glm(int(r.get("totalAmountAccepted") or 0)),
        }
        if r.get("message"):
            rejection["message"] = str(r["message"])
        out["rejection"] = rejection
    return out


# -- accounts and allocations ------------------------------------------------------------


async def requestor_accounts(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /requestorAccounts: accounts this node pays from."""
    return json_response([_account(a) for a in await ctx.call(ctx.payment.accounts) if a.send])


async def provider_accounts(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /providerAccounts: accounts this node is paid to."""
    return json_response([_account(a) for a in await ctx.call(ctx.payment.accounts) if a.receive])


def _account(a: Any) -> dict[str, Any]:
    return {
        "platform": a.platform, "address": a.address, "driver": a.driver, "network": a.network, "token": a.token,
        "send": a.send, "receive": a.receive,
    }


def _platform(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        parts = [value.get(k) for k in ("driver", "network", "token")]
        if any(p is not None and not isinstance(p, str) for p in parts):
            raise ApiError(400, "paymentPlatform's driver, network and token must be strings")
        driver, network, token = parts
        if not network:
            return None  # the default platform
        if token is None:
            token = "glm" if network in ("mainnet", "polygon") else "tglm"
        return f"{driver or 'erc20'}-{network}-{token}".lower()
    raise ApiError(400, "paymentPlatform must be a string or {driver, network, token}")


async def create_allocation(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /allocations: set GLM aside for work."""
    obj = require_object(await body_of(request), "the allocation")
    total_wei = parse_glm_wei(obj.get("totalAmount"), "totalAmount")
    if total_wei <= 0:
        raise ApiError(400, "totalAmount must be more than 0")
    address = obj.get("address")
    if address is not None and not isinstance(address, str):
        raise ApiError(400, "address must be a string")
    platform = _platform(obj.get("paymentPlatform"))
    timeout = obj.get("timeout")
    if timeout is not None and not isinstance(timeout, str):
        raise ApiError(400, "timeout must be an RFC 3339 date-time string")
    timeout_ms = parse_time_ms(timeout, "timeout") if timeout else None
    make_deposit = obj.get("makeDeposit", False)
    if not isinstance(make_deposit, bool):
        raise ApiError(400, "makeDeposit must be a boolean")
    if obj.get("deposit") is not None:
        raise ApiError(400, "deposits (allocation.deposit) are not supported by this node")
    a = await ctx.call(ctx.payment.create_allocation, total_wei, platform, address or None, timeout_ms, make_deposit)
    return json_response(allocation_json(a), 201)


async def get_allocations(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /allocations: allocations not released."""
    after = query_time_ms(request.query, "afterTimestamp")
    limit = query_int(request.query, "maxItems", 1000, minimum=1, maximum=100_000)
    out = [a for a in await ctx.call(ctx.payment.allocations) if after is None or (a.updated_ms or a.created_ms) > after]
    return json_response([allocation_json(a) for a in out[:limit]])


async def get_allocation(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /allocations/{allocationId}: an allocation."""
    return json_response(allocation_json(await ctx.call(ctx.payment.allocation, request.match_info["allocationId"])))


async def amend_allocation(ctx: ApiContext, request: web.Request) -> web.Response:
    """PUT /allocations/{allocationId}: change an allocation's total or timeout."""
    allocation_id = request.match_info["allocationId"]
    obj = require_object(await body_of(request), "the allocation update")
    current = await ctx.call(ctx.payment.allocation, allocation_id)
    total_wei = current.total_wei if obj.get("totalAmount") is None else parse_glm_wei(obj["totalAmount"], "totalAmount")
    timeout = obj.get("timeout")
    if timeout is not None and not isinstance(timeout, str):
        raise ApiError(400, "timeout must be an RFC 3339 date-time string")
    timeout_ms = parse_time_ms(timeout, "timeout") if timeout else None
    a = await ctx.call(ctx.payment.amend_allocation, allocation_id, total_wei, timeout_ms)
    return json_response(allocation_json(a))


async def release_allocation(ctx: ApiContext, request: web.Request) -> web.Response:
    """DELETE /allocations/{allocationId}: release an allocation."""
    await ctx.call(ctx.payment.release_allocation, request.match_info["allocationId"])
    return web.Response(status=200)


async def demand_decorations(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /demandDecorations: properties and constraints a demand paid from allocations needs."""
    raw = request.query.getall("allocationIds", [])
    ids = [i for part in raw for i in part.split(",") if i]
    if not ids:
        raise ApiError(400, "query parameter allocationIds (comma-separated allocation ids) is required")
    props, constraints = await ctx.call(ctx.payment.demand_decoration, ids)
    return json_response({
        "properties": [{"key": k, "value": v if isinstance(v, str) else _plain(v)} for k, v in props.items()],
        "constraints": list(constraints),
    })


def _plain(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)


# -- debit notes and invoices --------------------------------------------------------------


def _kind_of(request: web.Request) -> str:
    return DEBIT_NOTE if "/debitNote" in request.path else INVOICE


def _doc_json(kind: str, rec: Any) -> dict[str, Any]:
    return debit_note_json(rec) if kind == DEBIT_NOTE else invoice_json(rec)


async def get_documents(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /debitNotes; GET /invoices."""
    kind = _kind_of(request)
    after = query_time_ms(request.query, "afterTimestamp")
    limit = query_int(request.query, "maxItems", 1000, minimum=1, maximum=100_000)
    docs = sorted(await ctx.call(ctx.payment.documents, kind), key=lambda r: r.document.timestamp_ms)
    out = [_doc_json(kind, r) for r in docs if after is None or r.document.timestamp_ms > after]
    return json_response(out[:limit])


async def get_document(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /debitNotes/{debitNoteId}; GET /invoices/{invoiceId}."""
    kind = _kind_of(request)
    doc_id = request.match_info["debitNoteId" if kind == DEBIT_NOTE else "invoiceId"]
    return json_response(_doc_json(kind, await ctx.call(ctx.payment.document, kind, doc_id)))


async def accept_document(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /debitNotes/{debitNoteId}/accept; POST /invoices/{invoiceId}/accept."""
    kind = _kind_of(request)
    doc_id = request.match_info["debitNoteId" if kind == DEBIT_NOTE else "invoiceId"]
    query_float(request.query, "timeout", 5.0)
    obj = require_object(await body_of(request), "the acceptance")
    amount_wei = parse_glm_wei(obj.get("totalAmountAccepted"), "totalAmountAccepted")
    allocation_id = obj.get("allocationId")
    if not isinstance(allocation_id, str) or not allocation_id:
        raise ApiError(400, "the acceptance needs allocationId, a non-empty string")
    await ctx.call(ctx.payment.accept_document, kind, doc_id, amount_wei, allocation_id)
    return web.Response(status=200)


async def reject_document(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /debitNotes/{debitNoteId}/reject; POST /invoices/{invoiceId}/reject."""
    kind = _kind_of(request)
    doc_id = request.match_info["debitNoteId" if kind == DEBIT_NOTE else "invoiceId"]
    query_float(request.query, "timeout", 5.0)
    obj = require_object(await body_of(request), "the rejection")
    reason = REJECTION_REASONS.get(obj.get("rejectionReason"))  # type: ignore[arg-type]
    if reason is None:
        raise ApiError(400, f"rejectionReason must be one of {', '.join(REJECTION_REASONS)}")
    amount_wei = parse_glm_wei(obj.get("totalAmountAccepted"), "totalAmountAccepted")
    message = obj.get("message", "")
    if message is not None and not isinstance(message, str):
        raise ApiError(400, "message must be a string")
    await ctx.call(ctx.payment.reject_document, kind, doc_id, reason, message or "", amount_wei)
    return web.Response(status=200)


async def not_supported(ctx: ApiContext, request: web.Request) -> web.Response:
    """Issuing, sending and cancelling debit notes and invoices: 501, the provider does it itself."""
    raise ApiError(501, f"{request.method} {request.path} is not supported: this node's provider issues, sends and "
                        "cancels its debit notes and invoices itself")


async def document_events(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /debitNoteEvents; GET /invoiceEvents."""
    kind = _kind_of(request)
    timeout_s = min(query_float(request.query, "timeout", 5.0), MAX_POLL_S)
    max_events = query_int(request.query, "maxEvents", 10, minimum=1, maximum=100)
    after = query_time_ms(request.query, "afterTimestamp")
    log = await ctx.call(ctx.payment.event_log)
    mark = after if after is not None else 0
    events = await ctx.poll(lambda t: log.after(kind, mark, max_events, t), timeout_s)
    return json_response([event_json(e) for e in events])


# -- payments ------------------------------------------------------------------------------


async def get_payments(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /payments; GET /debitNotes/{debitNoteId}/payments; GET /invoices/{invoiceId}/payments."""
    after = query_time_ms(request.query, "afterTimestamp")
    limit = query_int(request.query, "maxItems", 1000, minimum=1, maximum=100_000)
    recs = sorted(await ctx.call(ctx.payment.payments), key=lambda r: r.payment.timestamp_ms)
    doc_id = request.match_info.get("debitNoteId") or request.match_info.get("invoiceId")
    out = [
        payment_json(r) for r in recs
        if (after is None or r.payment.timestamp_ms > after) and (doc_id is None or doc_id in r.payment.document_ids)
    ]
    return json_response(out[:limit])


async def get_payment(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /payments/{paymentId}: a payment."""
    payment_id = request.match_info["paymentId"]
    for rec in await ctx.call(ctx.payment.payments):
        if rec.payment.payment_id == payment_id:
            return json_response(payment_json(rec))
    raise ApiError(404, f"payment {payment_id} not found")


async def payments_status(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /payments/status: problems the payment driver knows of (no gas, no tokens, no RPC)."""
    network = request.query.get("network") or None
    driver = request.query.get("driver") or None
    balances = await ctx.call(ctx.payment.balances)
    out = []
    for platform, bal in sorted(balances.items()):
        parts = platform.split("-")
        if len(parts) != 3 or (network and parts[1] != network) or (driver and parts[0] != driver):
            continue
        base = {"driver": parts[0], "network": parts[1], "address": bal.address}
        if bal.gas_wei is not None and bal.gas_wei == 0:
            out.append({"kind": "InsufficientGas", **base})
        if bal.token_wei is not None and bal.token_wei == 0:
            out.append({"kind": "InsufficientToken", **base})
        if bal.token_wei is None or bal.gas_wei is None:
            out.append({"kind": "RpcError", "driver": parts[0], "network": parts[1]})
    return json_response(out)


def payment_routes() -> list[Route]:
    """The payment-api operations this node serves."""
    p = PREFIX
    obj = {"type": "object"}
    arr = {"type": "array", "items": {"type": "object"}}
    t = {"type": "string", "format": "date-time"}
    poll = (("timeout", {"type": "number", "minimum": 0}), ("afterTimestamp", t),
            ("maxEvents", {"type": "integer", "minimum": 1, "maximum": 100}), ("appSessionId", {"type": "string"}))
    items = (("afterTimestamp", t), ("maxItems", {"type": "integer", "minimum": 1}))
    ack = (("timeout", {"type": "number", "minimum": 0}),)
    r = Route
    routes = [
        r("GET", f"{p}/requestorAccounts", requestor_accounts, "Accounts this node pays from", "getRequestorAccounts", "payment", ok=(200, arr)),
        r("GET", f"{p}/providerAccounts", provider_accounts, "Accounts this node is paid to", "getProviderAccounts", "payment", ok=(200, arr)),
        r("POST", f"{p}/allocations", create_allocation, "Set GLM aside for work", "createAllocation", "payment", obj, (201, obj)),
        r("GET", f"{p}/allocations", get_allocations, "Allocations not released", "getAllocations", "payment", ok=(200, arr), query=items),
        r("GET", f"{p}/allocations/{{allocationId}}", get_allocation, "An allocation", "getAllocation", "payment", ok=(200, obj)),
        r("PUT", f"{p}/allocations/{{allocationId}}", amend_allocation, "Change an allocation's total or timeout",
          "amendAllocation", "payment", obj, (200, obj)),
        r("DELETE", f"{p}/allocations/{{allocationId}}", release_allocation, "Release an allocation", "releaseAllocation", "payment", ok=(200, None)),
        r("GET", f"{p}/demandDecorations", demand_decorations, "Properties and constraints a demand paid from allocations needs",
          "getDemandDecorations", "payment", ok=(200, obj), query=(("allocationIds", {"type": "string"}),)),
        r("GET", f"{p}/payments", get_payments, "Payments made and received", "getPayments", "payment", ok=(200, arr), query=items),
        # Before {paymentId}, which would take "status" for an id.
        r("GET", f"{p}/payments/status", payments_status, "Problems the payment driver knows of (no gas, no tokens, no RPC)",
          "paymentsStatus", "payment", ok=(200, arr), query=(("network", {"type": "string"}), ("driver", {"type": "string"}))),
        r("GET", f"{p}/payments/{{paymentId}}", get_payment, "A payment", "getPayment", "payment", ok=(200, obj)),
    ]
    for name, key, tag in (("debitNotes", "debitNoteId", "DebitNote"), ("invoices", "invoiceId", "Invoice")):
        doc = f"{p}/{name}/{{{key}}}"
        routes += [
            r("GET", f"{p}/{name}", get_documents, f"{tag}s issued and received", f"get{tag}s", "payment", ok=(200, arr), query=items),
            r("GET", doc, get_document, f"A {tag}", f"get{tag}", "payment", ok=(200, obj)),
            r("GET", f"{doc}/payments", get_payments, f"Payments for a {tag}", f"getPaymentsFor{tag}", "payment", ok=(200, arr), query=items),
            r("POST", f"{doc}/accept", accept_document, f"Accept a {tag} received, paying from an allocation",
              f"accept{tag}", "payment", obj, (200, None), query=ack),
            r("POST", f"{doc}/reject", reject_document, f"Reject a {tag} received", f"reject{tag}", "payment", obj, (200, None), query=ack),
            r("GET", f"{p}/{name[:-1]}Events", document_events, f"{tag} events after a time (long poll)",
              f"get{tag}Events", "payment", ok=(200, arr), query=poll),
            r("POST", f"{p}/{name}", not_supported, f"Issue a {tag} (501: the provider does it itself)", f"issue{tag}", "payment", obj, (501, None)),
            r("POST", f"{doc}/send", not_supported, f"Send a {tag} (501)", f"send{tag}", "payment", ok=(501, None)),
            r("POST", f"{doc}/cancel", not_supported, f"Cancel a {tag} (501)", f"cancel{tag}", "payment", ok=(501, None)),
        ]
    return routes
