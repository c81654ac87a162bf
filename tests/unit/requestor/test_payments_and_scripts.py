"""The requestor's checks of debit notes and invoices, and exe-scripts built in Python."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from requestor.errors import ConfigurationError
from requestor.payments import AgreementTerms, check_debit_note, check_invoice
from requestor.rest import _glm, parse_time, rfc3339
from requestor.script import CommandResult, Script
from requestor.strategy import ProviderOffer

ME, PROVIDER, PLATFORM = "0xme", "0xprovider", "erc20-local-tglm"
CPU, ENV, START = 0.001, 0.0001, 0.5  # GLM per cpu second, per second, once


def _terms(approved_s: float = 1000.0, ended_s: float | None = None) -> AgreementTerms:
    offer = ProviderOffer("prop", PROVIDER, {
        "golem.inf.cpu.threads": 2, "golem.com.pricing.model": "linear",
        "golem.com.pricing.model.linear.coeffs": [CPU, ENV, START],
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
    })  # fmt: skip
    return AgreementTerms("ag1", PROVIDER, offer, PLATFORM, ME, approved_s, ended_s)


def _note(amount: str, usage: list[float], **extra: Any) -> dict[str, Any]:
    doc = {
        "debitNoteId": "dn1", "agreementId": "ag1", "activityId": "ac1", "issuerId": PROVIDER, "payerAddr": ME,
        "paymentPlatform": PLATFORM, "totalAmountDue": amount, "usageCounterVector": usage,
    }
    doc.update(extra)
    return doc


def test_a_debit_note_priced_by_its_usage_is_accepted() -> None:
    price = Decimal(str(START)) + Decimal(str(CPU)) * 50 + Decimal(str(ENV)) * 60
    assert check_debit_note(_note(str(price), [50, 60]), _terms(), now_s=1060.0) is None


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (_note("9", [50, 60]), "asks 9 GLM"),
        (_note("0.5", [50, 600]), "600 s of activity"),
        (_note("0.5", [500, 60]), "cpu seconds"),
        (_note("0.5", [50]), "does not fit the usage vector"),
        (_note("lots", [50, 60]), "not an amount of GLM"),
        (_note("0.5", [50, 60], agreementId="other"), "is for agreement other"),
        (_note("0.5", [50, 60], issuerId="0xsomeoneelse"), "not the agreement's provider"),
        (_note("0.5", [50, 60], payerAddr="0xnotme"), "names payer"),
        (_note("0.5", [50, 60], paymentPlatform="erc20-mainnet-glm"), "asks payment on erc20-mainnet-glm"),
        (_note("0.5", [50, 60], paymentDueDate="2030-01-01T00:00:00Z"), "was not negotiated"),
    ],
)
def test_a_debit_note_that_does_not_fit_the_agreement_is_refused_with_why(doc: dict[str, Any], why: str) -> None:
    problem = check_debit_note(doc, _terms(), now_s=1060.0)
    assert problem is not None and why in problem


def test_an_invoice_is_capped_by_the_prices_for_the_agreements_time() -> None:
    terms = _terms(approved_s=1000.0, ended_s=1100.0)
    invoice = {"invoiceId": "in1", "agreementId": "ag1", "issuerId": PROVIDER, "payerAddr": ME,
               "paymentPlatform": PLATFORM, "activityIds": ["ac1"], "amount": "0.6"}
    assert check_invoice(invoice, terms, now_s=5000.0) is None
    # (100 s + slack) of two busy threads and the activity, plus the start fee: about 0.79 GLM.
    assert "more than the agreed prices allow" in (check_invoice({**invoice, "amount": "5"}, terms, now_s=5000.0) or "")
    assert "not an amount" in (check_invoice({**invoice, "amount": "-1"}, terms, now_s=5000.0) or "")


def test_scripts_build_the_commands_the_api_takes(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    script = Script()
    script.send_url("http://h/in.txt", "/input/a.txt")
    run = script.run("wc", "/input/a.txt")
    streamed = script.run("hello", "x", stream=True)
    script.send_file(src, "/input/b.txt")
    script.download_file("/output/out.txt", tmp_path / "out.txt")
    assert script.streaming and len(script) == 5
    assert script.commands[0].body == {"transfer": {"from": "http://h/in.txt", "to": "container:/input/a.txt"}}
    assert run.body["run"]["capture"]["stdout"] == {"atEnd": {"format": "str"}}
    assert streamed.body["run"]["capture"]["stdout"] == {"stream": {}}
    with pytest.raises(ConfigurationError, match="not published yet"):
        script.to_json()  # the local file has no gftp URL until the batch runs
    script.commands[3].body["transfer"]["from"] = "gftp://0xme/abc"
    script.commands[4].body["transfer"]["to"] = "gftp://0xme/slot"
    assert [next(iter(c)) for c in script.to_json()] == ["transfer", "run", "run", "transfer", "transfer"]
    run.result = CommandResult.from_json({"index": 1, "result": "Ok", "stdout": "1 2 3\n"})
    streamed.streamed_stdout += ["a", "b"]
    assert run.ok and run.stdout == "1 2 3\n" and streamed.stdout == "ab"


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda s, p: s.run(""), "entry point"),
        (lambda s, p: s.run("x", 1), "arguments must be strings"),
        (lambda s, p: s.send_url("file:///etc/passwd", "/input/x"), "http"),
        (lambda s, p: s.send_url("http://h/x", "input/x"), "absolute"),
        (lambda s, p: s.send_file(p / "missing.txt", "/input/x"), "is not a file"),
        (lambda s, p: s.download_file("/output/x", p / "no" / "such" / "dir.txt"), "does not exist"),
    ],
)
def test_bad_script_commands_are_refused_when_written(build: Any, why: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=why):
        build(Script(), tmp_path)


def test_amounts_and_timestamps_in_the_apis_shapes() -> None:
    assert _glm(Decimal("5")) == "5" and _glm(Decimal("0.50")) == "0.5" and _glm(Decimal("1E-18")) == "0.000000000000000001"
    stamp = rfc3339(parse_time("2026-01-02T03:04:05Z"))
    assert stamp == "2026-01-02T03:04:05.000000+00:00"
