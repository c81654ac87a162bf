"""The requestor's half of the payment ledger: allocations, checking and accepting documents, paying them exactly once."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from actors.market.events import MarketError
from actors.payment.ledger import (
    Allocation,
    PaymentTerms,
    Verdict,
    amount_due_wei,
    check_debit_note,
    check_invoice,
)
from actors.payment.ledger_store import ACCEPTED_STATUSES, DocumentRecord, PaymentRecord
from actors.payment.messages import (
    PaymentsSettled,
    SchedulePayment,
    WatchBalance,
    split_platform,
)
from actors.payment.networks import Network
from actors.payment.terms import tracked_from
from actors.payment.tracking_store import ScheduledPayment, TrackedAgreement
from protocol.errors import AllocationError, PaymentError, PaymentNotFoundError
from protocol.identity import keccak
from protocol.payment import (
    DEBIT_NOTE,
    INVOICE,
    DebitNote,
    DocumentAccepted,
    DocumentAck,
    DocumentRejected,
    Invoice,
    accept_document,
    make_payment_sent,
    reject_document,
)

if TYPE_CHECKING:
    from actors.payment.ledger_actor import PaymentLedgerActor  # noqa: F401 - the class this mixes into

__all__ = ["RequestorLedger", "FINAL_AGREEMENT_STATES", "now_ms"]

FINAL_AGREEMENT_STATES = frozenset({"Terminated", "Expired", "Cancelled", "Rejected"})


def now_ms() -> int:
    """Wall-clock time in ms."""
    return int(time.time() * 1000)


class RequestorLedger:
    """Mixed into PaymentLedgerActor: what the ledger does for a node that buys compute."""

    # -- allocations and decisions (called through the actor's proxy) ------------------------

    def create_allocation(
        self, total_wei: int, platform: str | None = None, address: str | None = None, timeout_ms: int | None = None,
        make_deposit: bool = False,
    ) -> Allocation:  # fmt: skip
        """Set money aside for work on a platform.

        Raises:
            AllocationError: a bad amount, platform, address or timeout, or more than the
                account holds beside its other allocations.
        """
        now = now_ms()
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

    def _check_platform(self, platform: str, error: type[PaymentError]) -> Network:
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
            self._driver_ref.tell(WatchBalance(platform))  # known shortly: the driver reports it
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
        a = a.amend(total_wei, now_ms(), timeout_ms)
        self._docs.save_allocation(a)
        return a

    def release_allocation(self, allocation_id: str) -> None:
        """Stop using an allocation (what it accepted is still paid).

        Raises:
            PaymentNotFoundError.
        """
        a = self.allocation(allocation_id)
        self._docs.save_allocation(a.release(now_ms()))
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
        tracked = dataclasses.replace(tracked, allocation_id=allocation_id, auto_accept=auto_accept, updated_ms=now_ms())
        self._track.update_agreement(tracked)
        if auto_accept:
            for kind in (DEBIT_NOTE, INVOICE):
                for rec in self._docs.documents(kind, "received", agreement_id=agreement_id, status="Received"):
                    self._auto_decide(rec, tracked)

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
                timestamp_ms=now_ms(), total_amount_accepted_wei=total_amount_accepted_wei,
            )  # fmt: skip
        except ValueError as exc:
            raise PaymentError(str(exc)) from None
        self._reply(rec, "Rejected", reply, None, None)

    # -- documents arrive --------------------------------------------------------------------

    def _requestor_agreement(self, agreement_id: str, provider_id: str | None) -> TrackedAgreement | None:
        tracked = self._track.agreement(agreement_id, "requestor")
        if tracked is None:
            try:
                rec = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
            except MarketError:
                return None
            if rec.role != "requestor" or rec.state not in ("Approved", "Terminated", "Expired"):
                return None
            tracked = tracked_from(rec, now_ms())
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
                message=f"agreement {doc.agreement_id} is not an agreement of ours with {sender}", timestamp_ms=now_ms(),
            )  # fmt: skip
            self._log.warning("document_for_unknown_agreement", kind=kind, document_id=doc_id, agreement_id=doc.agreement_id)
            self._net.send(sender, reply)
            return
        rec = DocumentRecord(doc, "received", "Received", updated_ms=now_ms())
        self._docs.add_document(rec)
        self._net.send(sender, DocumentAck(doc_id, kind, doc.TYPE))
        self._event(rec, "Received")
        self._log.info("document_received", kind=kind, document_id=doc_id, amount_wei=str(rec.amount_wei))
        verdict = self._check(rec, tracked)
        if not verdict.accepted:
            reply = reject_document(
                self._identity, document_id=doc_id, kind=kind, reason=verdict.reason, message=verdict.message,
                timestamp_ms=now_ms(),
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
            seen = (view.agreement_id, tuple(view.usage), view.usage_ms, view.state)
        except Exception:  # noqa: BLE001 - ActivityNotFoundError: not one of ours, or from before a restart
            seen = self._track.usage_seen(activity_id)  # what we saw before the restart
            if seen is None:
                return None
        agreement_id, seen_usage, usage_ms, state = seen
        if agreement_id != tracked.agreement_id:
            return None
        usage = list(seen_usage) or [0.0] * len(tracked.terms.usage_vector)
        # The provider's counters run on while its update travels: allow the time since, but
        # never past now: the document's own date (the issuer's word) cannot stretch it.
        at_ms = min(at_ms, now_ms())
        lag_s = max(0.0, (at_ms - (usage_ms or at_ms)) / 1000.0) + 2.0
        if state in ("Terminated", "Unresponsive"):
            lag_s = 2.0  # an ended activity's counters stopped: its last usage is final
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
        now = now_ms()
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
        moved = rec.moved(status, now_ms(), reply=reply, unacked=reply.TYPE, accepted_wei=accepted, allocation_id=allocation_id)
        self._docs.save_document(moved)
        self._send(rec.peer_id, reply, rec.document_id)
        reason = None
        if isinstance(reply, DocumentRejected):
            reason = {"rejectionReason": reply.reason, "totalAmountAccepted": reply.total_amount_accepted_wei, "message": reply.message}
            self._log.info("document_rejected", kind=rec.kind, document_id=rec.document_id, reason=reply.reason, message=reply.message)
        self._event(moved, status, reason)

    # -- paying --------------------------------------------------------------------------------

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
        now = now_ms() if now is None else now
        target, final = self._payable_wei(tracked, now)
        history = self._track.scheduled_payments(agreement_id=tracked.agreement_id)
        covered = sum(p.amount_wei for p in history if p.status in ("scheduled", "confirmed"))
        to_pay = target - covered
        settled = all(p.status != "scheduled" for p in history)
        if to_pay <= 0:
            if final and settled:
                self._track.update_agreement(dataclasses.replace(tracked, state="invoiced", updated_ms=now))
                # Paid before the invoice came (its debit notes): it is settled by what was paid.
                self._mark_docs(tracked.agreement_id, "received", "Settled", paid_wei=self._docs.paid_wei(tracked.agreement_id, "made"))
            elif tracked.state == "ended" and settled and now - (tracked.ended_ms or now) >= self._cfg.invoice_wait_s * 1000:
                # Over, no invoice in time, its accepted debit notes paid: out of the per-second scan
                # (closed). An invoice that still comes reopens it (below).
                self._track.update_agreement(dataclasses.replace(tracked, state="invoiced", updated_ms=now))
                self._log.info("agreement_closed_without_invoice", agreement_id=tracked.agreement_id)
            return
        if tracked.state == "invoiced":
            # Something payable again on a closed agreement (an invoice after its debit notes were
            # paid): back in the scan, which retries the payment until it is confirmed.
            tracked = dataclasses.replace(tracked, state="ended", ended_ms=tracked.ended_ms or now, updated_ms=now)
            self._track.update_agreement(tracked)
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
        now = now_ms()
        for payment_id, status, tx_hash in msg.settled:
            p = self._track.scheduled(payment_id)
            if p is None or not self._track.set_scheduled_status(payment_id, status, tx_hash, now):
                continue
            tracked = self._track.agreement(p.agreement_id, "requestor")
            if status == "failed":
                self._log.warning("payment_failed", payment_id=payment_id, agreement_id=p.agreement_id)
                self._mark_docs(p.agreement_id, "received", "Failed", paid_wei=None)
                if tracked is not None and tracked.state == "invoiced":  # closed meanwhile: back in the scan
                    self._track.update_agreement(dataclasses.replace(tracked, state="ended", updated_ms=now))
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

    def _expire_allocations(self, now: int) -> None:
        for a in self._docs.allocations("active"):
            expired = a.expire(now)
            if expired is not a:
                self._docs.save_allocation(expired)
                self._log.info("allocation_expired", allocation_id=a.allocation_id)

    def _pay_due(self, now: int) -> None:
        """Schedule what is payable and not paid or on its way (after a failure, a restart, a vanished provider).

        Requestor agreements go open → ended (the agreement is over) → invoiced (closed: its invoice
        is paid, or no invoice came within invoice_wait_s and its accepted debit notes are paid); a
        closed one with something payable again (a late invoice, a failed payment) goes back to ended.
        """
        for tracked in self._track.agreements("requestor", ("open", "ended")):
            if tracked.state == "open":
                try:
                    state = self._market.agreement_state(tracked.agreement_id).get(timeout=self._ask_s)
                except MarketError:
                    state = "Terminated"
                if state in FINAL_AGREEMENT_STATES:
                    tracked = dataclasses.replace(tracked, state="ended", ended_ms=now, updated_ms=now)
                    self._track.update_agreement(tracked)
            self._schedule_payments(tracked, now)
