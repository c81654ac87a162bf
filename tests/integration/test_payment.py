"""Payments end to end on a real chain (anvil): work on several providers, invoices, one batch, balances to the wei."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from actors.payment import chain as ch
from node.quickrun import run_script
from protocol.errors import ControlError
from tests.integration.harness import NodeProcess, Testnet, wait_for
from tests.integration.payment_support import (
    PLATFORM,
    local_chain,
    payment_call,
    payment_env,
    provider_env,
    token_balance,
    wasm_package,
)

pytestmark = pytest.mark.integration

SCRIPT = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "hello", "args": ["paid"]}}]


def _invoices(node: NodeProcess, role: str) -> list[dict[str, Any]]:
    return [d for d in payment_call(node, "documents", kind="invoice") if d["role"] == role]


def test_work_on_three_providers_is_invoiced_and_paid_in_one_batch_to_the_wei(testnet: Testnet, tmp_path: Path) -> None:
    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        # A long batch cycle, so that the three invoices are paid by one transaction.
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_PAYMENT__BATCH_INTERVAL_S="6"))
        providers = [testnet.add(f"provider-{i}", env=provider_env(local)) for i in range(3)]
        funded = payment_call(requestor, "fund", amount="100", timeout_s=90)
        assert funded["token_wei"] == str(100 * 10**18)
        wait_for("three offers", lambda: len(requestor.market("known_offers")) >= 3, 30)

        def job(i: int) -> list[dict[str, Any]]:
            # Each job must land on another provider: one agreement each (max_agreements is 8,
            # so pin the provider by its node id).
            pin = f"(golem.node.id.name={providers[i].name})"
            return run_script(requestor.data_dir, "wasmtime", package, SCRIPT, constraints=pin, timeout_s=90,
                              budget_glm="1", say=lambda _t: None)  # fmt: skip

        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(job, range(3)))
        assert all(r["result"] == "Ok" for rs in results for r in rs)

        # Every provider issues one invoice; the requestor accepts and pays all three.
        def all_settled() -> list[dict[str, Any]] | None:
            got = _invoices(requestor, "received")
            return got if len(got) == 3 and all(d["status"] == "Settled" for d in got) else None

        received = wait_for("three invoices settled", all_settled, 90, interval_s=0.5)
        paid = {d["peer_id"]: int(d["amount_wei"]) for d in received}
        assert set(paid) == {p.node_id for p in providers}
        assert all(amount > 0 for amount in paid.values())

        # On the chain: each provider holds exactly its invoice, the requestor paid exactly the sum.
        for p in providers:
            assert token_balance(local, p.node_id) == paid[p.node_id]
        assert token_balance(local, requestor.node_id) == 100 * 10**18 - sum(paid.values())

        # One batch transaction paid them all (the multi-transfer contract), confirmed.
        scheduled = payment_call(requestor, "scheduled")
        assert len(scheduled) == 3 and {s["status"] for s in scheduled} == {"confirmed"}
        txs = {s["tx_hash"] for s in scheduled}
        assert len(txs) == 1
        receipt = ch.receipt(local.chain(), txs.pop())
        assert receipt is not None and receipt.succeeded

        # Each provider verified the payment on the chain and marks its invoice Settled.
        for p in providers:
            wait_for(f"{p.name}'s invoice Settled", lambda p=p: [d for d in _invoices(p, "issued") if d["status"] == "Settled"], 30)
            status = payment_call(p, "status")
            assert int(status["received_wei"]) == paid[p.node_id]

        # The requestor's books agree with the chain, and its allocations with its payments.
        status = payment_call(requestor, "status")
        assert int(status["paid_wei"]) == sum(paid.values())
        spent = sum(int(a["spent_wei"]) for a in status["allocations"])
        assert spent == sum(paid.values())


def test_a_requestor_without_funds_cannot_allocate_and_says_why(testnet: Testnet, tmp_path: Path) -> None:
    with local_chain(tmp_path) as local:
        requestor = testnet.add("requestor", env=payment_env(local))

        def known() -> bool:
            return bool(payment_call(requestor, "status")["balances"])

        wait_for("the balance known", known, 30)
        with pytest.raises(ControlError, match="insufficient funds on erc20-local-tglm"):
            payment_call(requestor, "create_allocation", amount="1")
        payment_call(requestor, "fund", amount="2", timeout_s=90)
        wait_for("the new balance", lambda: payment_call(requestor, "status")["balances"][PLATFORM]["token_wei"] == str(2 * 10**18), 30)
        a = payment_call(requestor, "create_allocation", amount="1.5")
        assert a["total_glm"] == "1.5" and a["platform"] == PLATFORM
        with pytest.raises(ControlError, match="1500000000000000000 wei already allocated"):
            payment_call(requestor, "create_allocation", amount="1")
        assert payment_call(requestor, "release_allocations") == [a["allocation_id"]]
        assert payment_call(requestor, "create_allocation", amount="1")["total_glm"] == "1"


def test_an_invoice_issued_while_the_requestor_is_down_is_seen_and_paid_once_it_is_back(testnet: Testnet, tmp_path: Path) -> None:
    from tests.integration.payment_support import activity_call, negotiate

    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        requestor = testnet.add("requestor", env=payment_env(local))
        provider = testnet.add("provider", env=provider_env(local))
        payment_call(requestor, "fund", amount="10", timeout_s=90)
        wait_for("the provider's offer", lambda: requestor.market("known_offers"), 30)
        agreement_id = negotiate(requestor, provider, package)
        allocation = payment_call(requestor, "create_allocation", amount="1")
        payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id, allocation_id=allocation["allocation_id"])
        activity_id = activity_call(requestor, "create", agreement_id=agreement_id)["activity_id"]
        batch = activity_call(requestor, "exec", activity_id=activity_id, script=SCRIPT)
        assert [r["result"] for r in activity_call(requestor, "results", activity_id=activity_id, batch_id=batch)] == ["Ok"] * 3
        activity_call(requestor, "destroy", activity_id=activity_id)

        # The requestor goes down; the provider ends the agreement and invoices it meanwhile.
        requestor.stop()
        provider.market("terminate_agreement", agreement_id=agreement_id, reason={"message": "work done"})
        issued = wait_for("the invoice issued", lambda: _invoices(provider, "issued"), 30)
        assert issued[0]["status"] == "Issued"  # not acknowledged: nobody there to receive it
        time.sleep(2)  # a re-send or two into the void

        # Back (a restart: its activity views are gone, what it saw of the usage is not).
        requestor.start()
        settled = wait_for("the invoice settled on the requestor",
                           lambda: [d for d in _invoices(requestor, "received") if d["status"] == "Settled"], 120)  # fmt: skip
        amount = int(settled[0]["amount_wei"])
        assert settled[0]["document_id"] == issued[0]["document_id"] and amount > 0
        wait_for("the invoice settled on the provider",
                 lambda: [d for d in _invoices(provider, "issued") if d["status"] == "Settled"], 60)  # fmt: skip
        assert token_balance(local, provider.node_id) == amount
        assert token_balance(local, requestor.node_id) == 10 * 10**18 - amount
