"""The node serves every operation of Golem's OpenAPI files (node/api/spec/), and nothing else under their prefixes."""

from __future__ import annotations

import re
from pathlib import Path

from node.api.server import all_routes

SPEC = Path(__file__).resolve().parents[3] / "node" / "api" / "spec"
PREFIXES = {
    "market-api.yaml": "/market-api/v1",
    "activity-api.yaml": "/activity-api/v1",
    "payment-api.yaml": "/payment-api/v1",
    "net-api.yaml": "/net-api/v1",
    "version-api.yaml": "",
    "identity-api.yaml": "",
}


def spec_operations() -> set[tuple[str, str]]:
    """(METHOD, full path) of every operation in the spec files (their `paths:` sections, read by indentation)."""
    ops = set()
    for name, prefix in PREFIXES.items():
        path = None
        in_paths = False
        for line in (SPEC / name).read_text().splitlines():
            if re.match(r"^\S", line):
                in_paths = line.startswith("paths:")
                path = None
                continue
            if not in_paths:
                continue
            m = re.match(r"^  (/\S*):\s*$", line)
            if m:
                path = m.group(1)
                continue
            m = re.match(r"^    (get|post|put|delete|patch):", line)
            if m and path:
                ops.add((m.group(1).upper(), prefix + path))
    return ops


def test_every_operation_of_the_spec_is_served_and_no_other() -> None:
    ops = spec_operations()
    assert len(ops) > 80  # the parse found the files' operations
    served = {(r.method, r.path) for r in all_routes(with_payment=True)}
    assert ops - served == set()
    assert served - ops == {("GET", "/openapi.json")}


def test_the_operations_golem_clients_call_are_among_them() -> None:
    served = {(r.method, r.path) for r in all_routes(with_payment=True)}
    used = [
        ("GET", "/me"), ("GET", "/version/get"),
        ("POST", "/payment-api/v1/allocations"), ("GET", "/payment-api/v1/demandDecorations"),
        ("GET", "/payment-api/v1/invoiceEvents"), ("GET", "/payment-api/v1/debitNoteEvents"),
        ("GET", "/payment-api/v1/invoices/{invoiceId}"), ("GET", "/payment-api/v1/debitNotes/{debitNoteId}"),
        ("POST", "/payment-api/v1/invoices/{invoiceId}/accept"), ("POST", "/payment-api/v1/debitNotes/{debitNoteId}/accept"),
        ("DELETE", "/payment-api/v1/allocations/{allocationId}"), ("GET", "/payment-api/v1/allocations"),
        ("GET", "/payment-api/v1/requestorAccounts"),
        ("POST", "/market-api/v1/demands"), ("GET", "/market-api/v1/demands/{subscriptionId}/events"),
        ("POST", "/market-api/v1/demands/{subscriptionId}/proposals/{proposalId}"),
        ("POST", "/market-api/v1/demands/{subscriptionId}/proposals/{proposalId}/reject"),
        ("POST", "/market-api/v1/agreements"), ("GET", "/market-api/v1/agreements/{agreementId}"),
        ("POST", "/market-api/v1/agreements/{agreementId}/confirm"), ("POST", "/market-api/v1/agreements/{agreementId}/wait"),
        ("POST", "/market-api/v1/agreements/{agreementId}/terminate"), ("DELETE", "/market-api/v1/demands/{subscriptionId}"),
        ("GET", "/market-api/v1/agreementEvents"),
        ("POST", "/activity-api/v1/activity"), ("POST", "/activity-api/v1/activity/{activityId}/exec"),
        ("GET", "/activity-api/v1/activity/{activityId}/exec/{batchId}"), ("GET", "/activity-api/v1/activity/{activityId}/state"),
        ("GET", "/activity-api/v1/activity/{activityId}/usage"), ("DELETE", "/activity-api/v1/activity/{activityId}"),
    ]
    assert [op for op in used if op not in served] == []


def spec_success_codes() -> dict[tuple[str, str], int]:
    """The first 2xx answer of each operation in the spec files."""
    codes: dict[tuple[str, str], int] = {}
    for name, prefix in PREFIXES.items():
        path = method = None
        in_paths = in_responses = False
        for line in (SPEC / name).read_text().splitlines():
            if re.match(r"^\S", line):
                in_paths, path = line.startswith("paths:"), None
                continue
            if not in_paths:
                continue
            if m := re.match(r"^  (/\S*):\s*$", line):
                path, method = m.group(1), None
            elif m := re.match(r"^    (get|post|put|delete|patch):", line):
                method, in_responses = m.group(1).upper(), False
            elif re.match(r"^      responses:", line):
                in_responses = True
            elif (m := re.match(r"^        '?(2\d\d)'?:", line)) and in_responses and method and path:
                codes.setdefault((method, prefix + path), int(m.group(1)))
    return codes


def test_success_statuses_are_the_specs_except_where_501_says_not_supported() -> None:
    codes = spec_success_codes()
    differ = [(r.method, r.path, codes[(r.method, r.path)], r.ok[0]) for r in all_routes(with_payment=True)
              if (r.method, r.path) in codes and codes[(r.method, r.path)] != r.ok[0]]
    assert differ and all(ours == 501 for *_, ours in differ)
    assert {path.split("/")[1] for _, path, *_ in differ} == {"payment-api"}
