"""`loam run`: one exe-script on one provider, from demand to results, through the running node.

A small requestor for trying activities by hand: it subscribes a demand, takes the first
(best-ranked) provider that agrees, runs the script in an activity, prints each command's
result, and ends the activity and the agreement.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from node.control import ControlClient
from protocol.control import ControlCall, NetStatusRequest
from protocol.errors import ControlError

__all__ = ["run_script"]


def run_script(
    data_dir: Path,
    runtime: str,
    package: str,
    script: list[dict[str, Any]],
    *,
    constraints: str = "",
    rank: str = "-golem.com.pricing.model.linear.coeffs[0]",
    platform: str | None = None,
    subnet: str = "public",
    timeout_s: float = 120.0,
    budget_glm: str = "5",
    wait_payment_s: float = 0.0,
    pay: bool = True,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run script on a provider of runtime; returns the results (plain dicts).

    With payments enabled on the node (and pay), the work is paid from a new allocation of budget_glm:
    debit notes and the invoice are checked and accepted automatically, and with
    wait_payment_s > 0 it waits that long for the invoice to be settled on the chain.

    Raises:
        ControlError: no node, no provider, or a step failed (the message says which).
    """
    client = ControlClient(data_dir)

    def call(target: str, method: str, wait_s: float = 30.0, **args: Any) -> Any:
        return client.call(ControlCall(target, method, args), timeout_s=wait_s + 10).value

    me = client.call(NetStatusRequest()).node_id
    now_ms = int(time.time() * 1000)
    allocation = _allocate(call, platform, budget_glm, say) if pay else None
    if allocation is not None:
        platform = allocation["platform"]
    platform = platform or "erc20-holesky-tglm"
    props = {
        "golem.node.debug.subnet": subnet,
        "golem.srv.comp.expiration": now_ms + int(max(timeout_s, 300) * 1000) + 60_000,
        f"golem.com.payment.platform.{platform}.address": me,
        "golem.srv.comp.task_package": package,
    }
    demand = f"(&(golem.runtime.name={runtime}){constraints})" if constraints else f"(golem.runtime.name={runtime})"
    sub = call("market", "subscribe_demand", properties=props, constraints=demand, rank=rank, ttl_s=600.0)
    agreement_id = None
    try:
        deadline = time.monotonic() + timeout_s
        offers: list[dict[str, Any]] = []  # Initial proposals, best rank first, not yet tried
        waiting_since: float | None = None  # when we countered the offer we are trying
        while agreement_id is None:
            if time.monotonic() > deadline:
                raise ControlError(f"no {runtime} provider agreed within {timeout_s:.0f} s (see `loam market offers`)")
            if waiting_since is None and offers:
                proposal = offers.pop(0)
                say(f"offer from {proposal['issuer_id']}: countering")
                call("market", "counter_proposal", sub_id=sub, proposal_id=proposal["proposal_id"],
                     properties=props, constraints="()")
                waiting_since = time.monotonic()
            elif waiting_since is not None and time.monotonic() - waiting_since > 10:
                say("no answer in 10 s; trying the next offer")
                waiting_since = None
            for event in call("market", "collect", sub_id=sub, max_events=50, timeout_s=1.0):
                proposal = event.get("proposal")
                if event.get("type") == "ProposalRejectedEvent":
                    say(f"a provider refused: {event.get('reason', {}).get('message', '')}")
                    waiting_since = None
                if not proposal:
                    continue
                if proposal["state"] == "Initial":
                    offers.append(proposal)
                elif proposal["state"] == "Draft" and agreement_id is None:
                    candidate = call("market", "create_agreement", proposal_id=proposal["proposal_id"],
                                     valid_to_ms=int(time.time() * 1000) + 600_000)
                    call("market", "confirm_agreement", agreement_id=candidate)
                    state = call("market", "wait_agreement", wait_s=20, agreement_id=candidate, timeout_s=20)
                    waiting_since = None
                    if state == "Approved":
                        agreement_id = candidate
                        say(f"agreement {candidate[:16]} approved by {proposal['issuer_id']}")
                        if allocation is not None:
                            call("payment", "pay_agreement_from", agreement_id=candidate,
                                 allocation_id=allocation["allocation_id"])
                    else:
                        say(f"agreement with {proposal['issuer_id']} ended {state}; trying another provider")
    finally:
        call("market", "unsubscribe", sub_id=sub)
    try:
        created = call("activity", "create", agreement_id=agreement_id)
        if created["state"] != "Initialized":
            raise ControlError(f"the provider did not start the activity: {created['reason'] or created['state']}")
        activity_id = created["activity_id"]
        say(f"activity {activity_id[:16]} started")
        batch = call("activity", "exec", activity_id=activity_id, script=script)
        results: list[dict[str, Any]] = call(
            "activity", "results", wait_s=timeout_s, activity_id=activity_id, batch_id=batch, timeout_s=timeout_s
        )
        call("activity", "destroy", activity_id=activity_id)
    finally:
        call("market", "terminate_agreement", agreement_id=agreement_id, reason={"message": "loam run finished"})
    if allocation is not None and wait_payment_s > 0:
        _wait_for_payment(call, agreement_id, wait_payment_s, say)
    return results


def _allocate(call: Callable[..., Any], platform: str | None, budget_glm: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    """An allocation for the run, or None when the node runs no payments."""
    try:
        call("payment", "accounts")
    except ControlError as exc:
        if "no control target 'payment'" in str(exc):
            return None
        raise
    allocation = call("payment", "create_allocation", amount=budget_glm, platform=platform)
    say(f"allocation {allocation['allocation_id'][:16]}: {allocation['total_glm']} GLM on {allocation['platform']}")
    return allocation


def _wait_for_payment(call: Callable[..., Any], agreement_id: str, timeout_s: float, say: Callable[[str], None]) -> None:
    """Wait until the agreement's invoice is settled on the chain; say what was paid, and how."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        invoices = [d for d in call("payment", "documents", kind="invoice") if d["agreement_id"] == agreement_id]
        if invoices and invoices[0]["status"] == "Settled":
            txs = sorted({p["tx_hash"] for p in call("payment", "payments") if agreement_id in p["agreements"]})
            say(f"invoice {invoices[0]['document_id'][:16]} of {invoices[0]['amount_glm']} GLM settled in {', '.join(txs)}")
            return
        time.sleep(0.5)
    raise ControlError(f"the invoice of agreement {agreement_id} was not settled within {timeout_s:.0f} s (see `loam payment status`)")
