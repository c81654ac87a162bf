"""The REST API of real node processes: a requestor's whole flow over HTTP, and bad input answered with 4xx."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.harness import REPO, NodeProcess, Testnet, free_port, wait_for
from tests.integration.test_activity import package, web  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

PLATFORM = "erc20-holesky-tglm"
MARKET = "/market-api/v1"
ACTIVITY = "/activity-api/v1"


class Api:
    """A tiny blocking client of one node's REST API."""

    def __init__(self, node: NodeProcess, key: str) -> None:
        self.node = node
        self.base = json.loads((node.data_dir / "node.json").read_text())["api"]
        self.key = key

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, key: str | None = "",
        headers: dict[str, str] | None = None, timeout_s: float = 70.0,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        token = self.key if key == "" else key
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        return status, (json.loads(payload) if payload else None)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        got, value = self.call(method, path, body, **kw)
        assert got == status, (method, path, got, value)
        return value

    def sse(self, path: str, timeout_s: float = 60.0, last_event_id: int | None = None) -> list[tuple[str, Any]]:
        """The server-sent events of a stream until it ends: (event name, data)."""
        request = urllib.request.Request(self.base + path, method="GET")
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Accept", "text/event-stream")
        if last_event_id is not None:
            request.add_header("Last-Event-Id", str(last_event_id))
        out: list[tuple[str, Any]] = []
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            name, data = "", ""
            for line in response:
                text = line.decode().rstrip("\n")
                if text.startswith("event:"):
                    name = text[6:].strip()
                elif text.startswith("data:"):
                    data += text[5:].strip()
                elif text == "" and data:
                    out.append((name, json.loads(data)))
                    name, data = "", ""
        return out


def app_key(node: NodeProcess, name: str = "tests") -> str:
    """A new app-key made with the CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "app-key", "create", "--data-dir", str(node.data_dir), name],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def api_env(**extra: str) -> dict[str, str]:
    """Environment for a node serving its REST API on a free port."""
    return {"LOAM_API__PORT": str(free_port()), **extra}


@pytest.fixture
def rest_pair(testnet: Testnet) -> Iterator[tuple[Api, NodeProcess]]:
    """A wasmtime provider and a requestor whose REST API the test drives."""
    provider = testnet.add("provider", env=api_env(LOAM_PROVIDER__ENABLED="true", LOAM_PROVIDER__MAX_AGREEMENTS="4"))
    requestor = testnet.add("requestor", env=api_env())
    yield Api(requestor, app_key(requestor)), provider


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


def test_a_requestor_runs_a_wasi_program_from_demand_to_results_over_http(
    rest_pair: tuple[Api, NodeProcess], package: str  # noqa: F811 - fixture
) -> None:
    api, provider = rest_pair
    me = api.ok("GET", "/me")
    assert me["identity"] == api.node.node_id and me["name"] == "tests"
    assert api.ok("GET", "/version/get")["current"]["version"]

    # Offers heard, through a scan.
    scan = api.ok("POST", f"{MARKET}/scan", {"type": "offer", "constraints": "(golem.runtime.name=wasmtime)"}, 201)
    offers = wait_for("the provider's offer", lambda: api.ok("GET", f"{MARKET}/scan/{scan}/events?timeout=1"), 20)
    assert offers[0]["providerId"] == provider.node_id and offers[0]["properties"]["golem.runtime.name"] == "wasmtime"
    api.ok("DELETE", f"{MARKET}/scan/{scan}/events", status=201)
    assert api.call("GET", f"{MARKET}/scan/{scan}/events?timeout=0")[0] == 404

    props = {
        "golem.node.debug.subnet": "public",
        "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": api.node.node_id,
        "golem.srv.comp.task_package": package,
    }
    sub = api.ok("POST", f"{MARKET}/demands", {"properties": props, "constraints": "(golem.runtime.name=wasmtime)"}, 201)
    assert isinstance(sub, str)
    assert [d["demandId"] for d in api.ok("GET", f"{MARKET}/demands")] == [sub]

    events = wait_for("an Initial proposal", lambda: api.ok("GET", f"{MARKET}/demands/{sub}/events?timeout=2&maxEvents=5"), 20)
    event = events[0]
    assert event["eventType"] == "ProposalEvent" and _parses(event["eventDate"])
    initial = event["proposal"]
    assert initial["state"] == "Initial" and initial["issuerId"] == provider.node_id
    assert isinstance(initial["properties"], dict) and isinstance(initial["constraints"], str)
    assert api.ok("GET", f"{MARKET}/demands/{sub}/proposals/{initial['proposalId']}")["proposalId"] == initial["proposalId"]

    ours = api.ok("POST", f"{MARKET}/demands/{sub}/proposals/{initial['proposalId']}",
                  {"properties": props, "constraints": "()"}, 201)
    events = wait_for("the provider's answer", lambda: api.ok("GET", f"{MARKET}/demands/{sub}/events?timeout=2"), 20)
    draft = events[0]["proposal"]
    assert draft["state"] == "Draft" and draft["prevProposalId"] == ours

    before = datetime.now(timezone.utc)
    valid_to = _iso(before + timedelta(minutes=10))
    agreement_id = api.ok("POST", f"{MARKET}/agreements", {"proposalId": draft["proposalId"], "validTo": valid_to}, 201)
    agreement = api.ok("GET", f"{MARKET}/agreements/{agreement_id}")
    assert agreement["state"] == "Proposal" and agreement["offer"]["providerId"] == provider.node_id
    assert agreement["demand"]["requestorId"] == api.node.node_id
    assert agreement["offer"]["properties"]["golem.runtime.name"] == "wasmtime"
    api.ok("POST", f"{MARKET}/agreements/{agreement_id}/confirm?appSessionId=s1", status=204)
    api.ok("POST", f"{MARKET}/agreements/{agreement_id}/wait?timeout=15", status=204)
    assert api.ok("GET", f"{MARKET}/agreements/{agreement_id}")["state"] == "Approved"
    after = _iso(before - timedelta(seconds=1)).replace("+", "%2B")
    agreement_events = api.ok("GET", f"{MARKET}/agreementEvents?afterTimestamp={after}&timeout=5&appSessionId=s1")
    assert [(e["eventType"], e["agreementId"]) for e in agreement_events] == [("AgreementApprovedEvent", agreement_id)]
    # afterTimestamp is strictly after: nothing newer than the last event.
    last = agreement_events[-1]["eventDate"].replace("+", "%2B")
    assert api.ok("GET", f"{MARKET}/agreementEvents?afterTimestamp={last}&timeout=0.2&appSessionId=s1") == []
    assert agreement_id in [a["id"] for a in api.ok("GET", f"{MARKET}/agreements?state=Approved")]

    # An activity: the agreement id as a bare JSON string in, the activity id as one out.
    activity_id = api.ok("POST", f"{ACTIVITY}/activity", agreement_id, 201)
    assert isinstance(activity_id, str)
    assert api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/agreement") == agreement_id
    script = [
        {"deploy": {}},
        {"start": {"args": []}},
        {"run": {"entry_point": "hello", "args": ["rest"], "capture": {"stdout": {"atEnd": {"format": "str"}}}}},
    ]
    batch = api.ok("POST", f"{ACTIVITY}/activity/{activity_id}/exec", {"text": json.dumps(script)})
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not (results and results[-1].get("isBatchFinished")) and time.monotonic() < deadline:
        got = api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/exec/{batch}?timeout=3")
        assert len(got) >= len(results) and got[: len(results)] == results, "results are cumulative from index 0"
        results = got
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["result"] for r in results] == ["Ok", "Ok", "Ok"], results
    assert "rest" in results[2]["stdout"] and all(_parses(r["eventDate"]) for r in results)
    assert api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/state")["state"] == ["Ready", None]

    # The same kind of batch, streamed: started, stdout and finished per command.
    streamed = [{"run": {"entry_point": "hello", "args": ["streamed"], "capture": {"stdout": {"stream": {}}}}},
                {"run": {"entry_point": "hello", "args": ["again"]}}]
    batch2 = api.ok("POST", f"{ACTIVITY}/activity/{activity_id}/exec", {"text": json.dumps(streamed)})
    events = api.sse(f"{ACTIVITY}/activity/{activity_id}/exec/{batch2}")
    assert all(name == "runtime" and e["batchId"] == batch2 for name, e in events)
    kinds = [(e["index"], next(iter(e["kind"]))) for _, e in events]
    assert kinds[0] == (0, "started") and (0, "stdout") in kinds and kinds[-1] == (1, "finished"), kinds
    assert "streamed" in "".join(e["kind"]["stdout"] for _, e in events if "stdout" in e["kind"])
    finished = [e["kind"]["finished"] for _, e in events if "finished" in e["kind"]]
    assert [f["return_code"] for f in finished] == [0, 0]
    assert events[0][1]["kind"]["started"]["command"] == streamed[0]
    # A client reconnecting with Last-Event-Id gets only the events after that one.
    again = api.sse(f"{ACTIVITY}/activity/{activity_id}/exec/{batch2}", last_event_id=2)
    assert [e for _, e in again] == [e for _, e in events[2:]]
    # A later poll of the same batch still answers JSON, cumulatively.
    assert [r["index"] for r in api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/exec/{batch2}?timeout=5")] == [0, 1]
    # Usage flows back.
    usage = wait_for("usage", lambda: (u := api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/usage"))["currentUsage"] and u, 10)
    assert isinstance(usage["timestamp"], int)

    # Destroy and terminate, each twice: repeats are no-ops.
    api.ok("DELETE", f"{ACTIVITY}/activity/{activity_id}?timeout=10")
    api.ok("DELETE", f"{ACTIVITY}/activity/{activity_id}")
    assert api.ok("GET", f"{ACTIVITY}/activity/{activity_id}/state")["state"][0] == "Terminated"
    # The spec's object form gets an object back.
    second = api.ok("POST", f"{ACTIVITY}/activity", {"agreementId": agreement_id}, 201)
    assert set(second) == {"activityId"} and second["activityId"] != activity_id
    api.ok("DELETE", f"{ACTIVITY}/activity/{second['activityId']}?timeout=10")
    reason = {"message": "done", "golem.requestor.code": "Success"}
    api.ok("POST", f"{MARKET}/agreements/{agreement_id}/terminate", reason, 204)
    api.ok("POST", f"{MARKET}/agreements/{agreement_id}/terminate", reason, 204)
    terminated = api.ok("POST", f"{MARKET}/agreements/{agreement_id}/terminate/reason")
    assert terminated["terminator"] == "Requestor" and terminated["reason"]["message"] == "done"
    agreement_events = api.ok("GET", f"{MARKET}/agreementEvents?afterTimestamp={last}&timeout=5")
    assert [e["eventType"] for e in agreement_events] == ["AgreementTerminatedEvent"]
    assert agreement_events[0]["signature"].startswith("0x")

    # Unsubscribed: the demand's events are gone (404, so clients resubscribe).
    api.ok("DELETE", f"{MARKET}/demands/{sub}", status=204)
    assert api.call("GET", f"{MARKET}/demands/{sub}/events?timeout=0")[0] == 404
    assert api.call("DELETE", f"{MARKET}/demands/{sub}")[0] == 410  # the spec's "already unsubscribed"


def _parses(stamp: str) -> bool:
    value = datetime.fromisoformat(stamp)
    return value.utcoffset() is not None and "." in stamp and len(stamp.split(".")[1].split("+")[0]) == 6


@pytest.fixture
def lone(testnet: Testnet) -> Api:
    """One node serving its REST API, and a key for it."""
    node = testnet.add("lone", env=api_env())
    return Api(node, app_key(node))


def test_requests_without_a_known_app_key_get_401(lone: Api) -> None:
    for key in (None, "not-a-key", ""):
        status, body = lone.call("GET", "/me", key=key if key != "" else None)
        assert status == 401 and isinstance(body["message"], str)
    assert lone.call("GET", f"{MARKET}/demands", key="0" * 32)[0] == 401
    status, body = lone.call("GET", "/me", headers={"Authorization": "Basic abc"}, key=None)
    assert status == 401
    # A dropped key stops working at once.
    other = app_key(lone.node, "other")
    assert lone.call("GET", "/me", key=other)[0] == 200
    subprocess.run([sys.executable, "-m", "node.cli", "app-key", "drop", "--data-dir", str(lone.node.data_dir), "other"],
                   cwd=REPO, check=True, capture_output=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert lone.call("GET", "/me", key=other)[0] == 401


def test_bad_input_gets_a_4xx_with_a_message_never_a_500(lone: Api) -> None:
    cases: list[tuple[str, str, Any, bytes | None, int]] = [
        ("POST", f"{MARKET}/demands", None, b"{not json", 400),
        ("POST", f"{MARKET}/demands", None, b"", 400),
        ("POST", f"{MARKET}/demands", None, b"[" * 200_000, 400),
        ("POST", f"{MARKET}/demands", None, b'{"properties": {"a": NaN}, "constraints": "()"}', 400),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"text": "[" * 50_000}, None, 400),
        ("POST", f"{MARKET}/demands", [1, 2], None, 400),
        ("POST", f"{MARKET}/demands", {"properties": "x", "constraints": "()"}, None, 400),
        ("POST", f"{MARKET}/demands", {"properties": {}, "constraints": 5}, None, 400),
        ("POST", f"{MARKET}/demands", {"properties": {"a": 1}, "constraints": "(&(a=1"}, None, 400),
        ("POST", f"{MARKET}/demands", {"properties": {"": {"x": [1]}}, "constraints": "()"}, None, 400),
        ("GET", f"{MARKET}/demands/nope/events", None, None, 404),
        ("GET", f"{MARKET}/demands/nope/events?timeout=-1", None, None, 400),
        ("GET", f"{MARKET}/demands/nope/events?timeout=abc", None, None, 400),
        ("GET", f"{MARKET}/demands/nope/events?timeout=nan", None, None, 400),
        ("GET", f"{MARKET}/demands/nope/events?maxEvents=0", None, None, 400),
        ("GET", f"{MARKET}/demands/nope/events?maxEvents=1e3", None, None, 400),
        ("POST", f"{MARKET}/demands/nope/proposals/p1", {"properties": {}, "constraints": "()"}, None, 404),
        ("POST", f"{MARKET}/demands/nope/proposals/p1/reject", {"no": "message"}, None, 400),
        ("POST", f"{MARKET}/agreements", {}, None, 400),
        ("POST", f"{MARKET}/agreements", {"proposalId": "p", "validTo": "tomorrow"}, None, 400),
        ("POST", f"{MARKET}/agreements", {"proposalId": "p", "validTo": "2030-01-01T00:00:00Z"}, None, 404),
        ("GET", f"{MARKET}/agreements/nope", None, None, 404),
        ("GET", f"{MARKET}/agreements?state=Happy", None, None, 400),
        ("POST", f"{MARKET}/agreements/nope/terminate", None, None, 404),
        ("POST", f"{MARKET}/agreements/nope/wait?timeout=1", None, None, 404),
        ("GET", f"{MARKET}/agreementEvents?afterTimestamp=yesterday", None, None, 400),
        ("POST", f"{MARKET}/scan", {"type": "both"}, None, 400),
        ("GET", f"{MARKET}/scan/nope/events", None, None, 404),
        ("POST", f"{ACTIVITY}/activity", 123, None, 400),
        ("POST", f"{ACTIVITY}/activity", {"agreement": "x"}, None, 400),
        ("POST", f"{ACTIVITY}/activity", "nope", None, 404),
        ("POST", f"{ACTIVITY}/activity", {"agreementId": "nope"}, None, 404),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"text": "[{\"fly\": {}}]"}, None, 400),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"text": "not json"}, None, 400),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"text": "[{\"run\": {\"args\": [1]}}]"}, None, 400),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"script": []}, None, 400),
        ("POST", f"{ACTIVITY}/activity/a1/exec", {"text": "[{\"deploy\": {}}]"}, None, 404),
        ("GET", f"{ACTIVITY}/activity/a1/exec/b1?timeout=1", None, None, 404),
        ("GET", f"{ACTIVITY}/activity/a1/state", None, None, 404),
        ("DELETE", f"{ACTIVITY}/activity/a1", None, None, 404),
        ("POST", "/net-api/v1/net", {"ip": "300.0.0.0", "mask": "255.255.0.0"}, None, 400),
        ("POST", "/net-api/v1/net", {"ip": "10.0.0.0", "mask": "255.0.255.0"}, None, 400),
        ("POST", "/net-api/v1/net", {"mask": "255.255.0.0"}, None, 400),
        ("GET", "/net-api/v1/net/nope", None, None, 404),
        ("POST", "/net-api/v1/net/nope/nodes", {"id": "0x" + "1" * 40, "ip": "10.0.0.2"}, None, 404),
        ("GET", "/net-api/v1/net/nope/tcp/10.0.0.2/80", None, None, 404),
        ("GET", "/net-api/v1/net/nope/tcp/10.0.0.2/99999", None, None, 400),
        ("GET", "/no/such/route", None, None, 404),
        ("PATCH", f"{MARKET}/demands", None, None, 405),
    ]
    for method, path, body, raw, expected in cases:
        status, answer = lone.call(method, path, body, raw=raw)
        assert status == expected, (method, path, body, raw, status, answer)
        assert isinstance(answer, dict) and isinstance(answer.get("message"), str) and answer["message"], answer
    assert lone.node.alive(), "a deeply nested body must not take the node down"

    # A demand that ends: its events are 404 afterwards.
    sub = lone.ok("POST", f"{MARKET}/demands", {"properties": {"golem.node.debug.subnet": "public"}, "constraints": "()"}, 201)
    assert lone.ok("GET", f"{MARKET}/demands/{sub}/events?timeout=0.2") == []
    lone.ok("DELETE", f"{MARKET}/demands/{sub}", status=204)
    assert lone.call("GET", f"{MARKET}/demands/{sub}/events")[0] == 404


def test_every_served_operation_answers_garbage_with_a_4xx(lone: Api) -> None:
    """A small fuzz over the node's own OpenAPI document: wrong types and junk in every body and query."""
    doc = lone.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.") and f"{MARKET}/demands" in doc["paths"]
    assert isinstance(lone.ok("GET", "/payment-api/v1/payments/status"), list)  # not taken for a payment id
    bodies: list[Any] = [None, "x", 0, -1.5, True, [], [None], {}, {"properties": None}, {"text": 7}, {"message": 1}, "\u0000" * 3]
    queries = ["?timeout=0", "?timeout=-5", "?maxEvents=1000000", "?timeout=1e309", "?afterTimestamp=%00", "?state=x"]
    seen = 0
    for path, operations in doc["paths"].items():
        concrete = path.replace("{", "x-").replace("}", "")
        for method in operations:
            for body in bodies:
                for query in queries[:2] if body is not None else queries:
                    status, answer = lone.call(method.upper(), concrete + query, body, timeout_s=20)
                    seen += 1
                    assert status < 500 or status == 501, (method, path, query, body, status, answer)
                    if status >= 400:
                        assert isinstance(answer, dict) and "message" in answer, (method, path, answer)
    assert seen > 500
    assert lone.node.alive()


def test_a_provider_agent_over_http_negotiates_and_approves(testnet: Testnet) -> None:
    """Both sides over REST: a provider's offer, its proposal events, a rejection, a counter, approval."""
    p_node = testnet.add("seller", env=api_env())
    r_node = testnet.add("buyer", env=api_env())
    seller, buyer = Api(p_node, app_key(p_node)), Api(r_node, app_key(r_node))
    offer_props = {"golem.runtime.name": "rest-test", "golem.node.debug.subnet": "public", "golem.inf.cpu.threads": 2}
    offer_id = seller.ok("POST", f"{MARKET}/offers", {"properties": offer_props, "constraints": "(golem.node.debug.subnet=public)"}, 201)
    assert [o["offerId"] for o in seller.ok("GET", f"{MARKET}/offers")] == [offer_id]

    demand_props = {"golem.node.debug.subnet": "public", "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000}
    subs = [buyer.ok("POST", f"{MARKET}/demands", {"properties": {**demand_props, "n": i}, "constraints": "(golem.runtime.name=rest-test)"}, 201)
            for i in range(2)]
    counters = []
    for sub in subs:
        initial = wait_for("an Initial proposal", lambda: buyer.ok("GET", f"{MARKET}/demands/{sub}/events?timeout=2"), 30)
        assert initial[0]["proposal"]["issuerId"] == p_node.node_id
        counters.append(buyer.ok("POST", f"{MARKET}/demands/{sub}/proposals/{initial[0]['proposal']['proposalId']}",
                                 {"properties": demand_props, "constraints": "()"}, 201))

    # The seller hears both counters: rejects the first, counters the second.
    heard: list[dict[str, Any]] = []
    wait_for("both counters", lambda: heard.extend(seller.ok("GET", f"{MARKET}/offers/{offer_id}/events?timeout=2")) or len(heard) >= 2, 30)
    by_id = {e["proposal"]["proposalId"]: e["proposal"] for e in heard if e["eventType"] == "ProposalEvent"}
    rejected, answered = by_id[counters[0]], by_id[counters[1]]
    assert rejected["issuerId"] == r_node.node_id and rejected["state"] == "Draft"
    assert seller.ok("GET", f"{MARKET}/offers/{offer_id}/proposals/{rejected['proposalId']}")["proposalId"] == rejected["proposalId"]
    seller.ok("POST", f"{MARKET}/offers/{offer_id}/proposals/{rejected['proposalId']}/reject", {"message": "not this one"}, 204)
    # Rejected is final: rejecting again or countering it is Gone.
    assert seller.call("POST", f"{MARKET}/offers/{offer_id}/proposals/{rejected['proposalId']}/reject")[0] == 410
    assert seller.call("POST", f"{MARKET}/offers/{offer_id}/proposals/{rejected['proposalId']}",
                       {"properties": offer_props, "constraints": "()"})[0] == 410
    ours = seller.ok("POST", f"{MARKET}/offers/{offer_id}/proposals/{answered['proposalId']}",
                     {"properties": offer_props, "constraints": "()"}, 201)
    gone = wait_for("the rejection", lambda: buyer.ok("GET", f"{MARKET}/demands/{subs[0]}/events?timeout=2"), 30)
    assert gone[0]["eventType"] == "ProposalRejectedEvent" and gone[0]["proposalId"] == counters[0]
    assert gone[0]["reason"]["message"] == "not this one"

    draft = wait_for("the seller's counter", lambda: buyer.ok("GET", f"{MARKET}/demands/{subs[1]}/events?timeout=2"), 30)
    assert draft[0]["proposal"]["proposalId"] == ours
    valid_to = _iso(datetime.now(timezone.utc) + timedelta(minutes=10))
    agreement_id = buyer.ok("POST", f"{MARKET}/agreements", {"proposalId": ours, "validTo": valid_to}, 201)
    buyer.ok("POST", f"{MARKET}/agreements/{agreement_id}/confirm", status=204)
    proposed = wait_for("an AgreementEvent", lambda: seller.ok("GET", f"{MARKET}/offers/{offer_id}/events?timeout=2"), 30)
    assert proposed[0]["eventType"] == "AgreementEvent"
    agreement = proposed[0]["agreement"]
    assert agreement["agreementId"] == agreement_id and agreement["state"] == "Pending"
    assert agreement["demand"]["requestorId"] == r_node.node_id and agreement["offer"]["properties"]["golem.runtime.name"] == "rest-test"
    seller.ok("POST", f"{MARKET}/agreements/{agreement_id}/approve", status=204)
    buyer.ok("POST", f"{MARKET}/agreements/{agreement_id}/wait?timeout=15", status=204)
    assert [(e["eventType"]) for e in seller.ok("GET", f"{MARKET}/agreementEvents?timeout=1")] == ["AgreementApprovedEvent"]
    [entry] = seller.ok("GET", f"{MARKET}/agreements")
    assert entry["id"] == agreement_id and entry["role"] == "Provider" and "approvedDate" in entry

    buyer.ok("POST", f"{MARKET}/agreements/{agreement_id}/terminate", {"message": "enough"}, 204)
    ended = wait_for(
        "the termination", lambda: [e for e in seller.ok("GET", f"{MARKET}/agreementEvents?timeout=1")
                                    if e["eventType"] == "AgreementTerminatedEvent"], 30,
    )
    assert ended[0]["terminator"] == "Requestor" and ended[0]["reason"]["message"] == "enough"
    # The seller may terminate too: a repeat on an ended agreement is a no-op.
    seller.ok("POST", f"{MARKET}/agreements/{agreement_id}/terminate", {"message": "also"}, 204)
    seller.ok("DELETE", f"{MARKET}/offers/{offer_id}", status=204)
    assert seller.call("DELETE", f"{MARKET}/offers/{offer_id}")[0] == 410
    assert seller.call("DELETE", f"{MARKET}/offers/nope")[0] == 404
    assert seller.call("GET", f"{MARKET}/offers/{offer_id}/events?timeout=0")[0] == 404


def test_allocations_over_http_on_a_local_chain(testnet: Testnet, tmp_path: Path) -> None:
    """What golem-core and yapapi send (empty amounts, a 10-year timeout) gets a full Allocation; amend, decorate, release."""
    from tests.integration.payment_support import local_chain, payment_call, payment_env

    with local_chain(tmp_path) as local:
        node = testnet.add("payer", env=payment_env(local, **api_env()))
        payment_call(node, "fund", amount="10", timeout_s=120)
        api = Api(node, app_key(node))
        [account] = api.ok("GET", "/payment-api/v1/requestorAccounts")
        assert account == {"platform": "erc20-local-tglm", "address": node.node_id, "driver": "erc20", "network": "local",
                           "token": "tglm", "send": True, "receive": False}
        now = datetime.now(timezone.utc)
        body = {
            "allocationId": "", "address": node.node_id, "paymentPlatform": "erc20-local-tglm", "totalAmount": "2.5",
            "spentAmount": "", "remainingAmount": "", "timestamp": _iso(now), "timeout": _iso(now + timedelta(days=3650)),
            "makeDeposit": False,
        }
        created = wait_for("an allocation (once the balance is known)",
                           lambda: (r := api.call("POST", "/payment-api/v1/allocations", body))[0] == 201 and r[1], 30)
        assert created["totalAmount"] == "2.5" and created["spentAmount"] == "0" and created["remainingAmount"] == "2.5"
        assert created["paymentPlatform"] == "erc20-local-tglm" and created["address"] == node.node_id and created["allocationId"]
        allocation_id = created["allocationId"]
        assert api.ok("GET", f"/payment-api/v1/allocations/{allocation_id}") == created
        # The platform may also come as {driver, network, token}; more than the account holds is refused.
        status, answer = api.call("POST", "/payment-api/v1/allocations",
                                  {"totalAmount": "1000", "paymentPlatform": {"driver": "erc20", "network": "local"}})
        assert status == 400 and "insufficient" in answer["message"]
        for bad in ({"totalAmount": "-1"}, {"totalAmount": 5}, {"totalAmount": "1", "timeout": "never"},
                    {"totalAmount": "1", "paymentPlatform": "erc20-nowhere-tglm"}, {"totalAmount": "1", "address": "0x" + "0" * 40}):
            status, answer = api.call("POST", "/payment-api/v1/allocations", bad)
            assert status == 400 and answer["message"], (bad, status, answer)
        amended = api.ok("PUT", f"/payment-api/v1/allocations/{allocation_id}", {"totalAmount": "3"})
        assert amended["totalAmount"] == "3" and amended["remainingAmount"] == "3"
        decoration = api.ok("GET", f"/payment-api/v1/demandDecorations?allocationIds={allocation_id}")
        props = {p["key"]: p["value"] for p in decoration["properties"]}
        assert props["golem.com.payment.platform.erc20-local-tglm.address"] == node.node_id
        assert decoration["constraints"] == ["(golem.com.payment.platform.erc20-local-tglm.address=*)"]
        assert [a["allocationId"] for a in api.ok("GET", "/payment-api/v1/allocations")] == [allocation_id]
        assert api.call("GET", "/payment-api/v1/demandDecorations?allocationIds=nope")[0] == 404
        api.ok("DELETE", f"/payment-api/v1/allocations/{allocation_id}")
        assert api.call("GET", f"/payment-api/v1/allocations/{allocation_id}")[0] == 404
        assert api.call("DELETE", f"/payment-api/v1/allocations/{allocation_id}")[0] == 404
        assert api.ok("GET", "/payment-api/v1/allocations") == []
        # Documents that do not exist; acceptances that are malformed.
        assert api.call("GET", "/payment-api/v1/invoices/nope")[0] == 404
        assert api.call("POST", "/payment-api/v1/invoices/nope/accept", {"totalAmountAccepted": "1", "allocationId": "a"})[0] == 404
        for bad in ({"totalAmountAccepted": "x", "allocationId": "a"}, {"totalAmountAccepted": "1"}, {}):
            assert api.call("POST", "/payment-api/v1/debitNotes/nope/accept", bad)[0] == 400
        assert api.call("POST", "/payment-api/v1/debitNotes/nope/reject",
                        {"rejectionReason": "BAD", "totalAmountAccepted": "0"})[0] == 400
        assert api.ok("GET", "/payment-api/v1/invoiceEvents?timeout=0") == []


def test_a_node_runs_without_its_api_when_disabled_or_its_port_is_taken(testnet: Testnet) -> None:
    first = testnet.add("first", env=api_env())
    port = json.loads((first.data_dir / "node.json").read_text())["api"].rpartition(":")[2]
    taken = testnet.add("taken", env={"LOAM_API__PORT": port})
    off = testnet.add("off", env={"LOAM_API__ENABLED": "false", **api_env()})
    for node in (taken, off):
        assert json.loads((node.data_dir / "node.json").read_text())["api"] is None
        assert node.alive() and node.status().node_id == node.node_id
    assert "api_not_started" in taken.log_path.read_text()
    # The first node's API is untouched by the second's attempt.
    assert Api(first, app_key(first)).ok("GET", "/me")["identity"] == first.node_id
