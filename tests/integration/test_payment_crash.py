"""Crashes during payment, with real node processes on anvil: nothing lost, nothing paid twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from actors.payment import chain as ch
from protocol.identity import Identity
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for
from tests.integration.payment_support import (
    approve_multi_transfer,
    activity_call,
    db_rows,
    kill_exe_units,
    local_chain,
    negotiate,
    payment_call,
    payment_env,
    payment_transfers,
    provider_env,
    token_balance,
    wasm_package,
)

pytestmark = pytest.mark.integration

FUNDS_WEI = 100 * 10**18
HELLO = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "hello", "args": ["paid"]}}]


def _docs(node: NodeProcess, kind: str, role: str, agreement_id: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in payment_call(node, "documents", kind=kind)
        if d["role"] == role and (agreement_id is None or d["agreement_id"] == agreement_id)
    ]  # fmt: skip


def _run_and_end(requestor: NodeProcess, agreement_id: str, script: list[dict[str, Any]]) -> None:
    """One activity running script to the end, destroyed, and the agreement terminated."""
    activity_id = activity_call(requestor, "create", agreement_id=agreement_id)["activity_id"]
    batch = activity_call(requestor, "exec", activity_id=activity_id, script=script)
    results = activity_call(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
    assert [r["result"] for r in results] == ["Ok"] * len(script), [r["message"] for r in results]
    activity_call(requestor, "destroy", activity_id=activity_id)
    market_call(requestor, "terminate_agreement", {"agreement_id": agreement_id, "reason": {"message": "done"}})


def _live_txs(node: NodeProcess) -> list[tuple[str, str, str]]:
    """The node's payment transactions (tx_hash, status, kind) that are not replaced or failed."""
    return [tuple(r) for r in db_rows(node, "SELECT tx_hash, status, kind FROM transactions WHERE status NOT IN ('replaced', 'failed')")]


def test_a_requestor_killed_between_sending_a_batch_and_its_confirmation_pays_each_invoice_once(
    testnet: Testnet, tmp_path: Path
) -> None:
    with local_chain(tmp_path, automine=False) as local, wasm_package(tmp_path) as package:
        me = Identity.generate()
        # Payments made by hand: both invoices are accepted at once, so one batch pays them.
        requestor = testnet.add("requestor", identity=me, env=payment_env(local, LOAM_PAYMENT__BATCH_INTERVAL_S="5"))
        providers = [testnet.add(f"provider-{i}", env=provider_env(local)) for i in range(2)]

        # Set-up on a mining chain: tokens, and the multi-transfer contract's allowance.
        local.rpc("evm_setAutomine", [True])
        payment_call(requestor, "fund", amount="100", timeout_s=90)
        approve_multi_transfer(local, me.private_key)
        local.rpc("evm_setAutomine", [False])
        wait_for("the balance known", lambda: payment_call(requestor, "status")["balances"], 30)
        allocation = payment_call(requestor, "create_allocation", amount="10")

        wait_for("two offers", lambda: len(market_call(requestor, "known_offers", {})) >= 2, 30)
        agreements = {}
        for p in providers:
            agreement_id = negotiate(requestor, p, package)
            payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id,
                         allocation_id=allocation["allocation_id"], auto_accept=False)  # fmt: skip
            _run_and_end(requestor, agreement_id, HELLO)
            agreements[p.node_id] = agreement_id

        received = wait_for(
            "both invoices received",
            lambda: (got := _docs(requestor, "invoice", "received")) and len(got) == 2 and got,
            60,
        )
        invoice_of = {d["peer_id"]: d for d in received}
        assert set(invoice_of) == {p.node_id for p in providers}
        assert all(int(d["amount_wei"]) > 0 for d in received)
        for d in received:
            payment_call(requestor, "accept", kind="invoice", document_id=d["document_id"],
                         allocation_id=allocation["allocation_id"])  # fmt: skip

        # The driver records and sends the batch; nothing mines it.
        def sent() -> list[tuple[str, str, str]] | None:
            txs = _live_txs(requestor)
            batched = db_rows(requestor, "SELECT count(*) FROM payments WHERE status = 'batched'")[0][0]
            return txs if batched == 2 and txs and all(t[1] == "sent" for t in txs) else None

        txs = wait_for("the batch sent", sent, 60, interval_s=0.2)
        pool = local.rpc("txpool_content", [])["result"]["pending"]
        pooled = {tx["hash"].lower() for by_nonce in pool.values() for tx in by_nonce.values()}
        assert {t[0].lower() for t in txs} <= pooled
        # Both invoices in one multi-transfer, unless a driver cycle fell between the two
        # acceptances (then one single transfer each): exactly once must hold either way.
        assert [t[2] for t in txs] == ["batch"] or sorted(t[2] for t in txs) == ["single", "single"], txs
        hashes = {t[0].lower() for t in txs}
        assert not payment_transfers(local, me.node_id)

        requestor.kill()
        local.rpc("evm_mine", [])
        for tx_hash in hashes:
            receipt = ch.receipt(local.chain(), tx_hash)
            assert receipt is not None and receipt.succeeded
        requestor.start()

        # Reconciled after the restart: the mined batch is confirmed, not sent again.
        def all_settled() -> list[dict[str, Any]] | None:
            got = _docs(requestor, "invoice", "received")
            return got if {d["status"] for d in got} == {"Settled"} else None

        wait_for("both invoices settled on the requestor", all_settled, 60, interval_s=0.5)
        for p in providers:
            wait_for(
                f"{p.name} verifies the payment and marks its invoice Settled",
                lambda p=p: [d["status"] for d in _docs(p, "invoice", "issued")] == ["Settled"],
                60,
            )
        # A few more blocks and cycles: any second payment would show now.
        for _ in range(3):
            local.rpc("evm_mine", [])
        wait_for("the requestor's payment notices acknowledged",
                 lambda: all(p["acked"] for p in payment_call(requestor, "payments") if p["role"] == "made"), 30)  # fmt: skip
        local.rpc("evm_mine", [])

        total = 0
        for p in providers:
            amount = int(invoice_of[p.node_id]["amount_wei"])
            total += amount
            assert token_balance(local, p.node_id) == amount
            transfers = payment_transfers(local, me.node_id, p.node_id)
            assert [t.amount_wei for t in transfers] == [amount] and transfers[0].tx_hash.lower() in hashes
            assert int(payment_call(p, "status")["received_wei"]) == amount
        assert token_balance(local, me.node_id) == FUNDS_WEI - total
        assert int(payment_call(requestor, "status")["paid_wei"]) == total
        scheduled = payment_call(requestor, "scheduled")
        assert sorted((s["agreement_id"], s["status"]) for s in scheduled) == sorted(
            (agreements[p.node_id], "confirmed") for p in providers
        )
        assert {s["tx_hash"].lower() for s in scheduled} == hashes
        assert sorted(_live_txs(requestor)) == sorted((h, "confirmed", kind) for h, _, kind in txs)
        assert not local.rpc("txpool_content", [])["result"]["pending"]


def test_a_provider_killed_mid_activity_is_paid_its_last_accepted_debit_note_and_its_invoice_once(
    testnet: Testnet, tmp_path: Path
) -> None:
    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        requestor = testnet.add("requestor", env=payment_env(local))
        # A spin that would run for hours is stopped by the provider's limit even if all else fails.
        provider = testnet.add("provider", env=provider_env(local, LOAM_PROVIDER__MAX_RUN_S="120"))
        payment_call(requestor, "fund", amount="100", timeout_s=90)
        wait_for("the balance known", lambda: payment_call(requestor, "status")["balances"], 30)
        allocation = payment_call(requestor, "create_allocation", amount="10")
        wait_for("the offer", lambda: market_call(requestor, "known_offers", {}), 30)
        # A debit note every 2 s, each to be accepted within 20 s.
        terms = {"golem.com.scheme.payu.debit-note.interval-sec?": 2.0, "golem.com.payment.debit-notes.accept-timeout?": 20}
        agreement_id = negotiate(requestor, provider, package, terms)
        payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id, allocation_id=allocation["allocation_id"])
        activity_id = activity_call(requestor, "create", agreement_id=agreement_id)["activity_id"]
        script = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "spin", "args": ["100000000000"]}}]
        activity_call(requestor, "exec", activity_id=activity_id, script=script)

        def accepted_notes() -> list[dict[str, Any]]:
            return [d for d in _docs(requestor, "debit_note", "received", agreement_id) if d["status"] == "Accepted"]

        wait_for("two accepted debit notes", lambda: len(accepted_notes()) >= 2, 60, interval_s=0.3)
        provider.kill()
        # Its exe-unit outlives it, spinning (it reads its pipe only between commands): stop it.
        kill_exe_units(provider)

        # The requestor ends the agreement with a provider that is gone.
        market_call(requestor, "terminate_agreement", {"agreement_id": agreement_id, "reason": {"message": "provider gone"}})
        notes = _docs(requestor, "debit_note", "received", agreement_id)
        assert notes and all(d["status"] == "Accepted" for d in notes), notes
        last_total = max(int(d["amount_wei"]) for d in notes)  # cumulative: the last note is the largest
        assert last_total > 0

        # After invoice_wait_s with no invoice, the accepted debit notes are paid: exactly the last total.
        paid = wait_for(
            "the accepted debit notes paid",
            lambda: [s for s in payment_call(requestor, "scheduled") if s["status"] == "confirmed"],
            60,
            interval_s=0.5,
        )
        assert [int(s["amount_wei"]) for s in paid] == [last_total]
        assert token_balance(local, provider.node_id) == last_total
        assert int(payment_call(requestor, "status")["paid_wei"]) == last_total
        assert not _docs(requestor, "invoice", "received")
        # Paid, over and no invoice in time: the agreement leaves the ledger's per-second scan (closed).
        wait_for("the agreement closed", lambda: _tracked_state(requestor, agreement_id) == "invoiced", 30, interval_s=0.5)

        # The provider comes back: it invoices the agreement for the usage it recorded, and is
        # paid only what the invoice adds to what it already holds.
        provider.start()
        invoice = wait_for(
            "the provider's invoice received",
            lambda: (got := _docs(requestor, "invoice", "received", agreement_id)) and got[0],
            60,
            interval_s=0.5,
        )
        invoiced = int(invoice["amount_wei"])
        assert invoiced >= last_total
        # Its usage is within what the requestor saw, so it is accepted; what the debit notes
        # paid counts towards it, and only the difference (if any) is paid on top.
        wait_for(
            "the invoice settled on the requestor",
            lambda: _docs(requestor, "invoice", "received", agreement_id)[0]["status"] == "Settled",
            60,
            interval_s=0.5,
        )
        wait_for(
            "the invoice settled on the provider",
            lambda: [d["status"] for d in _docs(provider, "invoice", "issued", agreement_id)] == ["Settled"],
            60,
            interval_s=0.5,
        )
        assert int(payment_call(provider, "status")["received_wei"]) == invoiced
        assert token_balance(local, provider.node_id) == invoiced
        assert int(payment_call(requestor, "status")["paid_wei"]) == invoiced
        transfers = payment_transfers(local, requestor.node_id, provider.node_id)
        assert sum(t.amount_wei for t in transfers) == invoiced
        assert len(transfers) == (1 if invoiced == last_total else 2)
        assert all(s["status"] == "confirmed" for s in payment_call(requestor, "scheduled"))
        # The late invoice reopened it until paid; closed again now.
        assert _tracked_state(requestor, agreement_id) == "invoiced"


def _tracked_state(node: NodeProcess, agreement_id: str) -> str | None:
    """The requestor ledger's state of an agreement, read from the node's database."""
    import sqlite3

    from node.storage import db_path

    with sqlite3.connect(f"file:{db_path(node.data_dir)}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute(
            "SELECT state FROM payment_agreements WHERE agreement_id = ? AND role = 'requestor'", (agreement_id,)
        ).fetchone()
    return row[0] if row else None


def test_a_requestor_survives_its_first_batch_on_a_chain_with_slow_blocks(testnet: Testnet, tmp_path: Path) -> None:
    # The first batch needs the multi-transfer contract approved first. On a real chain that
    # takes a block (12 s on holesky): the node must keep answering meanwhile, not hang on it.
    with local_chain(tmp_path, automine=False) as local, wasm_package(tmp_path) as package:
        requestor = testnet.add("requestor", env=payment_env(local))
        providers = [testnet.add(f"provider-{i}", env=provider_env(local)) for i in range(2)]
        local.rpc("evm_setAutomine", [True])
        payment_call(requestor, "fund", amount="100", timeout_s=90)
        local.rpc("evm_setAutomine", [False])
        wait_for("the balance known", lambda: payment_call(requestor, "status")["balances"], 30)
        allocation = payment_call(requestor, "create_allocation", amount="10")
        wait_for("two offers", lambda: len(market_call(requestor, "known_offers", {})) >= 2, 30)
        for p in providers:
            agreement_id = negotiate(requestor, p, package)
            payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id, allocation_id=allocation["allocation_id"])
            _run_and_end(requestor, agreement_id, HELLO)

        def pooled() -> list[dict[str, Any]]:
            pool = local.rpc("txpool_content", [])["result"]["pending"]
            return [tx for by_nonce in pool.values() for tx in by_nonce.values()]

        approve = wait_for("the approval sent", pooled, 90, interval_s=0.2)
        assert [tx["to"].lower() for tx in approve] == [local.token.lower()]
        # No block for 20 s: the node keeps serving its control channel (and its health check).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert requestor.alive(), requestor.log_tail()
            assert payment_call(requestor, "status", timeout_s=15)["paid_wei"] == "0"
            time.sleep(1)
        local.rpc("evm_setIntervalMining", [1])
        received = wait_for(
            "both invoices settled",
            lambda: (got := _docs(requestor, "invoice", "received")) and len(got) == 2
            and all(d["status"] == "Settled" for d in got) and got,
            90,
            interval_s=0.5,
        )  # fmt: skip
        for d in received:
            assert token_balance(local, d["peer_id"]) == int(d["amount_wei"])
        assert requestor.alive()
