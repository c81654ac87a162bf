"""`loam market explain`: whether a demand and an offer match, and which clauses fail and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from node.cli import ERROR_EXIT_CODE, cli

__all__: list[str] = []

DEMAND: dict[str, Any] = {
    "properties": {
        "golem": {
            "node": {"debug": {"subnet": "public"}},
            "srv": {"comp": {"expiration": 1800000000000, "task_package": "hash:sha3:abc:http://example.com/x"}},
        }
    },
    "constraints": """(&(golem.inf.mem.gib>=0.5)
    (golem.inf.storage.gib>=2.0)
    (golem.runtime.name=vm)
    (golem.com.payment.platform.erc20-holesky-tglm.address=*)
    (golem.com.pricing.model=linear)
    (golem.node.debug.subnet=public))""",
}
OFFER: dict[str, Any] = {
    "properties": {
        "golem.inf.mem.gib": 8.0,
        "golem.inf.storage.gib": 40.0,
        "golem.runtime.name": "vm",
        "golem.com.payment.platform.erc20-holesky-tglm.address": "0x" + "ab" * 20,
        "golem": {"com": {"pricing": {"model": {"@tag": "linear", "linear": {"coeffs": [0.1, 0.2, 0.0]}}}}},
        "golem.node.debug.subnet": "public",
    },
    "constraints": "(&(golem.srv.comp.expiration>1700000000000)(golem.node.debug.subnet=public))",
}


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def explain(tmp_path: Path, demand: Any, offer: Any, *extra: str) -> Result:
    d = write(tmp_path, "demand.json", demand)
    o = write(tmp_path, "offer.json", offer)
    return CliRunner().invoke(cli, ["market", "explain", "--demand", str(d), "--offer", str(o), *extra])


def test_matching_pair_exits_zero(tmp_path: Path) -> None:
    result = explain(tmp_path, DEMAND, OFFER)
    assert result.exit_code == 0, result.output
    assert "match: yes" in result.stdout
    assert "demand side: true" in result.stdout and "offer side:  true" in result.stdout
    assert "failing" not in result.stdout


def test_matching_pair_as_json(tmp_path: Path) -> None:
    result = explain(tmp_path, DEMAND, OFFER, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"match": True, "demand_side": "true", "offer_side": "true", "failing": []}


def test_mismatch_exits_one_and_says_why(tmp_path: Path) -> None:
    offer = {**OFFER, "properties": {**OFFER["properties"], "golem.inf.mem.gib": 0.25}}
    del offer["properties"]["golem.com.payment.platform.erc20-holesky-tglm.address"]
    result = explain(tmp_path, DEMAND, offer)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "match: no" in out and "demand side: false" in out
    assert "(golem.inf.mem.gib>=0.5)" in out and "golem.inf.mem.gib is 0.25, needs >= 0.5" in out
    assert "(golem.com.payment.platform.erc20-holesky-tglm.address=*)" in out and "property absent" in out


def test_mismatch_as_json_lists_both_sides(tmp_path: Path) -> None:
    offer = {**OFFER, "properties": {**OFFER["properties"], "golem.runtime.name": "wasmtime"}}
    demand = {**DEMAND, "properties": {"golem.node.debug.subnet": "public"}}  # no expiration
    result = explain(tmp_path, demand, offer, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report == {
        "match": False,
        "demand_side": "false",
        "offer_side": "undefined",
        "failing": [
            {
                "side": "demand",
                "clause": "(golem.runtime.name=vm)",
                "result": "false",
                "property": "golem.runtime.name",
                "value": "wasmtime",
                "why": 'golem.runtime.name is "wasmtime", needs = vm',
            },
            {
                "side": "offer",
                "clause": "(golem.srv.comp.expiration>1700000000000)",
                "result": "undefined",
                "property": "golem.srv.comp.expiration",
                "value": None,
                "why": "property absent",
            },
        ],
    }


def test_empty_constraints_mean_none(tmp_path: Path) -> None:
    result = explain(tmp_path, DEMAND, {**OFFER, "constraints": ""}, "--json")
    assert result.exit_code == 0, result.output
    result = explain(tmp_path, {**DEMAND, "constraints": "  \n"}, {**OFFER, "constraints": "()"}, "--json")
    assert json.loads(result.stdout)["match"] is True


def test_values_in_json_keep_their_type(tmp_path: Path) -> None:
    demand = {**DEMAND, "constraints": "(&(golem.com.pricing.model.linear.coeffs=9)(golem.inf.mem.gib<1))"}
    report = json.loads(explain(tmp_path, demand, OFFER, "--json").stdout)
    assert [f["value"] for f in report["failing"]] == [[0.1, 0.2, 0.0], 8.0]


@pytest.mark.parametrize(
    ("demand", "message"),
    [
        ('{"properties": {}, ', "demand file"),
        ("[]", "JSON object"),
        ('{"constraints": "()"}', "'properties'"),
        ('{"properties": {}}', "'constraints'"),
        ("{}", "'properties' and no 'constraints'"),
        ('{"properties": {}, "constraints": 5}', '"constraints" must be a string'),
        ('{"properties": [], "constraints": "()"}', "properties"),
        ('{"properties": {"a": {"@tag": {}}}, "constraints": "()"}', "'a'"),
        ('{"properties": {"a": NaN}, "constraints": "()"}', "'a'"),
        ('{"properties": {}, "constraints": "(&(a=b)"}', 'constraints at 1:8: expected ")" but found end of input'),
        ('{"properties": {}, "constraints": "(&\\n (a~b))"}', "at 2:4 (position 7)"),
    ],
)
def test_bad_documents_are_errors_naming_the_file(tmp_path: Path, demand: str, message: str) -> None:
    result = explain(tmp_path, demand, OFFER)
    assert result.exit_code == ERROR_EXIT_CODE, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "demand.json" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_bad_json_says_where(tmp_path: Path) -> None:
    result = explain(tmp_path, DEMAND, '{\n  "properties": {},\n  "constraints": ()\n}')
    assert result.exit_code == ERROR_EXIT_CODE
    assert "offer file" in result.stderr and "offer.json" in result.stderr
    assert "is not valid JSON" in result.stderr and "at 3:18" in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    o = write(tmp_path, "offer.json", OFFER)
    result = CliRunner().invoke(cli, ["market", "explain", "--demand", str(tmp_path / "nope.json"), "--offer", str(o)])
    assert result.exit_code == ERROR_EXIT_CODE
    assert result.stderr.strip() == f"error: demand file {tmp_path / 'nope.json'} does not exist"


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "demand.json"
    bad.write_bytes(b"\xff\xfe{}")
    o = write(tmp_path, "offer.json", OFFER)
    result = CliRunner().invoke(cli, ["market", "explain", "--demand", str(bad), "--offer", str(o)])
    assert result.exit_code == ERROR_EXIT_CODE
    assert "cannot read demand file" in result.stderr


def test_help_documents_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["market", "explain", "--help"])
    assert result.exit_code == 0
    assert "0 when they match, 1 when they do not" in result.stdout
    assert "2 when a file is missing or malformed" in result.stdout
