"""REST request checks: bodies and query parameters that are malformed or out of range are 400s with a message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.api.errors import ApiError, status_of
from node.api.validation import (
    agreement_proposal,
    demand_offer_base,
    exe_script,
    parse_json,
    parse_time_ms,
    query_float,
    query_int,
    reason,
)


def _bad(fn: Any, *args: Any, match: str | None = None, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError, match=match) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400 and info.value.message
    return info.value


def test_bodies_that_are_not_json_are_400() -> None:
    assert parse_json(b'{"a": 1}') == {"a": 1}
    assert parse_json(b"  ", required=False) is None
    _bad(parse_json, b"", match="needs a JSON body")
    _bad(parse_json, b"{nope", match="not JSON")
    _bad(parse_json, b"\xff\xfe", match="not JSON")
    _bad(parse_json, b"[" * 100_000 + b"]" * 100_000, match="more than 10000 arrays")
    _bad(parse_json, b"[" * 40 + b"]" * 40, match="nests deeper")
    assert parse_json(json.dumps({"text": "[" * 1000}).encode()) == {"text": "[" * 1000}  # inside a string: no nesting
    _bad(parse_json, b'{"a":' * 40 + b"1" + b"}" * 40, match="nests deeper")
    assert parse_json(b'{"a":' * 20 + b"1" + b"}" * 20)
    _bad(parse_json, b'{"properties": {"x": NaN}}', match="NaN is not a JSON value")
    _bad(parse_json, b"[Infinity]", match="not JSON")


def test_a_demand_needs_object_properties_and_string_constraints() -> None:
    assert demand_offer_base({"properties": {"a": 1}, "constraints": "()"}) == ({"a": 1}, "()")
    _bad(demand_offer_base, [], match="JSON object")
    _bad(demand_offer_base, {"constraints": "()"}, match="properties")
    _bad(demand_offer_base, {"properties": [], "constraints": "()"}, match="properties")
    _bad(demand_offer_base, {"properties": {}, "constraints": None}, match="constraints")


def test_a_reason_needs_a_message_and_keeps_other_keys() -> None:
    assert reason(None) is None
    assert reason({"message": "m", "golem.requestor.code": "x"}) == {"message": "m", "golem.requestor.code": "x"}
    _bad(reason, {"code": 1}, match="message")
    _bad(reason, "why", match="JSON object")


def test_agreement_proposals_take_rfc3339_valid_to() -> None:
    pid, ms = agreement_proposal({"proposalId": "p", "validTo": "2030-01-01T00:00:00.000001+00:00"})
    assert pid == "p" and ms == 1_893_456_000_000
    assert agreement_proposal({"proposalId": "p", "validTo": "2030-01-01T01:00:00Z"})[1] == 1_893_459_600_000
    _bad(agreement_proposal, {"validTo": "2030-01-01T00:00:00Z"}, match="proposalId")
    _bad(agreement_proposal, {"proposalId": "p", "validTo": 5}, match="validTo")
    _bad(agreement_proposal, {"proposalId": "p", "validTo": "soon"}, match="validTo")


def test_times_floor_to_the_millisecond_so_after_timestamp_stays_strict() -> None:
    assert parse_time_ms("1970-01-01T00:00:12.0005+00:00", "t") == 12_000
    assert parse_time_ms("1970-01-01T00:00:12.001+00:00", "t") == 12_001
    assert parse_time_ms("1970-01-01T01:00:00+01:00", "t") == 0
    assert parse_time_ms("1970-01-01T00:00:01", "t") == 1000  # no offset: UTC


def test_query_numbers_are_checked_for_type_and_range() -> None:
    assert query_float({}, "timeout", 5.0) == 5.0
    assert query_float({"timeout": "0.25"}, "timeout", 5.0) == 0.25
    for text in ("-1", "abc", "nan", "inf", "1e309"):
        _bad(query_float, {"timeout": text}, "timeout", 5.0)
    assert query_int({"maxEvents": "7"}, "maxEvents", 10, minimum=1, maximum=100) == 7
    for text in ("0", "101", "1.5", "x"):
        _bad(query_int, {"maxEvents": text}, "maxEvents", 10, minimum=1, maximum=100)


def _script(commands: Any) -> dict[str, str]:
    return {"text": json.dumps(commands)}


def test_golem_exe_scripts_pass_through_unchanged() -> None:
    commands = [
        {"deploy": {"net": [{"id": "n", "ip": "10.0.0.2", "mask": "255.255.0.0"}], "hosts": {"m": "10.0.0.1"}}},
        {"start": {"args": []}},
        {"transfer": {"from": "gftp://0xabc/h", "to": "container:/input/f", "format": "zip", "depth": 2}},
        {"run": {"entry_point": "/bin/sh", "args": ["-c", "ls"],
                 "capture": {"stdout": {"atEnd": {"format": "str", "part": {"tail": 100}}}, "stderr": {"stream": {}}}}},
        {"sign": {}},
        {"terminate": {}},
    ]
    assert exe_script(_script(commands)) == commands
    assert exe_script(_script([{"deploy": None}])) == [{"deploy": {}}]


@pytest.mark.parametrize(
    ("commands", "match"),
    [
        ([], "non-empty"),
        ({"deploy": {}}, "non-empty"),
        ([{"fly": {}}], "unknown command 'fly'"),
        ([{"deploy": {}, "start": {}}], "exactly one key"),
        ([{"deploy": []}], "must be an object"),
        ([{"run": {"args": []}}], "entry_point"),
        ([{"run": {"entry_point": "x", "args": [1]}}], "args"),
        ([{"run": {"entry_point": "x", "capture": {"stdout": {"atEnd": {"format": "xml"}}}}}], "format"),
        ([{"run": {"entry_point": "x", "capture": {"stdin": {}}}}], "stdout and stderr"),
        ([{"transfer": {"from": "http://a"}}], "to"),
        ([{"start": {"args": "x"}}], "args"),
        ([{"deploy": {"net": [{"id": "n"}]}}], "net"),
    ],
)
def test_malformed_exe_scripts_name_the_command_and_the_problem(commands: Any, match: str) -> None:
    _bad(exe_script, _script(commands), match=match)


def test_an_exe_script_request_needs_its_text() -> None:
    _bad(exe_script, {"script": []}, match="text")
    _bad(exe_script, {"text": "[1,"}, match="not JSON")
    _bad(exe_script, {"text": "[" * 10_000}, match="exe-script text")
    _bad(exe_script, "[]", match="JSON object")


def test_domain_errors_map_to_statuses_in_one_place() -> None:
    import pykka

    from actors.activity.actor import ActivityError, ActivityNotFoundError
    from actors.market.events import AgreementNotFoundError, InvalidTransitionError, MarketError, SubscriptionNotFoundError
    from protocol.errors import ConstraintSyntaxError, PropertyError

    assert status_of(SubscriptionNotFoundError("s")) == 404
    assert status_of(AgreementNotFoundError("a")) == 404
    assert status_of(ActivityNotFoundError("a")) == 404
    assert status_of(InvalidTransitionError("t")) == 409
    assert status_of(MarketError("m")) == 400
    assert status_of(ActivityError("a")) == 400
    assert status_of(PropertyError("p")) == 400
    assert status_of(ConstraintSyntaxError("c")) == 400
    assert status_of(pykka.Timeout("t")) == 504
    assert status_of(ApiError(418, "teapot")) == 418
    assert status_of(RuntimeError("bug")) is None
