"""The provider's half of the payment ledger: debit notes from usage, the invoice at the end, payments verified on chain."""

from __future__ import annotations

import dataclasses

from actors.market.events import MarketError
from actors.payment.events import ActivityUsage
from actors.payment.ledger import amount_due_wei
from actors.payment.ledger_store import ACCEPTED_STATUSES, DocumentRecord, PaymentRecord
from actors.payment.messages import PaymentVerified, VerifyPayment
from actors.payment.requestor import FINAL_AGREEMENT_STATES, now_ms
from actors.payment.terms import tracked_from
from actors.payment.tracking_store import TrackedActivity, TrackedAgreement
from protocol.errors import PaymentError
from protocol.payment import (
    DEBIT_NOTE,
    DocumentAccepted,
    DocumentAck,
    DocumentRejected,
    PaymentSent,
    make_debit_note,
    make_invoice,
    wei,
)

__all__ = ["ProviderLedger"]

_INVOICE_GRACE_MS = 5_000  # after an agreement ends, wait this long for its activities' last usage
_VERIFY_EVERY_MS = 2_000


class ProviderLedger:
    """Mixed into PaymentLedgerActor: what the ledger does for a node that sells compute."""

    # -- usage, debit notes and invoices ---------------------------------------------------

    def _provider_agreement(self, agreement_id: str) -> TrackedAgreement | None:
        tracked = self._track.agreement(agreement_id, "provider")
        if tracked is not None:
            return tracked
        rec = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
        if rec.role != "provider":
            return None
        tracked = tracked_from(rec, now_ms())
        self._track.add_agreement(tracked)
        return tracked

    def _on_usage(self, msg: ActivityUsage) -> None:
        tracked = self._provider_agreement(msg.agreement_id)
        if tracked is None:
            return
        now = now_ms()
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
                if state not in FINAL_AGREEMENT_STATES:
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
            moved = rec.moved("Accepted", now_ms(), accepted_wei=accepted, reply=reply, unacked="")
            if moved is not rec:
                self._docs.save_document(moved)
                self._event(moved, "Accepted")
                self._log.info("document_accepted_by_requestor", kind=rec.kind, document_id=rec.document_id)
                # Payments verified before this acceptance may already cover it.
                self._mark_docs(rec.agreement_id, "issued", "Settled", paid_wei=self._docs.paid_wei(rec.agreement_id, "received"))
        else:
            if rec.status in ACCEPTED_STATUSES or rec.status == "Rejected":
                return
            moved = rec.moved("Rejected", now_ms(), reply=reply, unacked="")
            self._docs.save_document(moved)
            reason = {"rejectionReason": reply.reason, "totalAmountAccepted": reply.total_amount_accepted_wei, "message": reply.message}
            self._event(moved, "Rejected", reason)
            self._log.warning("document_rejected_by_requestor", kind=rec.kind, document_id=rec.document_id,
                              reason=reply.reason, message=reply.message)  # fmt: skip

    # -- payments arrive ---------------------------------------------------------------------

    def _on_payment(self, sender: str, notice: PaymentSent) -> None:
        notice.verify()
        if notice.payer_id != sender or notice.payee_id != self.node_id:
            raise PaymentError(f"payment {notice.payment_id} from {sender} is from {notice.payer_id} to {notice.payee_id}")
        if self._docs.payments("received", payment_id=notice.payment_id):
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
        self._verify_pending(now_ms())

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
            wei(r.payment.amount_wei) for r in self._docs.payments("received", tx_hash=msg.tx_hash)
        )
        if claimed + wei(notice.amount_wei) > msg.transferred_wei:
            del self._verifying[msg.payment_id]
            self._log.warning(
                "payment_claims_more_than_transferred", payment_id=msg.payment_id, tx_hash=msg.tx_hash,
                transferred_wei=str(msg.transferred_wei), claimed_wei=str(claimed + wei(notice.amount_wei)),
            )  # fmt: skip
            return
        del self._verifying[msg.payment_id]
        now = now_ms()
        self._docs.add_payment(PaymentRecord(notice, "received", now))
        self._net.send(notice.payer_id, DocumentAck(notice.payment_id, "payment", notice.TYPE))
        self._log.info("payment_verified", payment_id=msg.payment_id, tx_hash=msg.tx_hash, amount_wei=notice.amount_wei)
        for agreement_id, _ in notice.agreement_amounts:
            paid = self._docs.paid_wei(agreement_id, "received")
            self._mark_docs(agreement_id, "issued", "Settled", paid_wei=paid)
