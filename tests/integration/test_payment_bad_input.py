"""Bad payment input against a real requestor node on anvil: each refused with a clear reason, nothing paid.

The provider of a real agreement is killed, and its key is the attacker's from then on: an
`Attacker` (a hand-driven ZeroMQ peer) handshakes as that provider, or as strangers, and sends
signed payment documents of its own making. The requestor's replies come back on its link.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.payment.ledger import amount_due_wei
from protocol.codec import Message
from protocol.errors import ControlError
from protocol.identity import Identity
from protocol.net import Heartbeat
from protocol.payment import (
    DebitNote,
    DocumentAccepted,
    DocumentAck,
    DocumentRejected,
    PaymentSent,
    make_debit_note,
    make_invoice,
)
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for
from tests.integration.payment_support import (
    PLATFORM,
    LocalChain,
    activity_call,
    kill_exe_units,
    local_chain,
    negotiate,
    now_ms,
    payment_call,
    payment_env,
    payment_transfers,
    provider_env,
    token_balance,
    wasm_package,
)
from tests.integration.test_hostile import Attacker

pytestmark = pytest.mark.integration

FUNDS_WEI = 100 * 10**18


class LiveAttacker(Attacker):
    """An Attacker that sends heartbeats from a thread of its own, so the node keeps its link while a test takes its time."""

    def __init__(self, node: NodeProcess, identity: Identity | None = None) -> None:
        super().__init__(node, identity)
        self._lock = threading.RLock()  # one ZeroMQ socket, two threads: never at the same time
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def send(self, frame: Any) -> None:
        with self._lock:
            super().send(frame)

    def replies(self, timeout_s: float) -> list[Message]:
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            with self._lock:
                got += super().replies(min(left, 0.1))
        return got

    def handshake(self, timeout_s: float = 5.0) -> Any:
        ack = super().handshake(timeout_s)
        self._beat = threading.Thread(target=self._heartbeats, daemon=True)
        self._beat.start()
        return ack

    def _heartbeats(self) -> None:
        seq = 0
        while not self._stop.wait(0.4):
            seq += 1
            self.send(self.seal(Heartbeat(seq)))

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        super().close()


@dataclass
class Scene:
    """A requestor with an agreement and an activity whose provider is gone, and that provider's key."""

    local: LocalChain
    net: Testnet
    requestor: NodeProcess
    provider_key: Identity
    agreement_id: str
    activity_id: str
    allocation_id: str
    coeffs: tuple[float, ...]

    def price(self, duration_s: float) -> int:
        """What usage of (0 cpu s, duration_s) costs under the agreement, in wei."""
        return amount_due_wei(self.coeffs, (0.0, duration_s))

    def note(self, duration_s: float, *, total_wei: int | None = None, issuer: Identity | None = None,
             agreement_id: str | None = None, activity_id: str | None = None) -> DebitNote:  # fmt: skip
        """A debit note signed by issuer (the provider by default) for usage (0, duration_s)."""
        return make_debit_note(
            issuer or self.provider_key, agreement_id=agreement_id or self.agreement_id,
            activity_id=activity_id or self.activity_id, recipient_id=self.requestor.node_id, payment_platform=PLATFORM,
            total_amount_due_wei=self.price(duration_s) if total_wei is None else total_wei,
            usage_counter_vector=(0.0, duration_s), timestamp_ms=now_ms(),
        )  # fmt: skip


def _coeffs(value: Any) -> tuple[float, ...] | None:
    """The linear price coefficients found anywhere in a plain-data agreement."""
    if isinstance(value, dict):
        if "golem.com.pricing.model.linear.coeffs" in value:
            return tuple(float(c) for c in value["golem.com.pricing.model.linear.coeffs"])
        values = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        return None
    for v in values:
        found = _coeffs(v)
        if found is not None:
            return found
    return None


@contextmanager
def make_scene(base: Path) -> Iterator[Scene]:
    """A funded requestor, an agreement paid from an allocation, an activity seen for 10 s, its provider killed."""
    with local_chain(base) as local, wasm_package(base) as package:
        net = Testnet(base / "nodes")
        try:
            provider_key = Identity.generate()
            requestor = net.add("requestor", env=payment_env(local))
            provider = net.add("provider", identity=provider_key, env=provider_env(local))
            payment_call(requestor, "fund", amount="100", timeout_s=90)
            wait_for("the balance known", lambda: payment_call(requestor, "status")["balances"], 30)
            allocation = payment_call(requestor, "create_allocation", amount="10")
            wait_for("the offer", lambda: market_call(requestor, "known_offers", {}), 30)
            agreement_id = negotiate(requestor, provider, package)
            payment_call(requestor, "pay_agreement_from", agreement_id=agreement_id, allocation_id=allocation["allocation_id"])
            coeffs = _coeffs(market_call(requestor, "get_agreement", {"agreement_id": agreement_id}))
            assert coeffs is not None and len(coeffs) == 3 and coeffs[1] > 0, coeffs
            activity_id = activity_call(requestor, "create", agreement_id=agreement_id)["activity_id"]
            # Usage seen for a while, so that honest notes of a few seconds are within it.
            wait_for(
                "10 s of activity seen",
                lambda: (u := activity_call(requestor, "state", activity_id=activity_id)["usage"]) and u[-1] >= 10,
                60,
                interval_s=0.5,
            )
            provider.kill()
            kill_exe_units(provider)
            wait_for("the provider's link gone", lambda: provider.node_id not in {n.node_id for n in requestor.status().neighbours}, 30)
            yield Scene(local, net, requestor, provider_key, agreement_id, activity_id, allocation["allocation_id"], coeffs)
        finally:
            net.stop_all()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with make_scene(tmp_path_factory.mktemp("bad-input")) as made:
        yield made


@pytest.fixture
def as_provider(scene: Scene) -> Iterator[LiveAttacker]:
    """A connection to the requestor holding the (killed) provider's key."""
    requestor, provider_id = scene.requestor, scene.provider_key.node_id
    # One link per node id: the previous test's connection must be gone first.
    wait_for("no link to the provider", lambda: provider_id not in {n.node_id for n in requestor.status().neighbours}, 30)
    attacker = LiveAttacker(scene.requestor, scene.provider_key)
    attacker.handshake()
    yield attacker
    attacker.close()


@pytest.fixture
def stranger(scene: Scene) -> Iterator[Attacker]:
    """A connection to the requestor from a node it has no agreement with."""
    attacker = LiveAttacker(scene.requestor)
    attacker.handshake()
    yield attacker
    attacker.close()


def _send(attacker: Attacker, msg: Message) -> None:
    attacker.send(attacker.seal(msg))


def _reply(attacker: Attacker, document_id: str, kind: type, timeout_s: float = 15.0) -> Any:
    """The first message of type kind about document_id the node sends back within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in attacker.replies(0.3):
            if isinstance(msg, kind) and msg.document_id == document_id:
                return msg
    raise AssertionError(f"no {kind.__name__} for {document_id} within {timeout_s} s")


def _documents(scene: Scene, kind: str) -> dict[str, dict[str, Any]]:
    return {d["document_id"]: d for d in payment_call(scene.requestor, "documents", kind=kind)}


def assert_nothing_paid(scene: Scene) -> None:
    """Nothing scheduled, no transfer from the requestor on the chain, its tokens untouched; the node still serves."""
    requestor = scene.requestor
    assert requestor.alive(), requestor.log_tail()
    assert payment_call(requestor, "scheduled") == []
    assert payment_transfers(scene.local, requestor.node_id) == []
    assert token_balance(scene.local, scene.provider_key.node_id) == 0
    assert token_balance(scene.local, requestor.node_id) == FUNDS_WEI
    status = payment_call(requestor, "status")
    assert status["paid_wei"] == "0"
    assert all(a["spent_wei"] == "0" for a in status["allocations"])


def assert_still_accepting(scene: Scene, attacker: Attacker, duration_s: float = 1.0) -> None:
    """An honest debit note from the provider is still accepted (accepted is not paid: the agreement runs on)."""
    note = scene.note(duration_s)
    _send(attacker, note)
    accepted = _reply(attacker, note.debit_note_id, DocumentAccepted)
    assert accepted.total_amount_accepted_wei == note.total_amount_due_wei
    assert _documents(scene, "debit_note")[note.debit_note_id]["status"] == "Accepted"


def test_a_debit_note_above_the_agreed_price_is_rejected_as_incorrect_amount(scene: Scene, as_provider: Attacker) -> None:
    # Priced honestly from usage the requestor never saw (an hour of it).
    inflated = scene.note(3600.0)
    _send(as_provider, inflated)
    rejected = _reply(as_provider, inflated.debit_note_id, DocumentRejected)
    assert rejected.reason == "IncorrectAmount"
    assert f"asks {scene.price(3600.0)} wei, the usage seen prices at" in rejected.message
    rejected.verify(signer=scene.requestor.node_id)
    # More than its own usage prices at.
    greedy = scene.note(1.0, total_wei=scene.price(1.0) * 1000)
    _send(as_provider, greedy)
    rejected = _reply(as_provider, greedy.debit_note_id, DocumentRejected)
    assert rejected.reason == "IncorrectAmount"
    assert f"asks {scene.price(1.0) * 1000} wei, its own usage prices at {scene.price(1.0)} wei" in rejected.message
    docs = _documents(scene, "debit_note")
    assert docs[inflated.debit_note_id]["status"] == "Rejected"
    assert docs[greedy.debit_note_id]["status"] == "Rejected"
    # Sent again (as if it had not heard us): the same signed rejection, not a second decision.
    _send(as_provider, greedy)
    assert _reply(as_provider, greedy.debit_note_id, DocumentRejected) == rejected
    assert_nothing_paid(scene)
    assert_still_accepting(scene, as_provider)
    assert_nothing_paid(scene)


def test_an_invoice_for_an_unknown_agreement_is_rejected_as_unsolicited(scene: Scene, stranger: Attacker, as_provider: Attacker) -> None:
    before = _documents(scene, "invoice")
    for attacker in (stranger, as_provider):
        invoice = make_invoice(
            attacker.identity, agreement_id="ab" * 32, activity_ids=(scene.activity_id,), recipient_id=scene.requestor.node_id,
            payment_platform=PLATFORM, amount_wei=10**18, payment_due_ms=now_ms() + 60_000, timestamp_ms=now_ms(),
        )  # fmt: skip
        _send(attacker, invoice)
        rejected = _reply(attacker, invoice.invoice_id, DocumentRejected)
        assert rejected.reason == "UnsolicitedService"
        assert rejected.message == f"agreement {'ab' * 32} is not an agreement of ours with {attacker.identity.node_id}"
    # A stranger's invoice naming the requestor's real agreement: not its agreement either.
    invoice = make_invoice(
        stranger.identity, agreement_id=scene.agreement_id, activity_ids=(scene.activity_id,),
        recipient_id=scene.requestor.node_id, payment_platform=PLATFORM, amount_wei=10**15,
        payment_due_ms=now_ms() + 60_000, timestamp_ms=now_ms(),
    )  # fmt: skip
    _send(stranger, invoice)
    rejected = _reply(stranger, invoice.invoice_id, DocumentRejected)
    assert rejected.reason == "UnsolicitedService"
    assert scene.agreement_id in rejected.message and stranger.identity.node_id in rejected.message
    assert _documents(scene, "invoice") == before  # none of them stored
    assert_nothing_paid(scene)
    assert_still_accepting(scene, as_provider)


def test_a_document_signed_by_the_wrong_node_is_refused_without_a_trace(scene: Scene, stranger: Attacker, as_provider: Attacker) -> None:
    before = {kind: _documents(scene, kind) for kind in ("debit_note", "invoice")}
    log_before = scene.requestor.log_path.read_text(errors="replace")
    # 1. The provider's note, but signed by the stranger's key (sent on the provider's link).
    unsigned = dataclasses.replace(scene.note(1.0), signature=b"")
    forged = dataclasses.replace(unsigned, signature=stranger.identity.sign(unsigned.digest()))
    _send(as_provider, forged)
    # 2. The provider's genuine note, relayed by the stranger on its own link.
    relayed = scene.note(1.5)
    _send(stranger, relayed)
    # 3. A note the stranger signs as its issuer, for the provider's agreement and activity.
    own = scene.note(1.0, issuer=stranger.identity)
    _send(stranger, own)
    rejected = _reply(stranger, own.debit_note_id, DocumentRejected)
    assert rejected.reason == "UnsolicitedService"
    assert f"is not an agreement of ours with {stranger.identity.node_id}" in rejected.message

    def logged() -> str | None:
        text = scene.requestor.log_path.read_text(errors="replace")[len(log_before):]
        return text if f"debit_note {forged.debit_note_id} is not signed by {scene.provider_key.node_id}" in text and (
            f"debit_note {relayed.debit_note_id} from {stranger.identity.node_id} is issued by {scene.provider_key.node_id}" in text
        ) else None

    wait_for("both refusals logged with their reasons", logged, 15)
    # Neither the forged nor the relayed note got an answer: not even an acknowledgement.
    silent = [m for m in as_provider.replies(1.0) + stranger.replies(0.5)
              if getattr(m, "document_id", None) in (forged.debit_note_id, relayed.debit_note_id)]  # fmt: skip
    assert silent == []
    assert {kind: _documents(scene, kind) for kind in ("debit_note", "invoice")} == before
    assert_nothing_paid(scene)
    assert_still_accepting(scene, as_provider)


def test_an_overdrawn_allocation_refuses_acceptance_and_the_document_stays_received(scene: Scene, as_provider: Attacker) -> None:
    tiny = payment_call(scene.requestor, "create_allocation", amount="0.000000000001")  # 10**6 wei
    payment_call(scene.requestor, "pay_agreement_from", agreement_id=scene.agreement_id, allocation_id=tiny["allocation_id"])
    try:
        # More than any note accepted so far (those cover at most 1.5 s), and within the usage seen.
        note = scene.note(5.0)
        _send(as_provider, note)
        assert isinstance(_reply(as_provider, note.debit_note_id, DocumentAck), DocumentAck)
        doc = wait_for("the note stored", lambda: _documents(scene, "debit_note").get(note.debit_note_id), 10)
        assert doc["status"] == "Received"  # automatic acceptance was refused: the allocation is too small
        assert not [m for m in as_provider.replies(1.0) if isinstance(m, (DocumentAccepted, DocumentRejected))
                    and m.document_id == note.debit_note_id]  # fmt: skip
        with pytest.raises(ControlError, match=rf"allocation {tiny['allocation_id']} has 1000000 wei left, cannot reserve \d+"):
            payment_call(scene.requestor, "accept", kind="debit_note", document_id=note.debit_note_id,
                         allocation_id=tiny["allocation_id"])  # fmt: skip
        assert _documents(scene, "debit_note")[note.debit_note_id]["status"] == "Received"
        allocation = next(a for a in payment_call(scene.requestor, "allocations") if a["allocation_id"] == tiny["allocation_id"])
        assert (allocation["reserved_glm"], allocation["spent_glm"]) == ("0", "0")
        assert_nothing_paid(scene)
    finally:
        payment_call(scene.requestor, "pay_agreement_from", agreement_id=scene.agreement_id, allocation_id=scene.allocation_id)
        payment_call(scene.requestor, "release_allocation", allocation_id=tiny["allocation_id"])


def test_an_allocation_beyond_the_accounts_balance_is_refused(scene: Scene) -> None:
    held = sum(Decimal(a["total_glm"]) for a in payment_call(scene.requestor, "allocations") if a["state"] == "active")
    with pytest.raises(ControlError) as refused:
        payment_call(scene.requestor, "create_allocation", amount="1000")
    assert str(refused.value).endswith(
        f"insufficient funds on {PLATFORM}: {FUNDS_WEI} wei in the account, {int(held * 10**18)} wei already allocated, {1000 * 10**18} wei asked"
    ), str(refused.value)
    with pytest.raises(ControlError, match="must be a positive amount of GLM"):
        payment_call(scene.requestor, "create_allocation", amount="-1")
    assert [a for a in payment_call(scene.requestor, "allocations") if a["total_glm"] == "1000"] == []
    assert_nothing_paid(scene)


def test_a_debit_note_dated_in_the_future_cannot_stretch_the_usage_seen(scene: Scene, as_provider: LiveAttacker) -> None:
    # The requestor allows for usage since its last update, up to the note's date: a note dated
    # a day ahead must not make a day of usage look seen.
    day_ms = 86_400_000
    unsigned = dataclasses.replace(scene.note(3600.0), timestamp_ms=now_ms() + day_ms, signature=b"")
    ahead = unsigned.signed(scene.provider_key)
    _send(as_provider, ahead)
    rejected = _reply(as_provider, ahead.debit_note_id, DocumentRejected)
    assert rejected.reason == "IncorrectAmount"
    assert f"asks {scene.price(3600.0)} wei, the usage seen prices at" in rejected.message
    assert _documents(scene, "debit_note")[ahead.debit_note_id]["status"] == "Rejected"
    assert_nothing_paid(scene)
    assert_still_accepting(scene, as_provider)


def test_a_duplicated_invoice_and_a_late_debit_note_are_paid_once(tmp_path: Path) -> None:
    with make_scene(tmp_path) as own:
        provider = LiveAttacker(own.requestor, own.provider_key)
        try:
            provider.handshake()
            amount = own.price(4.0)
            invoice = make_invoice(
                own.provider_key, agreement_id=own.agreement_id, activity_ids=(own.activity_id,),
                recipient_id=own.requestor.node_id, payment_platform=PLATFORM, amount_wei=amount,
                payment_due_ms=now_ms() + 60_000, timestamp_ms=now_ms(),
            )  # fmt: skip
            _send(provider, invoice)
            _send(provider, invoice)  # a duplicate
            accepted = _reply(provider, invoice.invoice_id, DocumentAccepted)
            assert accepted.total_amount_accepted_wei == str(amount)
            # A debit note from before the invoice arrives after it.
            late = dataclasses.replace(own.note(2.0), timestamp_ms=invoice.timestamp_ms - 5_000, signature=b"").signed(own.provider_key)
            _send(provider, late)
            _reply(provider, late.debit_note_id, DocumentAck)

            def notice() -> PaymentSent | None:
                got = [m for m in provider.replies(0.5) if isinstance(m, PaymentSent)]
                return got[0] if got else None

            sent = wait_for("the payment notice", notice, 60)
            assert sent.amount_wei == str(amount)
            assert [tuple(x) for x in sent.agreement_amounts] == [(own.agreement_id, str(amount))]
            sent.verify(signer=own.requestor.node_id)
            # The invoice once more, after it was paid: the same acceptance again, nothing new.
            _send(provider, invoice)
            assert _reply(provider, invoice.invoice_id, DocumentAccepted) == accepted
            transfers = payment_transfers(own.local, own.requestor.node_id)
            assert [(t.recipient.lower(), t.amount_wei, t.tx_hash.lower()) for t in transfers] == [
                (own.provider_key.node_id.lower(), amount, sent.tx_hash.lower())
            ]
            assert token_balance(own.local, own.provider_key.node_id) == amount
            scheduled = payment_call(own.requestor, "scheduled")
            assert [(s["status"], int(s["amount_wei"])) for s in scheduled] == [("confirmed", amount)]
            assert [d["status"] for d in _documents(own, "invoice").values()] == ["Settled"]
            assert int(payment_call(own.requestor, "status")["paid_wei"]) == amount
        finally:
            provider.close()
