"""PaymentLedgerActor: allocations, debit notes, invoices and payments between two nodes, stored and re-sent until acknowledged."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import MarketError
from actors.net.actor import Received
from actors.payment.events import (
    ActivityUsage,
    PaymentEvent,
    PaymentEventLog,
    UsageSeen,
)
from actors.payment.ledger import Tolerance
from actors.payment.ledger_store import DocumentRecord, LedgerStore, PaymentRecord
from actors.payment.messages import (
    BalanceUpdate,
    PaymentsSettled,
    PaymentVerified,
    SchedulePayment,
    network_paths,
    split_platform,
)
from actors.payment.networks import Network, load_network_layers
from actors.payment.provider import ProviderLedger
from actors.payment.requestor import RequestorLedger
from actors.payment.tracking_store import ScheduledPayment, TrackingStore
from protocol.errors import (
    PaymentError,
    PaymentNotFoundError,
    ProtocolError,
    SettingsError,
)
from protocol.payment import (
    DEBIT_NOTE,
    INVOICE,
    DebitNote,
    DocumentAccepted,
    DocumentAck,
    DocumentRejected,
    Invoice,
    PaymentSent,
    wei,
)

if TYPE_CHECKING:
    import sqlite3

    from node.settings import Settings
    from protocol.identity import Identity

__all__ = ["PaymentLedgerActor", "ActivityUsage", "Account"]

_MAX_RESEND_S = 60.0


@dataclass(frozen=True, slots=True)
class Account:
    """A payment account of this node (Golem's Account)."""

    platform: str
    address: str
    driver: str
    network: str
    token: str
    send: bool
    receive: bool


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


class PaymentLedgerActor(RequestorLedger, ProviderLedger, LoamActor):
    """Both sides of payment: a provider's debit notes and invoices, a requestor's acceptances and payments.

    Every document is signed, stored before it is sent, and re-sent until the other node
    acknowledges it, so a restart of either side loses nothing. Chain work goes to the
    PaymentDriverActor by message; the ledger never waits on the chain.
    """

    name = "payment"

    def __init__(
        self, identity: Identity, settings: Settings, net: Any, market: Any, activity: Any, driver: Any,
        conn: sqlite3.Connection, *, on_actor_failure: FailureHandler | None = None,
    ) -> None:  # fmt: skip
        super().__init__(identity.node_id, on_actor_failure)
        self._identity = identity
        self._settings = settings
        self._cfg = settings.payment
        self._net = net
        self._market = market
        self._activity = activity
        self._driver = driver  # a proxy, for calls
        self._driver_ref: pykka.ActorRef = driver.actor_ref  # for tells
        self._ask_s = settings.actors.ask_timeout_s
        self._docs = LedgerStore(conn)
        self._track = TrackingStore(conn)
        self._events = PaymentEventLog()
        self._tolerance = Tolerance(relative=self._cfg.tolerance_percent / 100.0)
        self._networks: dict[str, Network] = {}
        self._balances: dict[str, BalanceUpdate] = {}
        self._sent_ms: dict[str, int] = {}  # document/payment id -> when we last (re-)sent it
        self._resend_s: dict[str, float] = {}  # its current back-off
        self._verifying: dict[str, tuple[PaymentSent, int]] = {}  # payment id -> notice, last asked
        self._timed_out: set[str] = set()  # agreements we terminated for an unaccepted debit note
        self._ticker: Ticker | None = None

    # -- life ----------------------------------------------------------------------------

    def start_up(self) -> None:
        try:
            self._networks = load_network_layers(network_paths(self._settings))
        except SettingsError as exc:
            self._log.error("payment_networks_unreadable", error=str(exc))
        # The activity actor starts empty: activities from before a restart are gone, and
        # their last usage is what their invoice charges.
        now = _now_ms()
        for act in self._track.activities(running=True):
            self._track.save_activity(dataclasses.replace(act, ended=True, updated_ms=now))
        self._net.subscribe("payment.", self.actor_ref).get(timeout=self._ask_s)
        # A requestor node wants its balance from the start (clients allocate at once); a
        # provider asks for none, so its node never loads web3 before a payment arrives.
        watch = [] if self._settings.provider.enabled else [self.default_platform()]
        self._driver.attach_ledger(self.actor_ref, watch)
        # Payments recorded but perhaps never handed over (a crash in between): hand them
        # over again; the driver knows each id and ignores what it already has.
        for p in self._track.scheduled_payments(status="scheduled"):
            self._driver_ref.tell(SchedulePayment(p.payment_id, p.platform, p.payee_address, p.amount_wei))
        self._ticker = Ticker(self.actor_ref, _Tick(), 1.0)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, _Tick):
                self._on_tick(_now_ms())
            elif isinstance(message, Received):
                self._on_network(message.sender, message.message)
            elif isinstance(message, ActivityUsage):
                self._on_usage(message)
            elif isinstance(message, UsageSeen):
                self._track.save_usage_seen(message.activity_id, message.agreement_id, message.usage, message.usage_ms,
                                            message.state)  # fmt: skip
            elif isinstance(message, PaymentsSettled):
                self._on_settled(message)
            elif isinstance(message, PaymentVerified):
                self._on_verified(message)
            elif isinstance(message, BalanceUpdate):
                self._balances[message.platform] = message
        except (ProtocolError, PaymentError, MarketError, ValueError) as exc:
            self._log.warning("payment_message_rejected", error=str(exc)[:300])
        except pykka.Timeout as exc:
            self._log.warning("payment_step_timed_out", error=str(exc)[:300])
        return None

    # -- what the REST layer, the CLI and tests call --------------------------------------

    def default_platform(self) -> str:
        """The platform this node pays on unless told otherwise: erc20-<[payment] network>-<token>."""
        net = self._networks.get(self._cfg.network)
        token = net.token.lower() if net is not None else ("glm" if self._cfg.network in ("mainnet", "polygon") else "tglm")
        return f"erc20-{self._cfg.network}-{token}"

    def accounts(self) -> list[Account]:
        """This node's accounts: the requestor's default platform sends, every provider platform receives."""
        platforms = {self.default_platform(): (True, False)}
        if self._settings.provider.enabled:
            from actors.provider.offer import payment_platform

            p = payment_platform(self._settings.provider)
            send, _ = platforms.get(p, (False, False))
            platforms[p] = (send, True)
        out = []
        for platform, (send, receive) in sorted(platforms.items()):
            driver, network, token = split_platform(platform)
            out.append(Account(platform, self.node_id, driver, network, token, send, receive))
        return out

    def balances(self) -> dict[str, BalanceUpdate]:
        """The last known token and gas balances by platform."""
        return dict(self._balances)

    def event_log(self) -> PaymentEventLog:
        """The thread-safe log of payment events (clients wait on it from their own threads)."""
        return self._events

    def documents(self, kind: str) -> list[DocumentRecord]:
        """Debit notes or invoices of this node, both those it issued and those it received."""
        self._check_kind(kind)
        return self._docs.documents(kind, "issued") + self._docs.documents(kind, "received")

    def document(self, kind: str, document_id: str) -> DocumentRecord:
        """One debit note or invoice (received first, else issued).

        Raises:
            PaymentNotFoundError.
        """
        self._check_kind(kind)
        rec = self._docs.document(kind, document_id, "received") or self._docs.document(kind, document_id, "issued")
        if rec is None:
            raise PaymentNotFoundError(f"{kind.replace('_', ' ')} {document_id} not found")
        return rec

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in (DEBIT_NOTE, INVOICE):
            raise PaymentError(f"document kind {kind!r} is not debit_note or invoice")

    def payments(self) -> list[PaymentRecord]:
        """Payments made and received, as announced by the payers' signed notices."""
        return self._docs.payments("made") + self._docs.payments("received")

    def scheduled(self) -> list[ScheduledPayment]:
        """Payments this node decided to make, with their status on the chain."""
        return self._track.scheduled_payments()

    def status(self) -> dict[str, Any]:
        """Amounts by document status and role, per platform; payments made and received; allocations."""
        out: dict[str, Any] = {"requestor": [], "provider": []}
        for role, side in (("received", "requestor"), ("issued", "provider")):
            out[side] = [dataclasses.asdict(t) for t in self._docs.status_totals(role)]
        out["allocations"] = [
            {"allocation_id": a.allocation_id, "platform": a.platform, "total_wei": a.total_wei,
             "spent_wei": a.spent_wei, "reserved_wei": a.reserved_wei, "state": a.state}
            for a in self._docs.allocations()
        ]  # fmt: skip
        out["paid_wei"] = sum(p.amount_wei for p in self._track.scheduled_payments(status="confirmed"))
        out["received_wei"] = sum(wei(r.payment.amount_wei) for r in self._docs.payments("received"))
        out["balances"] = {p: {"token_wei": b.token_wei, "gas_wei": b.gas_wei} for p, b in self._balances.items()}
        return out

    # -- network ---------------------------------------------------------------------------

    def _on_network(self, sender: str, msg: Any) -> None:
        if isinstance(msg, DocumentAck):
            self._on_ack(sender, msg)
        elif isinstance(msg, DebitNote):
            self._on_document(sender, msg)
        elif isinstance(msg, Invoice):
            self._on_document(sender, msg)
        elif isinstance(msg, (DocumentAccepted, DocumentRejected)):
            self._on_reply(sender, msg)
        elif isinstance(msg, PaymentSent):
            self._on_payment(sender, msg)

    def _send(self, recipient: str, msg: Any, key: str) -> None:
        self._sent_ms[key] = _now_ms()
        try:
            self._net.send(recipient, msg)
        except Exception as exc:  # noqa: BLE001 - an unreachable peer: it is re-sent later
            self._log.info("payment_send_failed", recipient=recipient, error=str(exc)[:200])

    def _event(self, rec: DocumentRecord, event_type: str, reason: dict[str, Any] | None = None) -> None:
        self._events.append(PaymentEvent(_now_ms(), rec.kind, rec.document_id, event_type, rec.role, reason))

    def _mark_docs(self, agreement_id: str, role: str, status: str, paid_wei: int | None) -> None:
        """Move an agreement's accepted documents to Settled (those paid_wei covers) or Failed."""
        now = _now_ms()
        for kind in (INVOICE, DEBIT_NOTE):
            for rec in self._docs.documents(kind, role, agreement_id=agreement_id):
                if rec.status not in ("Accepted", "Failed") or rec.status == status:
                    continue
                if status == "Settled":
                    due = isinstance(rec.document, Invoice) or rec.document.payment_due_ms is not None
                    if not due or paid_wei is None or paid_wei < self._settle_target(rec):
                        continue
                moved = rec.moved(status, now)
                if moved is not rec:
                    self._docs.save_document(moved)
                    self._event(moved, status)

    def _settle_target(self, rec: DocumentRecord) -> int:
        """What must be paid for the agreement before this document counts as settled."""
        if isinstance(rec.document, Invoice):
            return rec.accepted_wei if rec.accepted_wei is not None else rec.amount_wei
        # A due debit note: the agreement's due total across activities when it was accepted.
        return self._docs.agreement_account(rec.agreement_id).due_wei if rec.role == "received" else rec.amount_wei

    # -- acknowledgements and re-sending ------------------------------------------------------

    def _on_ack(self, sender: str, ack: DocumentAck) -> None:
        now = _now_ms()
        if ack.kind == "payment":
            self._docs.mark_payment_acked(ack.document_id, "made")
            return
        if ack.kind not in (DEBIT_NOTE, INVOICE):
            return
        for role in ("issued", "received"):
            rec = self._docs.document(ack.kind, ack.document_id, role)
            if rec is None or rec.peer_id != sender:
                continue
            self._docs.mark_acked(ack.kind, ack.document_id, role, ack.acked, now)
            if role == "issued" and rec.status == "Issued" and ack.acked in (DebitNote.TYPE, Invoice.TYPE):
                self._docs.save_document(dataclasses.replace(rec.moved("Received", now), unacked=""))
            self._resend_s.pop(ack.document_id, None)

    def _resend(self, now: int) -> None:
        for kind in (DEBIT_NOTE, INVOICE):
            for rec in self._docs.unacked(kind):
                msg = rec.document if rec.role == "issued" and rec.unacked == rec.document.TYPE else rec.reply
                if msg is not None:
                    self._maybe_resend(rec.peer_id, msg, rec.document_id, now)
        for p in self._docs.payments("made", unacked=True):
            self._maybe_resend(p.payment.payee_id, p.payment, p.payment.payment_id, now)

    def _maybe_resend(self, peer: str, msg: Any, key: str, now: int) -> None:
        every_s = self._resend_s.get(key, self._cfg.resend_s)
        if now - self._sent_ms.get(key, 0) < every_s * 1000:
            return
        self._resend_s[key] = min(every_s * 2, _MAX_RESEND_S)
        self._send(peer, msg, key)

    # -- the tick ------------------------------------------------------------------------------

    def _on_tick(self, now: int) -> None:
        for step in (self._issue_debit_notes, self._end_agreements, self._enforce_accept_timeouts, self._resend,
                     self._verify_pending, self._expire_allocations, self._pay_due):  # fmt: skip
            try:
                step(now)
            except (ProtocolError, PaymentError, MarketError, ValueError, pykka.Timeout) as exc:
                self._log.warning("payment_tick_step_failed", step=step.__name__, error=str(exc)[:300])
