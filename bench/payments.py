"""Invoices from many providers settled in batches on a local chain (anvil), checked on the chain.

    python bench/payments.py --providers 10 --invoices 200

A requestor node and N wasmtime provider nodes on anvil with the test GLM token and the
multi-transfer contract. The requestor makes M agreements spread over the providers (all
providers at once, one agreement at a time each), each with one tiny activity (created and
destroyed), pays them from one allocation with automatic acceptance, and terminates them;
each provider issues its invoice through its ledger, the requestor accepts it and its
driver pays in batches. The last line printed is one JSON object:

- invoices: invoices paid; txs: payment transactions (not counting the one approve);
- gas_per_payment: gas of those transactions / invoices paid;
- settle_s: from the last invoice issued to every invoice Settled on its provider (verified on chain);
- exactly_once: true only if every invoice was paid once, read from the chain: each provider's
  token balance equals the sum of its invoices, the Transfer logs from the requestor are
  exactly one per payee per payment transaction the requestor recorded, and each agreement
  has one confirmed payment of its invoice's amount.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.payment import chain as ch  # noqa: E402
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for  # noqa: E402
from tests.integration.payment_support import (  # noqa: E402
    PLATFORM,
    activity_call,
    db_rows,
    local_chain,
    now_ms,
    payment_call,
    payment_env,
    payment_transfers,
    provider_env,
    token_balance,
    wasm_package,
)

FUNDS_GLM = 1000
NO_API = {"LOAM_API__ENABLED": "false"}  # the bench drives nodes through their control channel only


def _agree(requestor: NodeProcess, provider: NodeProcess, package: str) -> str:
    """One Approved agreement with this provider (the demand names it, so no other answers)."""
    props = {
        "golem.node.debug.subnet": requestor.subnet,
        "golem.srv.comp.expiration": now_ms() + 3_600_000,
        f"golem.com.payment.platform.{PLATFORM}.address": requestor.node_id,
        "golem.srv.comp.task_package": package,
    }
    constraints = f"(&(golem.runtime.name=wasmtime)(golem.node.id.name={provider.name}))"
    sub = market_call(requestor, "subscribe_demand", {"properties": props, "constraints": constraints})
    try:
        def proposal(state: str) -> list[dict[str, Any]]:
            events = market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 0.5, "max_events": 100})
            return [e["proposal"] for e in events if e.get("proposal") and e["proposal"]["state"] == state]

        initial = wait_for("the provider's offer", lambda: proposal("Initial"), 60)
        market_call(requestor, "counter_proposal", {
            "sub_id": sub, "proposal_id": initial[0]["proposal_id"], "properties": props, "constraints": "()",
        })  # fmt: skip
        draft = wait_for("the provider's Draft", lambda: proposal("Draft"), 60)
        agreement_id = market_call(requestor, "create_agreement", {
            "proposal_id": draft[0]["proposal_id"], "valid_to_ms": now_ms() + 3_600_000,
        })  # fmt: skip
        market_call(requestor, "confirm_agreement", {"agreement_id": agreement_id})
        state = market_call(requestor, "wait_agreement", {"agreement_id": agreement_id, "timeout_s": 30})
        assert state == "Approved", f"agreement with {provider.name}: {state}"
        return agreement_id
    finally:
        market_call(requestor, "unsubscribe", {"sub_id": sub})


def _paid_job(requestor: NodeProcess, provider: NodeProcess, package: str, allocation_id: str) -> str:
    """An agreement paid from the allocation, one tiny activity, then terminated: the provider invoices it."""
    agreement_id = _agree(requestor, provider, package)
    payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id, allocation_id=allocation_id)
    activity_id = activity_call(requestor, "create", agreement_id=agreement_id)["activity_id"]
    activity_call(requestor, "destroy", activity_id=activity_id)
    market_call(requestor, "terminate_agreement", {"agreement_id": agreement_id, "reason": {"message": "bench"}})
    return agreement_id


def _issued_invoices(provider: NodeProcess) -> list[dict[str, Any]]:
    return [d for d in payment_call(provider, "documents", kind="invoice", timeout_s=60) if d["role"] == "issued"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--invoices", type=int, default=200, help="agreements, one invoice each")
    parser.add_argument("--batch-interval-s", type=float, default=5.0, help="the requestor driver's batching cycle")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loam-bench-payments-"))
    per = [args.invoices // args.providers + (1 if i < args.invoices % args.providers else 0) for i in range(args.providers)]
    started = time.monotonic()

    def say(what: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {what}", file=sys.stderr, flush=True)

    with local_chain(base) as local, wasm_package(base) as package:
        net = Testnet(base / "nodes")
        try:
            requestor = net.add("requestor", fast_timers=False, env=payment_env(
                local, LOAM_PAYMENT__BATCH_INTERVAL_S=str(args.batch_interval_s), **NO_API,
            ))  # fmt: skip
            providers = [
                net.add(f"provider-{i}", start=False, fast_timers=False, env=provider_env(
                    local, LOAM_PROVIDER__MAX_AGREEMENTS=str(max(per) + 10), LOAM_PROVIDER__START_FEE="0.001", **NO_API,
                ))  # fmt: skip
                for i in range(args.providers)
            ]
            for p in providers:  # all at once: a node's start-up is mostly waiting
                p.start(wait=False)
            for p in providers:
                p.wait_ready(timeout_s=120)
            say("nodes started")
            # Warm-up: tokens and gas for the requestor, every offer heard.
            payment_call(requestor, "fund", amount=str(FUNDS_GLM), timeout_s=120)
            wait_for("the balance known", lambda: payment_call(requestor, "status")["balances"], 60)
            allocation = payment_call(requestor, "create_allocation", amount=str(FUNDS_GLM // 2))
            wait_for("every offer", lambda: len(market_call(requestor, "known_offers", {})) >= args.providers, 120, 0.5)

            say("funded; every offer heard")
            done = [0]
            lock = threading.Lock()
            t_jobs = time.monotonic()

            def worker(i: int) -> list[str]:
                out = []
                for _ in range(per[i]):
                    out.append(_paid_job(requestor, providers[i], package, allocation["allocation_id"]))
                    with lock:
                        done[0] += 1
                        if done[0] % 20 == 0:
                            say(f"{done[0]} agreements done")
                return out

            with ThreadPoolExecutor(args.providers) as pool:
                agreement_ids = [a for chunk in pool.map(worker, range(args.providers)) for a in chunk]
            jobs_s = time.monotonic() - t_jobs
            say("every agreement done")

            # Every invoice issued and then Settled on its provider (verified on the chain there).
            def all_settled() -> list[dict[str, Any]] | None:
                docs = [d for p in providers for d in _issued_invoices(p)]
                return docs if len(docs) == len(agreement_ids) and all(d["status"] == "Settled" for d in docs) else None

            invoices = wait_for("every invoice settled", all_settled, args.timeout_s, interval_s=0.25)
            settled_at_ms = now_ms()
            last_issued_ms = max(d["timestamp_ms"] for d in invoices)
            say("every invoice settled")

            # -- exactly once, read from the chain ---------------------------------------------
            chain = local.chain()
            problems: list[str] = []
            by_provider: dict[str, int] = {}
            for p in providers:
                expected = sum(int(d["amount_wei"]) for d in _issued_invoices(p))
                by_provider[p.node_id] = expected
                if token_balance(local, p.node_id) != expected:
                    problems.append(f"{p.name} holds {token_balance(local, p.node_id)} wei, invoiced {expected}")
            confirmed = db_rows(requestor, "SELECT tx_id, tx_hash FROM transactions WHERE status = 'confirmed'")
            others = db_rows(requestor, "SELECT tx_hash, status FROM transactions WHERE status != 'confirmed'")
            payees = db_rows(requestor, "SELECT tx_id, payee FROM payments WHERE status = 'confirmed'")
            pending = db_rows(requestor, "SELECT count(*) FROM payments WHERE status != 'confirmed'")[0][0]
            tx_of = {tx_id: h.lower() for tx_id, h in confirmed}
            expected_logs = {(tx_of[tx_id], payee.lower()) for tx_id, payee in payees if tx_id in tx_of}
            logs = payment_transfers(local, requestor.node_id)
            got_logs = [(t.tx_hash.lower(), t.recipient.lower()) for t in logs]
            if sorted(got_logs) != sorted(expected_logs):
                problems.append(f"{len(got_logs)} Transfer logs from the requestor, {len(expected_logs)} expected")
            for p in providers:
                if sum(t.amount_wei for t in logs if t.recipient.lower() == p.node_id.lower()) != by_provider[p.node_id]:
                    problems.append(f"Transfer logs to {p.name} do not add up to its invoices")
            scheduled = payment_call(requestor, "scheduled", timeout_s=60)
            amount_of = {d["agreement_id"]: int(d["amount_wei"]) for d in invoices}
            per_agreement: dict[str, list[int]] = {}
            for s in scheduled:
                if s["status"] == "confirmed":
                    per_agreement.setdefault(s["agreement_id"], []).append(int(s["amount_wei"]))
            if per_agreement != {a: [amount_of[a]] for a in agreement_ids}:
                problems.append("some agreement has not exactly one confirmed payment of its invoice's amount")
            if pending:
                problems.append(f"{pending} driver payments not confirmed")
            gas = 0
            for _, h in confirmed:
                r = ch.receipt(chain, h)
                if r is None or not r.succeeded:
                    problems.append(f"payment transaction {h} has no successful receipt")
                else:
                    gas += r.gas_used
            for h, _ in others:  # a reverted transaction that was mined cost gas too
                r = ch.receipt(chain, h)
                gas += r.gas_used if r is not None else 0
            paid_total = int(payment_call(requestor, "status")["paid_wei"])
            if paid_total != sum(by_provider.values()):
                problems.append(f"the requestor's books say {paid_total} wei paid, the invoices {sum(by_provider.values())}")
            say("checked on the chain")
        finally:
            net.stop_all()
    for problem in problems:
        print("NOT EXACTLY ONCE:", problem, file=sys.stderr)
    result = {
        "bench": "payments",
        "providers": args.providers,
        "invoices": len(invoices),
        "txs": len(confirmed),
        "txs_replaced_or_failed": len(others),
        "transfer_logs": len(got_logs),
        "gas_total": gas,
        "gas_per_payment": round(gas / max(len(invoices), 1), 1),
        "settle_s": round((settled_at_ms - last_issued_ms) / 1000.0, 2),
        "jobs_s": round(jobs_s, 1),
        "batch_interval_s": args.batch_interval_s,
        "paid_wei": str(paid_total),
        "exactly_once": not problems,
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(
        f"{result['invoices']} invoices from {args.providers} providers paid in {result['txs']} transactions, "
        f"{result['gas_per_payment']} gas each; settled {result['settle_s']} s after the last invoice",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
