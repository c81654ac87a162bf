"""The OpenAPI 3 document of what this node serves, built from the route table (GET /openapi.json)."""

from __future__ import annotations

import re
from typing import Any, Iterable

from node.api.routing import Route

__all__ = ["openapi_document", "SCHEMAS"]

_S = {"type": "string"}
_TS = {"type": "string", "format": "date-time"}
_PROPS = {"type": "object", "description": "flat properties: dotted names to JSON values"}

# The request and response schemas the routes refer to, as in Golem's ya-client specs.
SCHEMAS: dict[str, Any] = {
    "ErrorMessage": {"type": "object", "properties": {"message": _S}},
    "Reason": {"type": "object", "required": ["message"], "properties": {"message": _S}, "additionalProperties": True},
    "DemandOfferBase": {
        "type": "object", "required": ["properties", "constraints"],
        "properties": {"properties": _PROPS, "constraints": _S},
    },
    "Demand": {
        "type": "object", "required": ["properties", "constraints", "demandId", "requestorId", "timestamp"],
        "properties": {"properties": _PROPS, "constraints": _S, "demandId": _S, "requestorId": _S, "timestamp": _TS},
    },
    "Offer": {
        "type": "object", "required": ["properties", "constraints", "offerId", "providerId", "timestamp"],
        "properties": {"properties": _PROPS, "constraints": _S, "offerId": _S, "providerId": _S, "timestamp": _TS},
    },
    "Proposal": {
        "type": "object", "required": ["properties", "constraints", "proposalId", "issuerId", "state", "timestamp"],
        "properties": {
            "properties": _PROPS, "constraints": _S, "proposalId": _S, "issuerId": _S, "timestamp": _TS,
            "state": {"type": "string", "enum": ["Initial", "Draft", "Rejected", "Accepted", "Expired"]},
            "prevProposalId": _S,
        },
    },
    "AgreementProposal": {
        "type": "object", "required": ["proposalId", "validTo"], "properties": {"proposalId": _S, "validTo": _TS},
    },
    "Agreement": {
        "type": "object", "required": ["agreementId", "demand", "offer", "validTo", "state", "timestamp"],
        "properties": {
            "agreementId": _S, "demand": {"$ref": "#/components/schemas/Demand"},
            "offer": {"$ref": "#/components/schemas/Offer"}, "validTo": _TS, "approvedDate": _TS,
            "state": {"type": "string", "enum": ["Proposal", "Pending", "Cancelled", "Rejected", "Approved", "Expired", "Terminated"]},
            "timestamp": _TS, "appSessionId": _S, "proposedSignature": _S, "approvedSignature": _S,
        },
    },
    "Event": {
        "type": "object", "required": ["eventType", "eventDate"],
        "properties": {"eventType": _S, "eventDate": _TS},
        "description": "ProposalEvent (proposal), ProposalRejectedEvent (proposalId, reason), AgreementEvent (agreement), "
                       "Agreement{Approved,Rejected,Cancelled,Terminated}Event (agreementId, reason, terminator, signature)",
    },
    "NewScan": {
        "type": "object", "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["offer", "demand"]}, "constraints": _S, "timeout": {"type": "number"}},
    },
    "CreateActivityRequest": {
        "type": "object", "required": ["agreementId"], "properties": {"agreementId": _S, "requestorPubKey": _S},
    },
    "CreateActivityResult": {"type": "object", "required": ["activityId"], "properties": {"activityId": _S}},
    "ExeScriptRequest": {
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string", "description": "a JSON array of commands: deploy, start, run, transfer, sign, terminate"}},
    },
    "ExeScriptCommandResult": {
        "type": "object", "required": ["index", "eventDate", "result"],
        "properties": {
            "index": {"type": "integer", "minimum": 0}, "eventDate": _TS, "result": {"type": "string", "enum": ["Ok", "Error"]},
            "stdout": _S, "stderr": _S, "message": _S, "isBatchFinished": {"type": "boolean"},
        },
    },
    "ActivityState": {
        "type": "object", "required": ["state"],
        "properties": {"state": {"type": "array", "items": {"type": "string", "nullable": True}}, "reason": _S, "errorMessage": _S},
    },
    "ActivityUsage": {
        "type": "object", "required": ["timestamp"],
        "properties": {"currentUsage": {"type": "array", "items": {"type": "number"}}, "timestamp": {"type": "integer"}},
    },
    "Identity": {
        "type": "object", "required": ["identity", "name", "role"], "properties": {"identity": _S, "name": _S, "role": _S},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}


def openapi_document(routes: Iterable[Route], version: str) -> dict[str, Any]:
    """The document: one operation per route, with its body, query and answers."""
    paths: dict[str, dict[str, Any]] = {}
    schemas = dict(SCHEMAS)
    for route in routes:
        op: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary, "tags": [route.tag]}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        params += [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in route.query]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": route.body.get("$ref", "").endswith("/Reason") is False,
                "content": {"application/json": {"schema": route.body}},
            }
        status, schema = route.ok
        ok: dict[str, Any] = {"description": "success"}
        if schema is not None:
            ok["content"] = {"application/json": {"schema": schema}}
        responses: dict[str, Any] = {str(status): ok}
        if route.body is not None or route.query:
            responses["400"] = _error("a malformed or out-of-range request")
        responses["401"] = _error("no app-key, or an unknown one")
        if "{" in route.path:
            responses["404"] = _error("no such resource")
        responses["default"] = _error("an error")
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.2",
        "info": {
            "title": "Loam node REST API",
            "version": version,
            "description": "Golem's REST API (market-api 1.7.0, activity-api 1.7.0, payment-api 1.6.3, net-api 0.1.0 "
                           "as far as listed) served by a Loam node. Every operation needs `Authorization: Bearer <app-key>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"app_key": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"app_key": {"type": "http", "scheme": "bearer"}}},
    }
