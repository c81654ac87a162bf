"""The market with real node processes: matching and rank order, negotiation, agreements and their ends.

A requestor node drives the market through the control channel; provider nodes run the
provider agent (LOAM_PROVIDER__ENABLED=true), which publishes an offer from its settings,
counters acceptable proposals and approves agreements up to its max_agreements.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from typing import Any, Callable

import pytest

from protocol.errors import ControlError, SignatureError
from protocol.identity import Identity
from protocol.market import AgreementProposed, AgreementTerms, sign_act, verify_act
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for
from tests.integration.test_hostile import Attacker

pytestmark = pytest.mark.integration

SUBNET = "public"  # the subnet NodeProcess gives its nodes
PLATFORM = "erc20-holesky-tglm"  # the default provider payment platform
WASM_2GIB = "(&(golem.runtime.name=wasmtime)(golem.inf.mem.gib>=2))"
CHEAPEST_CPU_FIRST = "-golem.com.pricing.model.linear.coeffs[0]"
TEN_MINUTES_MS = 10 * 60_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def provider_env(
    runtime: str = "wasmtime", *, cpu_per_hour: float = 0.025, memory_gib: float = 4.0, max_agreements: int = 5
) -> dict[str, str]:
    """Environment of a node that sells compute with these settings."""
    return {
        "LOAM_PROVIDER__ENABLED": "true",
        "LOAM_PROVIDER__RUNTIME": runtime,
        "LOAM_PROVIDER__CPU_PER_HOUR": str(cpu_per_hour),
        "LOAM_PROVIDER__MEMORY_GIB": str(memory_gib),
        "LOAM_PROVIDER__MAX_AGREEMENTS": str(max_agreements),
    }


def demand_properties(requestor: NodeProcess, *, expiration_ms: int | None = None) -> dict[str, Any]:
    """What a demand must carry for the provider agent to take it."""
    return {
        "golem.node.debug.subnet": SUBNET,
        "golem.srv.comp.expiration": expiration_ms if expiration_ms is not None else _now_ms() + 3600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": requestor.node_id,
    }


def offer_of(node: NodeProcess, provider: NodeProcess) -> dict[str, Any] | None:
    """The provider's offer as node knows it, if it does."""
    return next((o for o in node.market("known_offers") if o["provider_id"] == provider.node_id), None)


def wait_for_offers(node: NodeProcess, providers: list[NodeProcess], timeout_s: float = 15.0) -> None:
    """Wait until node has heard the offers of all providers."""
    wait_for(
        f"{node.name} to hear {len(providers)} offers",
        lambda: all(offer_of(node, p) is not None for p in providers),
        timeout_s,
    )


def collect_until(
    node: NodeProcess, sub_id: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Collect events of a subscription until done(all events so far) holds."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not done(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out collecting events of {sub_id} on {node.name}; got {events}")
        events += market_call(node, "collect", {"sub_id": sub_id, "max_events": 50, "timeout_s": min(left, 1.0)})
    return events


def next_event(node: NodeProcess, sub_id: str, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next event of a kind (ProposalEvent, ProposalRejectedEvent, ...); earlier others are dropped."""
    events = collect_until(node, sub_id, lambda evs: any(e["type"] == kind for e in evs), timeout_s)
    return next(e for e in events if e["type"] == kind)


def subscribe(requestor: NodeProcess, constraints: str = WASM_2GIB, rank: str = "", **props: Any) -> str:
    """Subscribe a demand the provider agent takes."""
    return requestor.market(
        "subscribe_demand", properties=demand_properties(requestor, **props), constraints=constraints, rank=rank
    )


def counter(requestor: NodeProcess, sub_id: str, proposal: dict[str, Any], **props: Any) -> str:
    """Counter a provider's proposal with the demand's properties; returns our proposal's id."""
    return requestor.market(
        "counter_proposal", sub_id=sub_id, proposal_id=proposal["proposal_id"],
        properties=demand_properties(requestor, **props), constraints=WASM_2GIB,
    )


def negotiate(requestor: NodeProcess, provider: NodeProcess) -> tuple[str, dict[str, Any]]:
    """Subscribe a demand and counter the provider's Initial proposal; returns (sub id, the provider's Draft)."""
    sub = subscribe(requestor)
    initial = next_event(requestor, sub, "ProposalEvent")["proposal"]
    assert initial["issuer_id"] == provider.node_id and initial["state"] == "Initial"
    ours = counter(requestor, sub, initial)
    draft = next_event(requestor, sub, "ProposalEvent")["proposal"]
    assert draft["state"] == "Draft" and draft["prev_proposal_id"] == ours
    return sub, draft


def agree(requestor: NodeProcess, draft: dict[str, Any], timeout_s: float = 10.0) -> tuple[str, str]:
    """Create and confirm an agreement from the provider's Draft; returns (agreement id, its state after waiting)."""
    aid = requestor.market("create_agreement", proposal_id=draft["proposal_id"], valid_to_ms=_now_ms() + TEN_MINUTES_MS)
    requestor.market("confirm_agreement", agreement_id=aid)
    return aid, market_call(requestor, "wait_agreement", {"agreement_id": aid, "timeout_s": timeout_s})


def approved_agreement(requestor: NodeProcess, provider: NodeProcess) -> str:
    """A full negotiation to an agreement both sides hold as Approved."""
    _, draft = negotiate(requestor, provider)
    aid, state = agree(requestor, draft)
    assert state == "Approved"
    wait_for("the provider's approval on its side", lambda: state_on(provider, aid) == "Approved", 5)
    return aid


def state_on(node: NodeProcess, agreement_id: str) -> str:
    """The agreement's state on a node."""
    return node.market("agreement_state", agreement_id=agreement_id)


def events_of(node: NodeProcess, agreement_id: str) -> list[dict[str, Any]]:
    """The node's agreement events of one agreement."""
    return [e for e in node.market("agreement_events", after_ms=0, max_events=1000) if e["agreement_id"] == agreement_id]


def log_events(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    """Records of one event name in the node's JSON log."""
    found = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


def terms_of(record: dict[str, Any]) -> AgreementTerms:
    """The AgreementTerms of an agreement record as the control channel returns it."""
    return AgreementTerms(**{k: v for k, v in record["terms"].items() if k != "type"})


def start_market(testnet: Testnet, *providers: dict[str, str]) -> tuple[NodeProcess, list[NodeProcess]]:
    """A requestor, then providers with these environments; returns once the requestor heard every offer."""
    requestor = testnet.add("requestor")
    nodes = [testnet.add(f"provider-{i}", start=False, env=env) for i, env in enumerate(providers)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    wait_for_offers(requestor, nodes)
    return requestor, nodes


# -- matching --------------------------------------------------------------------------------


def test_demand_gets_initial_proposals_from_matching_offers_only_in_rank_order(testnet: Testnet) -> None:
    requestor, (mid, cheap, wide, small, vm) = start_market(
        testnet,
        provider_env("wasmtime", cpu_per_hour=0.05, memory_gib=4),
        provider_env("wasmtime", cpu_per_hour=0.01, memory_gib=2),
        provider_env("wasmtime", cpu_per_hour=0.03, memory_gib=16),
        provider_env("wasmtime", cpu_per_hour=0.001, memory_gib=1),  # cheapest, but too little memory
        provider_env("vm", cpu_per_hour=0.002, memory_gib=32),  # another runtime
    )
    sub = subscribe(requestor, rank=CHEAPEST_CPU_FIRST)
    events = collect_until(requestor, sub, lambda evs: len(evs) >= 3)
    events += market_call(requestor, "collect", {"sub_id": sub, "max_events": 50, "timeout_s": 1.0})  # nothing more may come

    assert all(e["type"] == "ProposalEvent" and e["proposal"]["state"] == "Initial" for e in events)
    assert [e["proposal"]["issuer_id"] for e in events] == [cheap.node_id, wide.node_id, mid.node_id]
    for event in events:
        proposal = event["proposal"]
        offer = offer_of(requestor, next(p for p in (cheap, wide, mid) if p.node_id == proposal["issuer_id"]))
        assert proposal["offer_id"] == offer["offer_id"] and proposal["demand_id"] == sub
        assert proposal["properties"] == offer["properties"]
    # Two-way: a demand without the subnet the providers ask for matches nothing.
    bare = requestor.market(
        "subscribe_demand", properties={"golem.srv.comp.expiration": _now_ms() + 3600_000}, constraints=WASM_2GIB
    )
    assert market_call(requestor, "collect", {"sub_id": bare, "max_events": 50, "timeout_s": 1.0}) == []
    assert {small.node_id, vm.node_id}.isdisjoint(e["proposal"]["issuer_id"] for e in events)


# -- negotiation -----------------------------------------------------------------------------


def test_negotiation_ends_in_an_agreement_both_sides_hold_approved_and_signed(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    _, draft = negotiate(requestor, provider)
    # The provider's answer names the payment platform and takes the demand's expiration.
    assert draft["issuer_id"] == provider.node_id
    assert draft["properties"]["golem.com.payment.chosen-platform"] == PLATFORM
    assert isinstance(draft["properties"]["golem.srv.comp.expiration"], int)

    aid, state = agree(requestor, draft)
    assert state == "Approved"
    wait_for("the agreement on the provider", lambda: state_on(provider, aid) == "Approved", 5)
    ours = requestor.market("get_agreement", agreement_id=aid)
    theirs = provider.market("get_agreement", agreement_id=aid)
    assert (ours["role"], theirs["role"]) == ("requestor", "provider")
    assert ours["terms"] == theirs["terms"]
    assert ours["terms"]["offer_proposal_id"] == draft["proposal_id"]
    assert ours["terms"]["offer_properties"] == draft["properties"]
    for field in ("requestor_signature", "provider_signature", "approved_ms"):
        assert ours[field] and ours[field] == theirs[field], field
    terms = terms_of(ours)
    verify_act(requestor.node_id, ours["requestor_signature"], "propose", terms)
    verify_act(provider.node_id, ours["provider_signature"], "approve", terms, ours["approved_ms"])
    for node in (requestor, provider):
        assert [e["kind"] for e in events_of(node, aid)] == ["AgreementApprovedEvent"]
        assert [r["terms"]["agreement_id"] for r in node.market("list_agreements", state="Approved")] == [aid]


def test_provider_rejects_a_proposal_whose_expiration_is_too_soon(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    sub = subscribe(requestor)
    initial = next_event(requestor, sub, "ProposalEvent")["proposal"]
    ours = counter(requestor, sub, initial, expiration_ms=_now_ms() + 60_000)  # the minimum is 300 s
    rejected = next_event(requestor, sub, "ProposalRejectedEvent")
    assert rejected["proposal_id"] == ours
    assert "below the minimum" in rejected["reason"]["message"]
    # A proposal that keeps the rules gets a Draft in the same subscription.
    counter(requestor, sub, initial)
    assert next_event(requestor, sub, "ProposalEvent")["proposal"]["state"] == "Draft"


def test_provider_at_max_agreements_rejects_further_agreements_and_proposals(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env(max_agreements=1))
    _, first = negotiate(requestor, provider)
    _, second = negotiate(requestor, provider)  # countered while there was capacity
    aid1, state1 = agree(requestor, first)
    assert state1 == "Approved"
    aid2, state2 = agree(requestor, second)
    assert state2 == "Rejected"
    rejected = requestor.market("get_agreement", agreement_id=aid2)
    assert "no free capacity" in rejected["reason"]["message"]
    assert rejected["terminator"] == provider.node_id
    assert state_on(provider, aid2) == "Rejected"
    assert [e["kind"] for e in events_of(requestor, aid2)] == ["AgreementRejectedEvent"]

    sub = subscribe(requestor)
    initial = next_event(requestor, sub, "ProposalEvent")["proposal"]
    ours = counter(requestor, sub, initial)
    refusal = next_event(requestor, sub, "ProposalRejectedEvent")
    assert refusal["proposal_id"] == ours and "no free capacity" in refusal["reason"]["message"]

    # Once the agreement ends, the provider takes new ones again.
    requestor.market("terminate_agreement", agreement_id=aid1, reason={"message": "done"})
    wait_for("the termination on the provider", lambda: state_on(provider, aid1) == "Terminated", 5)
    approved_agreement(requestor, provider)


def test_provider_approves_no_more_agreements_than_its_cores_can_run(testnet: Testnet) -> None:
    # Room for five agreements, but its offer sells each activity its one core: only one fits.
    requestor, (provider,) = start_market(testnet, provider_env(max_agreements=5))
    _, first = negotiate(requestor, provider)
    _, second = negotiate(requestor, provider)
    aid1, state1 = agree(requestor, first)
    assert state1 == "Approved"
    aid2, state2 = agree(requestor, second)
    assert state2 == "Rejected"
    message = requestor.market("get_agreement", agreement_id=aid2)["reason"]["message"]
    assert "no free cores" in message and "1 of 1 are claimed by 1 approved agreement" in message, message
    requestor.market("terminate_agreement", agreement_id=aid1, reason={"message": "done"})
    wait_for("the termination on the provider", lambda: state_on(provider, aid1) == "Terminated", 5)
    approved_agreement(requestor, provider)  # its core is free again


def test_requestor_rejects_a_providers_proposals(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    sub = subscribe(requestor)
    initial = next_event(requestor, sub, "ProposalEvent")["proposal"]
    requestor.market("reject_proposal", sub_id=sub, proposal_id=initial["proposal_id"], reason={"message": "too dear"})
    with pytest.raises(ControlError, match="Rejected"):
        counter(requestor, sub, initial)
    wait_for(
        "the provider agent to hear of the rejection",
        lambda: [r for r in log_events(provider, "proposal_rejected_by_requestor") if r["proposal_id"] == initial["proposal_id"]],
        5,
    )

    # The provider's Draft, too, can be rejected, and then makes no agreement.
    _, draft = negotiate(requestor, provider)
    requestor.market("reject_proposal", sub_id=draft["demand_id"], proposal_id=draft["proposal_id"], reason={"message": "no"})
    with pytest.raises(ControlError, match="Rejected"):
        requestor.market("create_agreement", proposal_id=draft["proposal_id"], valid_to_ms=_now_ms() + TEN_MINUTES_MS)
    wait_for(
        "the provider agent to hear of the second rejection",
        lambda: [r for r in log_events(provider, "proposal_rejected_by_requestor") if r["proposal_id"] == draft["proposal_id"]],
        5,
    )


def test_an_agreement_from_an_initial_proposal_is_refused_with_a_hint_to_counter_first(testnet: Testnet) -> None:
    requestor, _ = start_market(testnet, provider_env())
    sub = subscribe(requestor)
    initial = next_event(requestor, sub, "ProposalEvent")["proposal"]
    with pytest.raises(ControlError, match="counter it first"):
        requestor.market("create_agreement", proposal_id=initial["proposal_id"], valid_to_ms=_now_ms() + TEN_MINUTES_MS)
    assert requestor.market("list_agreements") == []


def test_requestor_cancels_agreements_the_provider_has_not_approved(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    # Cancelled before it was sent (state Proposal).
    _, draft = negotiate(requestor, provider)
    aid = requestor.market("create_agreement", proposal_id=draft["proposal_id"], valid_to_ms=_now_ms() + TEN_MINUTES_MS)
    assert state_on(requestor, aid) == "Proposal"
    requestor.market("cancel_agreement", agreement_id=aid, reason={"message": "changed my mind"})
    assert state_on(requestor, aid) == "Cancelled"

    # Cancelled while Pending: the provider is away when it is confirmed.
    _, draft = negotiate(requestor, provider)
    provider.stop()
    aid, state = agree(requestor, draft, timeout_s=1.0)  # wait_agreement gives up after its timeout
    assert state == "Pending"
    requestor.market("cancel_agreement", agreement_id=aid, reason={"message": "provider away"})
    record = requestor.market("get_agreement", agreement_id=aid)
    assert record["state"] == "Cancelled" and record["reason"] == {"message": "provider away"}
    assert record["terminator"] == requestor.node_id
    assert [e["kind"] for e in events_of(requestor, aid)] == ["AgreementCancelledEvent"]
    with pytest.raises(ControlError, match="Cancelled"):
        requestor.market("confirm_agreement", agreement_id=aid)


def test_a_cancellation_that_crosses_the_approval_ends_the_agreement_on_both_sides(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env(max_agreements=1))
    _, draft = negotiate(requestor, provider)
    aid = requestor.market("create_agreement", proposal_id=draft["proposal_id"], valid_to_ms=_now_ms() + TEN_MINUTES_MS)
    assert provider.proc is not None
    provider.proc.send_signal(signal.SIGSTOP)  # the provider approves only after the cancellation was sent
    try:
        requestor.market("confirm_agreement", agreement_id=aid)
        requestor.market("cancel_agreement", agreement_id=aid, reason={"message": "too slow"})
    finally:
        provider.proc.send_signal(signal.SIGCONT)
    assert state_on(requestor, aid) == "Cancelled"
    # The provider approved what it got first, then learns of the cancellation: it must not
    # keep an agreement the requestor does not have, and it keeps its capacity free.
    wait_for("the provider to end the agreement", lambda: state_on(provider, aid) in ("Cancelled", "Terminated"), 10)
    time.sleep(0.5)
    assert state_on(requestor, aid) == "Cancelled"
    approved_agreement(requestor, provider)


# -- termination -----------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["Requestor", "Provider"])
def test_either_side_terminates_and_the_other_side_learns_who_and_why(testnet: Testnet, side: str) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    aid = approved_agreement(requestor, provider)
    ender, other = (requestor, provider) if side == "Requestor" else (provider, requestor)
    reason = {"message": f"the {side.lower()} is done", "golem.requestor.code": "Success"}
    ender.market("terminate_agreement", agreement_id=aid, reason=reason)
    wait_for(f"the termination on {other.name}", lambda: state_on(other, aid) == "Terminated", 5)
    for node in (ender, other):
        record = node.market("get_agreement", agreement_id=aid)
        assert record["state"] == "Terminated"
        assert record["terminator"] == ender.node_id
        assert record["reason"] == reason
        ended = [e for e in events_of(node, aid) if e["kind"] == "AgreementTerminatedEvent"]
        assert len(ended) == 1 and ended[0]["terminator"] == side and ended[0]["reason"] == reason
    end = requestor.market("get_agreement", agreement_id=aid)
    reason_text = json.dumps(reason, sort_keys=True, separators=(",", ":"))  # as the market signs it
    verify_act(ender.node_id, end["end_signature"], "terminate", terms_of(end), reason_text, end["end_ms"])

    # Repeating it, on either side, changes nothing.
    for node in (ender, other):
        node.market("terminate_agreement", agreement_id=aid, reason={"message": "again"})
    time.sleep(0.3)
    for node in (ender, other):
        record = node.market("get_agreement", agreement_id=aid)
        assert record["terminator"] == ender.node_id and record["reason"] == reason
        assert len([e for e in events_of(node, aid) if e["kind"] == "AgreementTerminatedEvent"]) == 1


# -- restarts --------------------------------------------------------------------------------


def test_agreements_survive_restarts_of_either_node(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    aid = approved_agreement(requestor, provider)
    before = {n.name: n.market("get_agreement", agreement_id=aid) for n in (requestor, provider)}
    events_before = {n.name: events_of(n, aid) for n in (requestor, provider)}
    for node in (requestor, provider):
        node.stop()
        node.start()
        assert node.market("get_agreement", agreement_id=aid) == before[node.name]
        assert events_of(node, aid) == events_before[node.name]
    # Still a live agreement between the two: a termination after the restarts reaches the other side.
    wait_for("the provider to reconnect", lambda: requestor.node_id in provider.neighbour_ids(), 15)
    requestor.market("terminate_agreement", agreement_id=aid, reason={"message": "after restarts"})
    wait_for("the termination on the provider", lambda: state_on(provider, aid) == "Terminated", 10)


# -- hostile input ---------------------------------------------------------------------------


def test_an_agreement_with_a_forged_signature_is_refused(testnet: Testnet) -> None:
    requestor, (provider,) = start_market(testnet, provider_env())
    _, draft = negotiate(requestor, provider)
    attacker = Attacker(provider)
    try:
        attacker.handshake()
        now = _now_ms()
        terms = AgreementTerms(
            AgreementTerms.make_id(draft["proposal_id"], draft["prev_proposal_id"], attacker.identity.node_id, now),
            attacker.identity.node_id, provider.node_id, draft["demand_id"], draft["offer_id"],
            draft["prev_proposal_id"], draft["proposal_id"], demand_properties(requestor), WASM_2GIB,
            draft["properties"], draft["constraints"], now + TEN_MINUTES_MS, now,
        )
        cheaper = dataclasses.replace(
            terms, offer_properties={**draft["properties"], "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 0.0]}
        )
        forgeries = [
            AgreementProposed(terms, bytes(65)),  # no signature at all
            AgreementProposed(terms, sign_act(Identity.generate(), "propose", terms)),  # someone else's
            AgreementProposed(cheaper, sign_act(attacker.identity, "propose", terms)),  # terms changed after signing
            AgreementProposed(terms, sign_act(attacker.identity, "approve", terms)),  # another act
        ]
        for forged in forgeries:
            attacker.send(attacker.seal(forged))
        wait_for(
            "the provider's market to reject the forgeries",
            lambda: len(log_events(provider, "market_message_rejected")) >= len(forgeries),
            5,
        )
    finally:
        attacker.close()
    rejected = log_events(provider, "market_message_rejected")
    assert len(rejected) == len(forgeries)
    errors = [r["error"] for r in rejected]
    assert "does not recover a key" in errors[0], errors
    assert all(f"is not signed by {attacker.identity.node_id}" in e for e in errors[1:]), errors
    with pytest.raises(SignatureError):
        verify_act(attacker.identity.node_id, forgeries[2].requestor_signature, "propose", cheaper)
    for aid in {terms.agreement_id, cheaper.agreement_id}:
        with pytest.raises(ControlError, match="not found"):
            provider.market("get_agreement", agreement_id=aid)
    assert provider.market("list_agreements") == []
    # The provider keeps serving: the genuine requestor still gets its agreement.
    assert provider.alive()
    aid, state = agree(requestor, draft)
    assert state == "Approved" and aid != terms.agreement_id


# -- withdrawal ------------------------------------------------------------------------------


def test_withdrawn_offers_and_demands_disappear_network_wide(testnet: Testnet) -> None:
    requestor, (leaving, staying) = start_market(testnet, provider_env(), provider_env())
    offer_id = offer_of(requestor, leaving)["offer_id"]

    leaving.stop()  # a graceful stop: its provider agent withdraws the offer
    wait_for("the offer to be withdrawn on the requestor", lambda: offer_of(requestor, leaving) is None, 15)
    assert offer_of(requestor, staying) is not None
    # A demand made now gets no Initial proposal from the withdrawn offer.
    sub = subscribe(requestor)
    events = collect_until(requestor, sub, lambda evs: len(evs) >= 1)
    events += market_call(requestor, "collect", {"sub_id": sub, "max_events": 50, "timeout_s": 0.5})
    assert [e["proposal"]["offer_id"] for e in events] == [offer_of(requestor, staying)["offer_id"]]
    assert offer_id not in {o["offer_id"] for o in requestor.market("known_offers")}

    wait_for("the demand on the provider", lambda: sub in {d["demand_id"] for d in staying.market("known_demands")}, 5)
    requestor.market("unsubscribe", sub_id=sub)
    wait_for("the demand to be withdrawn", lambda: sub not in {d["demand_id"] for d in staying.market("known_demands")}, 5)
    with pytest.raises(ControlError, match="not found"):
        market_call(requestor, "collect", {"sub_id": sub, "max_events": 1, "timeout_s": 0.1})


def test_a_provider_sees_the_demands_it_heard_that_match_its_offer_ranked_by_its_offer(testnet: Testnet) -> None:
    seller = testnet.add("seller")
    buyer = testnet.add("buyer")
    wait_for("a link", lambda: buyer.node_id in seller.neighbour_ids(), 15)
    now = _now_ms()
    offer_props = {"golem.runtime.name": "wasmtime", "golem.node.debug.subnet": "public"}
    # The offer prefers demands that expire sooner.
    offer_id = market_call(seller, "subscribe_offer", {
        "properties": offer_props, "constraints": "(golem.srv.comp.expiration>0)", "rank": "-golem.srv.comp.expiration",
    })
    late = market_call(buyer, "subscribe_demand", {
        "properties": demand_properties(buyer, expiration_ms=now + 3_600_000), "constraints": "(golem.runtime.name=wasmtime)",
    })
    soon = market_call(buyer, "subscribe_demand", {
        "properties": demand_properties(buyer, expiration_ms=now + 900_000), "constraints": "(golem.runtime.name=wasmtime)",
    })
    market_call(buyer, "subscribe_demand", {  # does not match the offer: another runtime
        "properties": demand_properties(buyer), "constraints": "(golem.runtime.name=vm)",
    })

    def ranked() -> list[str]:
        return [d["demand_id"] for d in market_call(seller, "matching_demands", {"offer_id": offer_id})]

    assert wait_for("both matching demands", lambda: len(ranked()) == 2 and ranked(), 10) == [soon, late]
