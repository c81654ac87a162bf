"""PaymentLedgerActor: allocations, debit notes, invoices and payments between two nodes, stored and re-sent until acknowledged."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import MarketError
from actors.net.actor import Received
from actors.payment import chain as ch
from actors.payment.driver_actor import (
    BalanceUpdate,
    PaymentsSettled,
    PaymentVerified,
    SchedulePayment,
    VerifyPayment,
    network_paths,
    split_platform,
)
from actors.payment.events import ActivityUsage, PaymentEvent, PaymentEventLog
from actors.payment.ledger import (
    Allocation,
    PaymentTerms,
    Tolerance,
    Verdict,
    amount_due_wei,
    check_debit_note,
    check_invoice,
)
from actors.payment.ledger_store import ACCEPTED_STATUSES, DocumentRecord, LedgerStore, PaymentRecord
from actors.payment.terms import read_terms
from actors.payment.tracking_store import ScheduledPayment, TrackedActivity, TrackedAgreement, TrackingStore
from protocol.errors import AllocationError, PaymentError, PaymentNotFoundError, ProtocolError, SettingsError
from protocol.identity import keccak
from protocol.payment import (
    DEBIT_NOTE,
    INVOICE,
    DebitNote,
    DocumentAccepted,
    DocumentAck,
    DocumentRejected,
    Invoice,
    PaymentSent,
    accept_document,
    make_debit_note,
    make_invoice,
    make_payment_sent,
    reject_document,
    wei,
)

if TYPE_CHECKING:
    import sqlite3

    from node.settings import Settings
    from protocol.identity import Identity

__all__ = ["PaymentLedgerActor", "ActivityUsage", "Account"]

_FINAL_AGREEMENT_STATES = frozenset({"Terminated", "Expired", "Cancelled", "Rejected"})
_INVOICE_GRACE_MS = 5_000  # after an agreement ends, wait this long for its activities' last usage
_MAX_RESEND_S = 60.0
_VERIFY_EVERY_MS = 2_000


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


class PaymentLedgerActor(LoamActor):
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
        self._networks: dict[str, ch.Network] = {}
        self._balances: dict[str, BalanceUpdate] = {}
        self._sent_ms: dict[str, int] = {}  # document/payment id -> when we last (re-)sent it
        self._resend_s: dict[str, float] = {}  # its current back-off
        self._verifying: dict[str, tuple[PaymentSent, int]] = {}  # payment id -> notice, last asked
        self._timed_out: set[str] = set()  # agreements we terminated for an unaccepted debit note
        self._ticker: Ticker | None = None

    # -- life ----------------------------------------------------------------------------

    def start_up(self) -> None:
        try:
            self._networks = ch.load_network_layers(network_paths(self._settings))
        except SettingsError as exc:
            self._log.error("payment_networks_unreadable", error=str(exc))
        # The activity actor starts empty: activities from before a restart are gone, and
        # their last usage is what their invoice charges.
        now = _now_ms()
        for act in self._track.activities(running=True):
            self._track.save_activity(dataclasses.replace(act, ended=True, updated_ms=now))
        self._net.subscribe("payment.", self.actor_ref).get(timeout=self._ask_s)
        self._driver.attach_ledger(self.actor_ref, [self.default_platform()])
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

    def create_allocation(
        self, total_wei: int, platform: str | None = None, address: str | None = None, timeout_ms: int | None = None,
        make_deposit: bool = False,
    ) -> Allocation:  # fmt: skip
        """Set money aside for work on a platform.

        Raises:
            AllocationError: a bad amount, platform, address or timeout, or more than the
                account holds beside its other allocations.
        """
        now = _now_ms()
        if isinstance(total_wei, bool) or not isinstance(total_wei, int) or total_wei <= 0:
            raise AllocationError(f"allocation amount {total_wei!r} must be a positive amount of wei")
        platform = platform or self.default_platform()
        self._check_platform(platform, AllocationError)
        if address is not None and (not isinstance(address, str) or address.lower() != self.node_id.lower()):
            raise AllocationError(f"allocation address {address!r} is not this node's account {self.node_id}")
        if timeout_ms is None:
            timeout_ms = now + int(self._cfg.allocation_timeout_s * 1000)
        elif isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= now:
            raise AllocationError(f"allocation timeout {timeout_ms!r} is not in the future")
        self._check_funds(platform, total_wei)
        a = Allocation(
            os.urandom(16).hex(), self.node_id, platform, total_wei, timeout_ms=timeout_ms,
            make_deposit=bool(make_deposit), created_ms=now, updated_ms=now,
        )  # fmt: skip
        self._docs.save_allocation(a)
        self._log.info("allocation_created", allocation_id=a.allocation_id, platform=platform, total_wei=str(total_wei))
        return a

    def _check_platform(self, platform: str, error: type[PaymentError]) -> ch.Network:
        try:
            _, name, token = split_platform(platform)
        except PaymentError as exc:
            raise error(str(exc)) from None
        net = self._networks.get(name)
        if net is None or net.token.lower() != token:
            known = ", ".join(f"erc20-{n.name}-{n.token.lower()}" for n in self._networks.values())
            raise error(f"unknown payment platform {platform!r} (known: {known})")
        return net

    def _check_funds(self, platform: str, total_wei: int) -> None:
        bal = self._balances.get(platform)
        if bal is None or bal.token_wei is None:
            raise AllocationError(
                f"the balance of {self.node_id} on {platform} is not known yet (is the chain reachable?); try again shortly"
            )
        held = sum(a.total_wei - a.spent_wei for a in self._docs.allocations("active") if a.platform == platform)
        if held + total_wei > bal.token_wei:
            raise AllocationError(
                f"insufficient funds on {platform}: {bal.token_wei} wei in the account, {held} wei already allocated, "
                f"{total_wei} wei asked"
            )

    def allocations(self) -> list[Allocation]:
        """Allocations that are not released (active or expired)."""
        return [a for a in self._docs.allocations() if a.state != "released"]

    def allocation(self, allocation_id: str) -> Allocation:
        """One allocation.

        Raises:
            PaymentNotFoundError.
        """
        a = self._docs.allocation(allocation_id)
        if a is None or a.state == "released":
            raise PaymentNotFoundError(f"allocation {allocation_id} not found")
        return a

    def amend_allocation(self, allocation_id: str, total_wei: int, timeout_ms: int | None = None) -> Allocation:
        """A new total (and timeout).

        Raises:
            PaymentNotFoundError, AllocationError.
        """
        a = self.allocation(allocation_id)
        if isinstance(total_wei, bool) or not isinstance(total_wei, int) or total_wei <= 0:
            raise AllocationError(f"allocation amount {total_wei!r} must be a positive amount of wei")
        if total_wei > a.total_wei:
            self._check_funds(a.platform, total_wei - a.total_wei)
        a = a.amend(total_wei, _now_ms(), timeout_ms)
        self._docs.save_allocation(a)
        return a

    def release_allocation(self, allocation_id: str) -> None:
        """Stop using an allocation (what it accepted is still paid).

        Raises:
            PaymentNotFoundError.
        """
        a = self.allocation(allocation_id)
        self._docs.save_allocation(a.release(_now_ms()))
        self._log.info("allocation_released", allocation_id=allocation_id)

    def release_allocations(self) -> list[str]:
        """Release every allocation still held; returns their ids."""
        ids = [a.allocation_id for a in self._docs.allocations("active")]
        for allocation_id in ids:
            self.release_allocation(allocation_id)
        return ids

    def demand_decoration(self, allocation_ids: list[str]) -> tuple[dict[str, Any], list[str]]:
        """What a demand paid from these allocations must say: the platforms' addresses and a constraint.

        Raises:
            PaymentNotFoundError.
        """
        props: dict[str, Any] = {"golem.com.payment.protocol.version": 3}
        constraints: list[str] = []
        for allocation_id in allocation_ids:
            a = self.allocation(allocation_id)
            props[f"golem.com.payment.platform.{a.platform}.address"] = a.address
            constraints.append(f"(golem.com.payment.platform.{a.platform}.address=*)")
        if len(constraints) > 1:
            constraints = ["(|" + "".join(constraints) + ")"]
        return props, constraints

    def pay_agreement_from(self, agreement_id: str, allocation_id: str, auto_accept: bool = True) -> None:
        """Pay an agreement of ours (as requestor) from an allocation; accept its valid documents automatically.

        What `loam run` and the requestor library use; REST clients accept documents themselves.

        Raises:
            PaymentNotFoundError, PaymentError: unknown allocation or agreement.
        """
        a = self.allocation(allocation_id)
        tracked = self._requestor_agreement(agreement_id, None)
        if tracked is None:
            raise PaymentError(f"agreement {agreement_id} is not an agreement of ours as requestor")
        if tracked.platform != a.platform:
            raise PaymentError(f"agreement {agreement_id} pays on {tracked.platform}, allocation {allocation_id} is for {a.platform}")
        tracked = dataclasses.replace(tracked, allocation_id=allocation_id, auto_accept=auto_accept, updated_ms=_now_ms())
        self._track.update_agreement(tracked)
        if auto_accept:
            for kind in (DEBIT_NOTE, INVOICE):
                for rec in self._docs.documents(kind, "received", agreement_id=agreement_id, status="Received"):
                    self._auto_decide(rec, tracked)

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

    def accept_document(self, kind: str, document_id: str, total_amount_accepted_wei: int, allocation_id: str) -> None:
        """Accept a received debit note or invoice, paying from an allocation (accepting again is a no-op).

        Raises:
            PaymentNotFoundError, AllocationError, PaymentError: unknown document or allocation, an
                amount other than the document's, an allocation too small or for another platform.
        """
        self._check_kind(kind)
        rec = self._docs.document(kind, document_id, "received")
        if rec is None:
            raise PaymentNotFoundError(f"{kind.replace('_', ' ')} {document_id} not found among those received")
        if isinstance(total_amount_accepted_wei, bool) or not isinstance(total_amount_accepted_wei, int):
            raise PaymentError(f"accepted amount {total_amount_accepted_wei!r} is not an amount of wei")
        if total_amount_accepted_wei != rec.amount_wei:
            raise PaymentError(
                f"{kind.replace('_', ' ')} {document_id} asks {rec.amount_wei} wei; accepting {total_amount_accepted_wei} wei "
                "is not possible (accept the whole amount or reject it)"
            )
        if rec.status in ACCEPTED_STATUSES:
            return
        tracked = self._requestor_agreement(rec.agreement_id, rec.peer_id)
        if tracked is None:
            raise PaymentError(f"{kind.replace('_', ' ')} {document_id} is for agreement {rec.agreement_id}, unknown here")
        self._accept(rec, tracked, allocation_id)

    def reject_document(
        self, kind: str, document_id: str, reason: str, message: str, total_amount_accepted_wei: int = 0
    ) -> None:
        """Reject a received debit note or invoice with a Golem reason.

        Raises:
            PaymentNotFoundError, PaymentError: unknown document, a bad reason, or already accepted.
        """
        self._check_kind(kind)
        rec = self._docs.document(kind, document_id, "received")
        if rec is None:
            raise PaymentNotFoundError(f"{kind.replace('_', ' ')} {document_id} not found among those received")
        if rec.status in ACCEPTED_STATUSES:
            raise PaymentError(f"{kind.replace('_', ' ')} {document_id} is {rec.status} and cannot be rejected")
        try:
            reply = reject_document(
                self._identity, document_id=document_id, kind=kind, reason=reason, message=str(message)[:1000],
                timestamp_ms=_now_ms(), total_amount_accepted_wei=total_amount_accepted_wei,
            )  # fmt: skip
        except ValueError as exc:
            raise PaymentError(str(exc)) from None
        self._reply(rec, "Rejected", reply, None, None)

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

    # -- requestor: documents arrive -------------------------------------------------------

    def _requestor_agreement(self, agreement_id: str, provider_id: str | None) -> TrackedAgreement | None:
        tracked = self._track.agreement(agreement_id, "requestor")
        if tracked is None:
            try:
                rec = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
            except MarketError:
                return None
            if rec.role != "requestor" or rec.state not in ("Approved", "Terminated", "Expired"):
                return None
            parties = read_terms(rec.terms)
            now = _now_ms()
            tracked = TrackedAgreement(
                agreement_id, "requestor", rec.terms.provider_id, parties.platform, parties.payee_address,
                parties.payer_address, parties.terms, None, False, "open", None, now, now,
            )  # fmt: skip
            self._track.add_agreement(tracked)
        if provider_id is not None and tracked.peer_id != provider_id:
            return None
        return tracked

    def _on_document(self, sender: str, doc: DebitNote | Invoice) -> None:
        kind = DEBIT_NOTE if isinstance(doc, DebitNote) else INVOICE
        doc.verify()  # signed by its issuer, id matches its content
        doc_id = doc.debit_note_id if isinstance(doc, DebitNote) else doc.invoice_id
        if doc.issuer_id != sender or doc.recipient_id != self.node_id:
            raise PaymentError(f"{kind} {doc_id} from {sender} is issued by {doc.issuer_id} to {doc.recipient_id}")
        known = self._docs.document(kind, doc_id, "received")
        if known is not None:
            # A re-send: it did not get our ack (or our reply); both again.
            self._net.send(sender, DocumentAck(doc_id, kind, doc.TYPE))
            if known.reply is not None:
                self._send(sender, known.reply, doc_id)
            return
        tracked = self._requestor_agreement(doc.agreement_id, sender)
        if tracked is None:
            reply = reject_document(
                self._identity, document_id=doc_id, kind=kind, reason="UnsolicitedService",
                message=f"agreement {doc.agreement_id} is not an agreement of ours with {sender}", timestamp_ms=_now_ms(),
            )  # fmt: skip
            self._log.warning("document_for_unknown_agreement", kind=kind, document_id=doc_id, agreement_id=doc.agreement_id)
            self._net.send(sender, reply)
            return
        rec = DocumentRecord(doc, "received", "Received", updated_ms=_now_ms())
        self._docs.add_document(rec)
        self._net.send(sender, DocumentAck(doc_id, kind, doc.TYPE))
        self._event(rec, "Received")
        self._log.info("document_received", kind=kind, document_id=doc_id, amount_wei=str(rec.amount_wei))
        verdict = self._check(rec, tracked)
        if not verdict.accepted:
            reply = reject_document(
                self._identity, document_id=doc_id, kind=kind, reason=verdict.reason, message=verdict.message,
                timestamp_ms=_now_ms(),
            )  # fmt: skip
            self._reply(rec, "Rejected", reply, None, None)
            return
        if tracked.auto_accept:
            self._auto_decide(rec, tracked)

    def _auto_decide(self, rec: DocumentRecord, tracked: TrackedAgreement) -> None:
        if tracked.allocation_id is None or rec.status != "Received":
            return
        try:
            self._accept(rec, tracked, tracked.allocation_id)
        except PaymentError as exc:
            # Not enough left in the allocation: leave it Received for a person to decide.
            self._log.warning("automatic_acceptance_refused", document_id=rec.document_id, error=str(exc))

    def _check(self, rec: DocumentRecord, tracked: TrackedAgreement) -> Verdict:
        terms = PaymentTerms(
            tracked.agreement_id, tracked.peer_id, self.node_id, tracked.platform, tracked.terms.coeffs,
            tracked.terms.payment_timeout_s is not None,
        )  # fmt: skip
        doc = rec.document
        if isinstance(doc, DebitNote):
            seen = self._usage_seen(doc.activity_id, tracked, doc.timestamp_ms)
            if seen is None:
                return Verdict.reject("UnsolicitedService", f"debit note {rec.document_id}: activity {doc.activity_id} is not ours")
            return check_debit_note(doc, terms, seen, self._tolerance)
        expected = 0
        views = 0
        for activity_id in doc.activity_ids:
            seen = self._usage_seen(activity_id, tracked, doc.timestamp_ms)
            if seen is not None:
                views += 1
                expected += amount_due_wei(tracked.terms.coeffs, seen)
        account = self._docs.agreement_account(tracked.agreement_id)
        return check_invoice(
            doc, terms, account.debit_note_wei, None, self._tolerance, expected_wei=expected if views else None
        )

    def _usage_seen(self, activity_id: str, tracked: TrackedAgreement, at_ms: int) -> tuple[float, ...] | None:
        """The usage we saw of our activity, allowing for the time between its last update and at_ms."""
        try:
            view = self._activity.view(activity_id).get(timeout=self._ask_s)
        except Exception:  # noqa: BLE001 - ActivityNotFoundError: not one of ours (or from before a restart)
            return None
        if view.agreement_id != tracked.agreement_id:
            return None
        usage = list(view.usage) or [0.0] * len(tracked.terms.usage_vector)
        # The provider's counters run on while its update travels: allow the time since.
        lag_s = max(0.0, (at_ms - (view.usage_ms or at_ms)) / 1000.0) + 2.0
        for i, name in enumerate(tracked.terms.usage_vector[: len(usage)]):
            if name == "golem.usage.duration_sec":
                usage[i] += lag_s
            elif name == "golem.usage.cpu_sec":
                usage[i] += lag_s * tracked.terms.threads
        return tuple(usage)

    def _accept(self, rec: DocumentRecord, tracked: TrackedAgreement, allocation_id: str) -> None:
        a = self._docs.allocation(allocation_id)
        if a is None:
            raise PaymentNotFoundError(f"allocation {allocation_id} not found")
        if a.platform != tracked.platform:
            raise AllocationError(f"allocation {allocation_id} is for {a.platform}; the agreement pays on {tracked.platform}")
        before = self._committed(tracked.agreement_id)
        now = _now_ms()
        reply = accept_document(
            self._identity, document_id=rec.document_id, kind=rec.kind, total_amount_accepted_wei=rec.amount_wei,
            allocation_id=allocation_id, timestamp_ms=now,
        )  # fmt: skip
        moved = rec.moved("Accepted", now, accepted_wei=rec.amount_wei, allocation_id=allocation_id, reply=reply,
                          unacked=reply.TYPE)  # fmt: skip
        self._docs.save_document(moved)
        increment = self._committed(tracked.agreement_id) - before
        if increment > 0:
            try:
                a = a.reserve(increment, now)
            except AllocationError:
                self._docs.save_document(rec)  # undo: nothing is accepted beyond the allocation
                raise
            self._docs.save_allocation(a)
        if tracked.allocation_id != allocation_id:
            self._track.update_agreement(dataclasses.replace(tracked, allocation_id=allocation_id, updated_ms=now))
        self._send(rec.peer_id, reply, rec.document_id)
        self._event(moved, "Accepted")
        self._log.info("document_accepted", kind=rec.kind, document_id=rec.document_id, amount_wei=str(rec.amount_wei))
        self._schedule_payments(self._track.agreement(tracked.agreement_id, "requestor") or tracked, now)

    def _committed(self, agreement_id: str) -> int:
        """What we have agreed to pay for an agreement: its accepted invoice, else its accepted debit notes."""
        account = self._docs.agreement_account(agreement_id)
        return account.invoice_wei if account.invoice_wei is not None else account.debit_note_wei

    def _reply(
        self, rec: DocumentRecord, status: str, reply: DocumentAccepted | DocumentRejected, accepted: int | None,
        allocation_id: str | None,
    ) -> None:  # fmt: skip
        moved = rec.moved(status, _now_ms(), reply=reply, unacked=reply.TYPE, accepted_wei=accepted, allocation_id=allocation_id)
        self._docs.save_document(moved)
        self._send(rec.peer_id, reply, rec.document_id)
        reason = None
        if isinstance(reply, DocumentRejected):
            reason = {"rejectionReason": reply.reason, "totalAmountAccepted": reply.total_amount_accepted_wei, "message": reply.message}
            self._log.info("document_rejected", kind=rec.kind, document_id=rec.document_id, reason=reply.reason, message=reply.message)
        self._event(moved, status, reason)

    # -- requestor: paying ---------------------------------------------------------------

    def _payable_wei(self, tracked: TrackedAgreement, now: int) -> tuple[int, bool]:
        """What the agreement makes payable now, and whether that is final (its invoice).

        The accepted invoice; else the accepted debit notes with a due date; and once the
        agreement has ended without an invoice for invoice_wait_s (a provider that vanished),
        every accepted debit note: work we accepted is paid even if no invoice ever comes.
        """
        account = self._docs.agreement_account(tracked.agreement_id)
        if account.invoice_wei is not None:
            return account.invoice_wei, True
        if tracked.state == "ended" and now - (tracked.ended_ms or now) >= self._cfg.invoice_wait_s * 1000:
            return account.debit_note_wei, False
        return account.due_wei, False

    def _schedule_payments(self, tracked: TrackedAgreement, now: int | None = None) -> None:
        now = _now_ms() if now is None else now
        target, final = self._payable_wei(tracked, now)
        history = self._track.scheduled_payments(agreement_id=tracked.agreement_id)
        covered = sum(p.amount_wei for p in history if p.status in ("scheduled", "confirmed"))
        to_pay = target - covered
        if to_pay <= 0:
            if final and all(p.status != "scheduled" for p in history):
                self._track.update_agreement(dataclasses.replace(tracked, state="invoiced", updated_ms=now))
            return
        docs = tuple(
            r.document_id
            for kind in (INVOICE, DEBIT_NOTE)
            for r in self._docs.documents(kind, "received", agreement_id=tracked.agreement_id, status="Accepted")
        )
        # Derived from the agreement and its history, so a crash and a retry compute the same id.
        payment_id = keccak(b"loam/payment/1\x00" + f"{tracked.agreement_id}:{target}:{len(history)}".encode()).hex()
        p = ScheduledPayment(
            payment_id, tracked.agreement_id, tracked.peer_id, tracked.payee_address, tracked.platform, to_pay,
            docs[:64], "scheduled", None, now, now,
        )  # fmt: skip
        if self._track.add_scheduled(p):  # recorded first: a crash after this re-sends it at start-up
            self._log.info("payment_scheduled", payment_id=payment_id, agreement_id=tracked.agreement_id, amount_wei=str(to_pay))
        self._driver_ref.tell(SchedulePayment(payment_id, p.platform, p.payee_address, p.amount_wei))

    def _on_settled(self, msg: PaymentsSettled) -> None:
        now = _now_ms()
        for payment_id, status, tx_hash in msg.settled:
            p = self._track.scheduled(payment_id)
            if p is None or not self._track.set_scheduled_status(payment_id, status, tx_hash, now):
                continue
            tracked = self._track.agreement(p.agreement_id, "requestor")
            if status == "failed":
                self._log.warning("payment_failed", payment_id=payment_id, agreement_id=p.agreement_id)
                self._mark_docs(p.agreement_id, "received", "Failed", paid_wei=None)
                continue  # the next tick schedules the amount again under a new id
            notice = make_payment_sent(
                self._identity, payee_id=p.payee_id, platform=p.platform, amount_wei=p.amount_wei, tx_hash=tx_hash or "",
                document_ids=p.document_ids, timestamp_ms=now, agreement_amounts=((p.agreement_id, p.amount_wei),),
            )  # fmt: skip
            self._docs.add_payment(PaymentRecord(notice, "made", now, unacked=notice.TYPE))
            self._spend(p, tracked, now)
            self._send(p.payee_id, notice, notice.payment_id)
            self._log.info("payment_confirmed", payment_id=payment_id, tx_hash=tx_hash, amount_wei=str(p.amount_wei))
            self._mark_docs(p.agreement_id, "received", "Settled", paid_wei=self._docs.paid_wei(p.agreement_id, "made"))

    def _spend(self, p: ScheduledPayment, tracked: TrackedAgreement | None, now: int) -> None:
        allocation_id = tracked.allocation_id if tracked is not None else None
        a = self._docs.allocation(allocation_id) if allocation_id else None
        if a is None:
            return
        try:
            self._docs.save_allocation(a.spend(p.amount_wei, now))
        except AllocationError as exc:  # paid what was accepted; the allocation's books say less
            self._log.warning("allocation_spend_mismatch", allocation_id=a.allocation_id, error=str(exc))

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

    # -- provider: usage, debit notes and invoices -----------------------------------------

    def _provider_agreement(self, agreement_id: str) -> TrackedAgreement | None:
        tracked = self._track.agreement(agreement_id, "provider")
        if tracked is not None:
            return tracked
        rec = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
        if rec.role != "provider":
            return None
        parties = read_terms(rec.terms)
        now = _now_ms()
        tracked = TrackedAgreement(
            agreement_id, "provider", rec.terms.requestor_id, parties.platform, parties.payee_address,
            parties.payer_address, parties.terms, None, False, "open", None, now, now,
        )  # fmt: skip
        self._track.add_agreement(tracked)
        return tracked

    def _on_usage(self, msg: ActivityUsage) -> None:
        tracked = self._provider_agreement(msg.agreement_id)
        if tracked is None:
            return
        now = _now_ms()
        old = self._track.activity(msg.activity_id)
        try:
            amount = amount_due_wei(tracked.terms.coeffs, msg.usage)
        except ValueError as exc:
            self._log.warning("usage_not_priced", activity_id=msg.activity_id, error=str(exc))
            return
        if old is None:
            old = TrackedActivity(msg.activity_id, msg.agreement_id, msg.usage, amount, False, "", now, now)
        if old.ended:
            return
        self._track.save_activity(dataclasses.replace(old, usage=msg.usage, amount_wei=max(amount, old.amount_wei),
                                                      ended=msg.ended, updated_ms=now))  # fmt: skip

    def _issue_debit_notes(self, now: int) -> None:
        for act in self._track.activities(running=True):
            tracked = self._track.agreement(act.agreement_id, "provider")
            if tracked is None or tracked.state != "open":
                continue
            if now - act.last_note_ms < tracked.terms.debit_note_interval_s * 1000:
                continue
            due = now + int(tracked.terms.payment_timeout_s * 1000) if tracked.terms.payment_timeout_s is not None else None
            note = make_debit_note(
                self._identity, agreement_id=act.agreement_id, activity_id=act.activity_id, recipient_id=tracked.peer_id,
                payment_platform=tracked.platform, total_amount_due_wei=act.amount_wei, usage_counter_vector=act.usage,
                timestamp_ms=now, previous_debit_note_id=act.last_note_id, payment_due_ms=due,
            )  # fmt: skip
            rec = DocumentRecord(note, "issued", "Issued", unacked=note.TYPE, updated_ms=now)
            self._docs.add_document(rec)
            self._track.save_activity(dataclasses.replace(act, last_note_id=note.debit_note_id, last_note_ms=now, updated_ms=now))
            self._send(tracked.peer_id, note, note.debit_note_id)
            self._log.info("debit_note_issued", debit_note_id=note.debit_note_id, activity_id=act.activity_id,
                           amount_wei=str(act.amount_wei))  # fmt: skip

    def _end_agreements(self, now: int) -> None:
        for tracked in self._track.agreements("provider", ("open", "ended")):
            if tracked.state == "open":
                try:
                    state = self._market.agreement_state(tracked.agreement_id).get(timeout=self._ask_s)
                except MarketError:
                    state = "Terminated"
                if state not in _FINAL_AGREEMENT_STATES:
                    continue
                tracked = dataclasses.replace(tracked, state="ended", ended_ms=now, updated_ms=now)
                self._track.update_agreement(tracked)
            activities = self._track.activities(tracked.agreement_id)
            if any(not a.ended for a in activities) and now - (tracked.ended_ms or now) < _INVOICE_GRACE_MS:
                continue
            self._issue_invoice(tracked, activities, now)

    def _issue_invoice(self, tracked: TrackedAgreement, activities: list[TrackedActivity], now: int) -> None:
        amount = sum(a.amount_wei for a in activities)
        self._track.update_agreement(dataclasses.replace(tracked, state="invoiced", updated_ms=now))
        if not activities:
            return
        timeout_s = tracked.terms.payment_timeout_s or 120.0
        invoice = make_invoice(
            self._identity, agreement_id=tracked.agreement_id, activity_ids=tuple(a.activity_id for a in activities),
            recipient_id=tracked.peer_id, payment_platform=tracked.platform, amount_wei=amount,
            payment_due_ms=now + int(timeout_s * 1000), timestamp_ms=now,
        )  # fmt: skip
        rec = DocumentRecord(invoice, "issued", "Issued", unacked=invoice.TYPE, updated_ms=now)
        self._docs.add_document(rec)
        self._send(tracked.peer_id, invoice, invoice.invoice_id)
        self._log.info("invoice_issued", invoice_id=invoice.invoice_id, agreement_id=tracked.agreement_id, amount_wei=str(amount))

    def _enforce_accept_timeouts(self, now: int) -> None:
        for rec in self._docs.documents(DEBIT_NOTE, "issued", status="Received") + self._docs.documents(
            DEBIT_NOTE, "issued", status="Issued"
        ):
            tracked = self._track.agreement(rec.agreement_id, "provider")
            if tracked is None or tracked.state != "open" or tracked.terms.accept_timeout_s is None:
                continue
            if rec.agreement_id in self._timed_out or now - rec.document.timestamp_ms < tracked.terms.accept_timeout_s * 1000:
                continue
            self._timed_out.add(rec.agreement_id)
            message = (
                f"debit note {rec.document_id} was not accepted within the agreed {tracked.terms.accept_timeout_s:.0f} s"
            )
            self._log.warning("debit_note_accept_timeout", agreement_id=rec.agreement_id, debit_note_id=rec.document_id)
            try:
                self._market.terminate_agreement(rec.agreement_id, {"message": message}).get(timeout=self._ask_s)
            except MarketError as exc:
                self._log.info("terminate_failed", agreement_id=rec.agreement_id, error=str(exc))

    def _on_reply(self, sender: str, reply: DocumentAccepted | DocumentRejected) -> None:
        rec = self._docs.document(reply.kind, reply.document_id, "issued")
        if rec is None:
            raise PaymentError(f"{reply.TYPE} from {sender} for {reply.kind} {reply.document_id}, which we did not issue")
        if sender != rec.peer_id:
            raise PaymentError(f"{reply.TYPE} for {reply.document_id} came from {sender}, not its recipient {rec.peer_id}")
        reply.verify(signer=rec.peer_id)
        self._net.send(sender, DocumentAck(reply.document_id, reply.kind, reply.TYPE))
        if isinstance(reply, DocumentAccepted):
            accepted = wei(reply.total_amount_accepted_wei)
            moved = rec.moved("Accepted", _now_ms(), accepted_wei=accepted, reply=reply, unacked="")
            if moved is not rec:
                self._docs.save_document(moved)
                self._event(moved, "Accepted")
                self._log.info("document_accepted_by_requestor", kind=rec.kind, document_id=rec.document_id)
        else:
            if rec.status in ACCEPTED_STATUSES or rec.status == "Rejected":
                return
            moved = rec.moved("Rejected", _now_ms(), reply=reply, unacked="")
            self._docs.save_document(moved)
            reason = {"rejectionReason": reply.reason, "totalAmountAccepted": reply.total_amount_accepted_wei, "message": reply.message}
            self._event(moved, "Rejected", reason)
            self._log.warning("document_rejected_by_requestor", kind=rec.kind, document_id=rec.document_id,
                              reason=reply.reason, message=reply.message)  # fmt: skip

    # -- provider: payments arrive -----------------------------------------------------------

    def _on_payment(self, sender: str, notice: PaymentSent) -> None:
        notice.verify()
        if notice.payer_id != sender or notice.payee_id != self.node_id:
            raise PaymentError(f"payment {notice.payment_id} from {sender} is from {notice.payer_id} to {notice.payee_id}")
        if any(r.payment.payment_id == notice.payment_id for r in self._docs.payments("received")):
            self._net.send(sender, DocumentAck(notice.payment_id, "payment", notice.TYPE))
            return
        for agreement_id, _ in notice.agreement_amounts:
            tracked = self._track.agreement(agreement_id, "provider")
            if tracked is None or tracked.peer_id != sender or tracked.platform != notice.platform:
                raise PaymentError(f"payment {notice.payment_id} names agreement {agreement_id}, not one of ours with {sender}")
        if not notice.agreement_amounts:
            raise PaymentError(f"payment {notice.payment_id} does not say which agreements it pays")
        if notice.payment_id not in self._verifying:
            self._verifying[notice.payment_id] = (notice, 0)
        self._verify_pending(_now_ms())

    def _verify_pending(self, now: int) -> None:
        for payment_id, (notice, asked_ms) in list(self._verifying.items()):
            if now - asked_ms < _VERIFY_EVERY_MS:
                continue
            agreement_id = notice.agreement_amounts[0][0]
            tracked = self._track.agreement(agreement_id, "provider")
            if tracked is None:
                del self._verifying[payment_id]
                continue
            self._verifying[payment_id] = (notice, now)
            self._driver_ref.tell(
                VerifyPayment(payment_id, notice.platform, notice.tx_hash, tracked.payer_address, tracked.payee_address, self.actor_ref)
            )

    def _on_verified(self, msg: PaymentVerified) -> None:
        entry = self._verifying.get(msg.payment_id)
        if entry is None:
            return
        notice, _ = entry
        if msg.error:
            self._log.warning("payment_not_verified", payment_id=msg.payment_id, tx_hash=msg.tx_hash, error=msg.error)
            del self._verifying[msg.payment_id]
            return
        if msg.transferred_wei is None:
            return  # not confirmed yet: asked again later
        claimed = sum(
            wei(r.payment.amount_wei) for r in self._docs.payments("received") if r.payment.tx_hash.lower() == msg.tx_hash.lower()
        )
        if claimed + wei(notice.amount_wei) > msg.transferred_wei:
            del self._verifying[msg.payment_id]
            self._log.warning(
                "payment_claims_more_than_transferred", payment_id=msg.payment_id, tx_hash=msg.tx_hash,
                transferred_wei=str(msg.transferred_wei), claimed_wei=str(claimed + wei(notice.amount_wei)),
            )  # fmt: skip
            return
        del self._verifying[msg.payment_id]
        now = _now_ms()
        self._docs.add_payment(PaymentRecord(notice, "received", now))
        self._net.send(notice.payer_id, DocumentAck(notice.payment_id, "payment", notice.TYPE))
        self._log.info("payment_verified", payment_id=msg.payment_id, tx_hash=msg.tx_hash, amount_wei=notice.amount_wei)
        for agreement_id, _ in notice.agreement_amounts:
            paid = self._docs.paid_wei(agreement_id, "received")
            self._mark_docs(agreement_id, "issued", "Settled", paid_wei=paid)

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
        for p in self._docs.payments("made"):
            if p.unacked:
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

    def _expire_allocations(self, now: int) -> None:
        for a in self._docs.allocations("active"):
            expired = a.expire(now)
            if expired is not a:
                self._docs.save_allocation(expired)
                self._log.info("allocation_expired", allocation_id=a.allocation_id)

    def _pay_due(self, now: int) -> None:
        """Schedule what is payable and not paid or on its way (after a failure, a restart, a vanished provider).

        Requestor agreements go open → ended (the agreement is over) → invoiced (its invoice is paid).
        """
        for tracked in self._track.agreements("requestor", ("open", "ended")):
            if tracked.state == "open":
                try:
                    state = self._market.agreement_state(tracked.agreement_id).get(timeout=self._ask_s)
                except MarketError:
                    state = "Terminated"
                if state in _FINAL_AGREEMENT_STATES:
                    tracked = dataclasses.replace(tracked, state="ended", ended_ms=now, updated_ms=now)
                    self._track.update_agreement(tracked)
            self._schedule_payments(tracked, now)

