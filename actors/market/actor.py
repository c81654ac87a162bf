"""MarketActor: offers and demands, two-way matching, proposal negotiation and signed agreements."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import (
    AgreementEvent,
    AgreementNotFoundError,
    AgreementOperationEvent,
    EventLog,
    EventQueue,
    InvalidTransitionError,
    MarketError,
    Proposal,
    ProposalEvent,
    ProposalNotFoundError,
    ProposalRejectedEvent,
    SubscriptionNotFoundError,
    now_ms,
)
from actors.market.matching import OfferIndex, Parsed, parse_side
from actors.market.store import AgreementRecord, AgreementStore
from actors.net.actor import GossipExpired, Received
from protocol.codec import Message, decode, encode
from protocol.errors import ProtocolError
from protocol.identity import Identity
from protocol.market import (
    DEMAND_TOPIC,
    OFFER_TOPIC,
    AgreementAck,
    AgreementApproved,
    AgreementCancelled,
    AgreementProposed,
    AgreementRejected,
    AgreementTerminated,
    AgreementTerms,
    MarketDemand,
    MarketOffer,
    ProposalRejected,
    ProposalSent,
    initial_proposal_id,
    sign_act,
    verify_act,
)
from protocol.net import GossipItem
from protocol.properties import flatten, validate_properties

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["MarketActor", "wait_for_agreement"]

_PROPOSAL_TTL_MS = 10 * 60_000
_MAX_KNOWN_DEMANDS = 50_000
_MAX_PROPOSALS = 100_000
_RESEND_FAST_MS = 2_000
_RESEND_SLOW_MS = 30_000
_RESEND_GIVE_UP_MS = 24 * 3600_000


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass
class _Subscription:
    sub_id: str
    kind: str  # "offer" or "demand"
    parsed: Parsed
    item_id: str
    queue: EventQueue
    listener: pykka.ActorRef | None
    active: bool = True

    @property
    def expires_ms(self) -> int:
        return self.parsed.doc.expires_ms


@dataclass
class _ProposalRec:
    proposal: Proposal
    sub_id: str
    counterpart: str  # node id of the other side of this negotiation
    ours: bool
    expires_ms: int
    demand: MarketDemand | None = None  # provider side: the demand this negotiation is about


class MarketActor(LoamActor):
    """The node's market; the REST API and the provider agent drive it through its proxy."""

    name = "market"

    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        net: Any,
        conn: Any,
        *,
        on_actor_failure: FailureHandler | None = None,
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._id = identity
        self._settings = settings
        self._net = net
        self._store = AgreementStore(conn)
        self._ask_s = settings.actors.ask_timeout_s
        self._offers = OfferIndex()
        self._offer_of_item: dict[str, str] = {}  # gossip item id -> offer id
        self._demands: dict[str, MarketDemand] = {}  # demands heard by gossip
        self._demand_of_item: dict[str, str] = {}
        self._subs: dict[str, _Subscription] = {}
        self._proposals: dict[str, _ProposalRec] = {}
        self._agreements: dict[str, AgreementRecord] = {}
        self._last_sent: dict[str, int] = {}  # agreement id -> when we last (re)sent its message
        self._log_events = EventLog()
        self._ticker: Ticker | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start_up(self) -> None:
        for rec in self._store.load_all():
            self._agreements[rec.agreement_id] = rec
        for event in self._store.events():
            self._log_events.append(event)
        self._net.subscribe("market.", self.actor_ref).get(timeout=self._ask_s)
        for topic in (OFFER_TOPIC, DEMAND_TOPIC):
            self._net.subscribe_gossip(topic, self.actor_ref).get(timeout=self._ask_s)
            for item, _received in self._net.items(topic).get(timeout=self._ask_s):
                self._on_gossip(item)
        self._ticker = Ticker(self.actor_ref, _Tick(), 1.0)
        self._log.info("market_started", agreements=len(self._agreements), offers_known=len(self._offers))

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        # Withdraw what we still publish, so other nodes do not wait for it to expire.
        for sub in self._subs.values():
            sub.queue.close()
            self._net.withdraw(sub.item_id)

    # -- messages from the network and timers ------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self._on_tick(now_ms())
            return None
        try:
            if isinstance(message, Received):
                self._on_direct(message.sender, message.message)
            elif isinstance(message, GossipItem):
                self._on_gossip(message)
            elif isinstance(message, GossipExpired):
                self._forget_item(message.item_id)
        except (ProtocolError, MarketError) as exc:
            self._log.warning("market_message_rejected", error=str(exc)[:300], kind=type(message).__name__)
        except Exception as exc:  # noqa: BLE001 - remote input must never kill the market
            self._log.error("market_message_failed", error=repr(exc), exc_info=True)
        return None

    def _on_gossip(self, item: GossipItem) -> None:
        if item.withdrawn:
            self._forget_item(item.item_id)
            return
        if item.origin == self.node_id:
            return
        if item.topic == OFFER_TOPIC:
            offer = decode(item.payload, MarketOffer)
            offer.check_id()
            if offer.provider_id != item.origin:
                raise ProtocolError(f"offer {offer.offer_id} names provider {offer.provider_id} but came from {item.origin}")
            validate_properties(offer.properties)
            parsed = parse_side(offer)
            if self._offers.add(parsed):
                self._offer_of_item[item.item_id] = offer.offer_id
                self._match_new_offer(parsed)
        elif item.topic == DEMAND_TOPIC:
            demand = decode(item.payload, MarketDemand)
            demand.check_id()
            if demand.requestor_id != item.origin:
                raise ProtocolError(f"demand {demand.demand_id} came from {item.origin}, not its requestor")
            validate_properties(demand.properties)
            if len(self._demands) < _MAX_KNOWN_DEMANDS:
                self._demands[demand.demand_id] = demand
                self._demand_of_item[item.item_id] = demand.demand_id

    def _forget_item(self, item_id: str) -> None:
        offer_id = self._offer_of_item.pop(item_id, None)
        if offer_id is not None:
            self._offers.remove(offer_id)
        demand_id = self._demand_of_item.pop(item_id, None)
        if demand_id is not None:
            self._demands.pop(demand_id, None)

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe_offer(
        self, properties: dict[str, Any], constraints: str, rank: str = "", ttl_s: float = 3600.0,
        listener: pykka.ActorRef | None = None,
    ) -> str:
        """Publish an offer; events go to listener (told) or to the subscription's queue.

        Raises:
            PropertyError, ConstraintSyntaxError: bad properties or constraints.
        """
        return self._subscribe("offer", properties, constraints, rank, ttl_s, listener)

    def subscribe_demand(
        self, properties: dict[str, Any], constraints: str, rank: str = "", ttl_s: float = 3600.0,
        listener: pykka.ActorRef | None = None,
    ) -> str:
        """Publish a demand and get Initial proposals from matching offers, best rank first.

        Raises:
            PropertyError, ConstraintSyntaxError: bad properties or constraints.
        """
        return self._subscribe("demand", properties, constraints, rank, ttl_s, listener)

    def _subscribe(
        self, kind: str, properties: dict[str, Any], constraints: str, rank: str, ttl_s: float,
        listener: pykka.ActorRef | None,
    ) -> str:
        if not 1 <= ttl_s <= 7 * 24 * 3600:
            raise MarketError(f"subscription lifetime must be 1 s to 7 days, got {ttl_s} s")
        props = validate_properties(flatten(properties))
        now = now_ms()
        expires = now + int(ttl_s * 1000)
        cls = MarketOffer if kind == "offer" else MarketDemand
        doc = cls(cls.content_id(self.node_id, props, constraints, rank, now, expires), self.node_id, props, constraints, rank, now, expires)
        parsed = parse_side(doc)
        topic = OFFER_TOPIC if kind == "offer" else DEMAND_TOPIC
        item = self._net.publish(topic, encode(doc), ttl_s).get(timeout=self._ask_s)
        sub_id = doc.offer_id if kind == "offer" else doc.demand_id
        sub = _Subscription(sub_id, kind, parsed, item.item_id, EventQueue(), listener)
        self._subs[sub_id] = sub
        self._log.info("subscribed", kind=kind, sub_id=sub_id, ttl_s=ttl_s)
        if kind == "demand":
            for offer in self._offers.match(parsed, exclude_provider=self.node_id):
                self._initial_proposal(sub, offer)
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        """Withdraw an offer or demand network-wide and end its event queue.

        Raises:
            SubscriptionNotFoundError: no such active subscription.
        """
        sub = self._sub(sub_id)
        sub.active = False
        sub.queue.close()
        del self._subs[sub_id]
        self._net.withdraw(sub.item_id)
        for pid in [pid for pid, rec in self._proposals.items() if rec.sub_id == sub_id]:
            del self._proposals[pid]
        self._log.info("unsubscribed", sub_id=sub_id)

    def subscriptions(self, kind: str | None = None) -> list[Any]:
        """Active offers or demands of this node (MarketOffer / MarketDemand)."""
        return [s.parsed.doc for s in self._subs.values() if kind is None or s.kind == kind]

    def subscription_queue(self, sub_id: str) -> EventQueue:
        """The event queue of a subscription (wait on it from your own thread).

        Raises:
            SubscriptionNotFoundError: no such active subscription.
        """
        return self._sub(sub_id).queue

    def known_offers(self) -> list[MarketOffer]:
        """Offers of other nodes this node has heard."""
        return [p.doc for p in self._offers.offers.values()]

    def known_demands(self) -> list[MarketDemand]:
        """Demands of other nodes this node has heard."""
        return list(self._demands.values())

    def matching_demands(self, offer_id: str) -> list[MarketDemand]:
        """(Provider) demands heard that match one of our offers both ways, best by the offer's rank first.

        Raises:
            SubscriptionNotFoundError: no such offer of ours.
        """
        from actors.market.matching import rank_by, two_way

        sub = self._sub(offer_id, kind="offer")
        matched = []
        for demand in self._demands.values():
            try:
                parsed = parse_side(demand)
            except ProtocolError:
                continue
            if two_way(parsed, sub.parsed):
                matched.append(parsed)
        return [p.doc for p in rank_by(sub.parsed.rank, matched)]

    def _sub(self, sub_id: str, kind: str | None = None) -> _Subscription:
        sub = self._subs.get(sub_id)
        if sub is None or not sub.active or (kind is not None and sub.kind != kind):
            raise SubscriptionNotFoundError(f"subscription {sub_id} not found")
        return sub

    def _emit(self, sub: _Subscription, event: Any) -> None:
        if sub.listener is not None:
            sub.listener.tell(event)
        else:
            sub.queue.put(event)

    # -- matching and proposals --------------------------------------------------------------

    def _match_new_offer(self, offer: Parsed) -> None:
        from actors.market.matching import two_way

        for sub in list(self._subs.values()):
            if sub.kind == "demand" and sub.active and two_way(sub.parsed, offer):
                self._initial_proposal(sub, offer)

    def _initial_proposal(self, sub: _Subscription, offer: Parsed) -> None:
        doc: MarketOffer = offer.doc
        pid = initial_proposal_id(sub.sub_id, doc.offer_id)
        if pid in self._proposals:
            return
        proposal = Proposal(
            pid, doc.provider_id, doc.properties, doc.constraints, "Initial", now_ms(), None, sub.sub_id, doc.offer_id
        )
        self._remember(_ProposalRec(proposal, sub.sub_id, doc.provider_id, ours=False, expires_ms=doc.expires_ms))
        self._emit(sub, ProposalEvent(now_ms(), proposal))

    def _remember(self, rec: _ProposalRec) -> None:
        if len(self._proposals) >= _MAX_PROPOSALS:
            raise MarketError("too many open proposals on this node")
        self._proposals[rec.proposal.proposal_id] = rec

    def get_proposal(self, sub_id: str, proposal_id: str) -> Proposal:
        """A proposal of a subscription (ours or theirs).

        Raises:
            SubscriptionNotFoundError, ProposalNotFoundError.
        """
        self._sub(sub_id)
        rec = self._proposals.get(proposal_id)
        if rec is None or rec.sub_id != sub_id:
            raise ProposalNotFoundError(f"proposal {proposal_id} not found in subscription {sub_id}")
        return rec.proposal

    def counter_proposal(self, sub_id: str, proposal_id: str, properties: dict[str, Any], constraints: str) -> str:
        """Answer the other side's proposal with ours (a Draft); returns our proposal's id.

        Raises:
            SubscriptionNotFoundError, ProposalNotFoundError, InvalidTransitionError,
            PropertyError, ConstraintSyntaxError.
        """
        from protocol.constraints import parse

        sub = self._sub(sub_id)
        theirs = self._their_proposal(sub_id, proposal_id)
        props = validate_properties(flatten(properties))
        parse(constraints.strip() or "()")
        now = now_ms()
        p = theirs.proposal
        expires = now + _PROPOSAL_TTL_MS
        new_id = ProposalSent.content_id(proposal_id, p.demand_id, p.offer_id, self.node_id, props, constraints, now, expires)
        first = sub.kind == "demand" and p.state == "Initial"
        msg = ProposalSent(
            new_id, proposal_id, p.demand_id, p.offer_id, self.node_id, props, constraints, now, expires,
            demand=sub.parsed.doc if first else None,
        )
        ours = Proposal(new_id, self.node_id, props, constraints, "Draft", now, proposal_id, p.demand_id, p.offer_id)
        self._remember(_ProposalRec(ours, sub_id, theirs.counterpart, ours=True, expires_ms=expires, demand=theirs.demand))
        self._net.send(theirs.counterpart, msg)
        return new_id

    def reject_proposal(self, sub_id: str, proposal_id: str, reason: dict[str, Any] | None = None) -> None:
        """Reject the other side's proposal; the other side gets a ProposalRejectedEvent.

        Raises:
            SubscriptionNotFoundError, ProposalNotFoundError, InvalidTransitionError.
        """
        self._sub(sub_id)
        rec = self._their_proposal(sub_id, proposal_id)
        rec.proposal = dataclasses.replace(rec.proposal, state="Rejected")
        p = rec.proposal
        self._net.send(rec.counterpart, ProposalRejected(proposal_id, p.demand_id, p.offer_id, reason or {}))

    def _their_proposal(self, sub_id: str, proposal_id: str) -> _ProposalRec:
        rec = self._proposals.get(proposal_id)
        if rec is None or rec.sub_id != sub_id:
            raise ProposalNotFoundError(f"proposal {proposal_id} not found in subscription {sub_id}")
        if rec.ours:
            raise InvalidTransitionError(f"proposal {proposal_id} is our own; counter or reject the other side's")
        if rec.proposal.state in ("Rejected", "Expired", "Accepted"):
            raise InvalidTransitionError(f"proposal {proposal_id} is {rec.proposal.state}")
        if rec.expires_ms <= now_ms():
            raise InvalidTransitionError(f"proposal {proposal_id} has expired")
        if rec.proposal.state == "Initial" and rec.proposal.offer_id not in self._offers.offers:
            raise InvalidTransitionError(f"offer {rec.proposal.offer_id} is no longer on the market")
        return rec

    def _on_proposal(self, sender: str, msg: ProposalSent) -> None:
        msg.check_id()
        if msg.issuer_id != sender:
            raise ProtocolError(f"proposal {msg.proposal_id} issued by {msg.issuer_id} came from {sender}")
        validate_properties(msg.properties)
        from protocol.constraints import parse

        parse(msg.constraints.strip() or "()")
        now = now_ms()
        if msg.expires_ms <= now:
            return
        offer_sub = self._subs.get(msg.offer_id)
        demand_sub = self._subs.get(msg.demand_id)
        demand: MarketDemand | None = None
        if offer_sub is not None and offer_sub.kind == "offer" and offer_sub.active:
            sub = offer_sub
            prev = self._proposals.get(msg.prev_proposal_id)
            if msg.prev_proposal_id == initial_proposal_id(msg.demand_id, msg.offer_id):
                if msg.demand is None:
                    raise ProtocolError("a first counter-proposal must carry its demand")
                msg.demand.check_id()
                if msg.demand.requestor_id != sender or msg.demand.demand_id != msg.demand_id:
                    raise ProtocolError("the demand in a counter-proposal is not the sender's")
                demand = msg.demand
            elif prev is not None and prev.ours and prev.counterpart == sender and prev.sub_id == sub.sub_id:
                demand = prev.demand
            else:
                raise ProtocolError(f"proposal {msg.proposal_id} answers no proposal of ours")
        elif demand_sub is not None and demand_sub.kind == "demand" and demand_sub.active:
            sub = demand_sub
            prev = self._proposals.get(msg.prev_proposal_id)
            if prev is None or not prev.ours or prev.counterpart != sender or prev.sub_id != sub.sub_id:
                raise ProtocolError(f"proposal {msg.proposal_id} answers no proposal of ours")
        else:
            self._net.send(sender, ProposalRejected(msg.proposal_id, msg.demand_id, msg.offer_id, {"message": "subscription not found"}))
            return
        if msg.proposal_id in self._proposals:
            return  # a duplicate
        proposal = Proposal(
            msg.proposal_id, sender, msg.properties, msg.constraints, "Draft", now, msg.prev_proposal_id,
            msg.demand_id, msg.offer_id,
        )
        self._remember(_ProposalRec(proposal, sub.sub_id, sender, ours=False, expires_ms=msg.expires_ms, demand=demand))
        self._emit(sub, ProposalEvent(now, proposal))

    def _on_proposal_rejected(self, sender: str, msg: ProposalRejected) -> None:
        rec = self._proposals.get(msg.proposal_id)
        if rec is not None:
            if not rec.ours or rec.counterpart != sender:
                raise ProtocolError(f"{sender} cannot reject proposal {msg.proposal_id}")
            rec.proposal = dataclasses.replace(rec.proposal, state="Rejected")
            sub = self._subs.get(rec.sub_id)
        elif msg.proposal_id == initial_proposal_id(msg.demand_id, msg.offer_id):
            sub = self._subs.get(msg.offer_id)  # the requestor rejects what our offer proposed
        else:
            return
        if sub is not None and sub.active:
            self._emit(sub, ProposalRejectedEvent(now_ms(), msg.proposal_id, dict(msg.reason)))

    # -- agreements: the requestor's side ----------------------------------------------------

    def create_agreement(self, proposal_id: str, valid_to_ms: int) -> str:
        """Make an agreement from the provider's counter-proposal; returns its id (state Proposal).

        Raises:
            ProposalNotFoundError, InvalidTransitionError.
        """
        rec = self._proposals.get(proposal_id)
        if rec is None:
            raise ProposalNotFoundError(f"proposal {proposal_id} not found")
        sub = self._sub(rec.sub_id)
        if sub.kind != "demand" or rec.ours:
            raise InvalidTransitionError(f"proposal {proposal_id} is not a provider's proposal to one of our demands")
        if rec.proposal.state == "Initial":
            raise InvalidTransitionError(
                f"proposal {proposal_id} is an Initial proposal: counter it first, then make the agreement "
                "from the provider's answer"
            )
        if rec.proposal.state != "Draft" or rec.expires_ms <= now_ms():
            raise InvalidTransitionError(f"proposal {proposal_id} is {rec.proposal.state} and cannot become an agreement")
        now = now_ms()
        if valid_to_ms <= now:
            raise MarketError("an agreement's validTo must be in the future")
        ours = self._proposals.get(rec.proposal.prev_proposal_id or "")
        if ours is None or not ours.ours:
            raise InvalidTransitionError(f"the proposal {proposal_id} answers does not exist any more")
        p, d = rec.proposal, ours.proposal
        terms = AgreementTerms(
            agreement_id=AgreementTerms.make_id(p.proposal_id, d.proposal_id, self.node_id, now),
            requestor_id=self.node_id, provider_id=p.issuer_id, demand_id=p.demand_id, offer_id=p.offer_id,
            demand_proposal_id=d.proposal_id, offer_proposal_id=p.proposal_id,
            demand_properties=d.properties, demand_constraints=d.constraints,
            offer_properties=p.properties, offer_constraints=p.constraints,
            valid_to_ms=int(valid_to_ms), created_ms=now,
        )
        rec.proposal = dataclasses.replace(rec.proposal, state="Accepted")
        self._save(AgreementRecord(terms, "requestor", "Proposal", updated_ms=now))
        self._log.info("agreement_created", agreement_id=terms.agreement_id, provider=p.issuer_id)
        return terms.agreement_id

    def confirm_agreement(self, agreement_id: str, app_session_id: str = "") -> None:
        """Sign the agreement and send it to the provider (state Pending).

        Raises:
            AgreementNotFoundError, InvalidTransitionError.
        """
        rec = self._agreement(agreement_id, role="requestor")
        now = now_ms()
        if rec.terms.valid_to_ms <= now:
            self._save(rec.moved("Expired", now))
            raise InvalidTransitionError(f"agreement {agreement_id} has expired")
        terms = dataclasses.replace(rec.terms, app_session_id=app_session_id or "")
        sig = sign_act(self._id, "propose", terms)
        rec = dataclasses.replace(rec, terms=terms).moved("Pending", now, requestor_signature=sig)
        self._save(rec)
        self._send_state(rec)

    def cancel_agreement(self, agreement_id: str, reason: dict[str, Any] | None = None) -> None:
        """Withdraw an agreement the provider has not approved (Proposal or Pending → Cancelled).

        Raises:
            AgreementNotFoundError, InvalidTransitionError.
        """
        rec = self._agreement(agreement_id, role="requestor")
        now = now_ms()
        reason = reason or {}
        was_pending = rec.state == "Pending"
        sig = sign_act(self._id, "cancel", rec.terms, _reason_text(reason), now)
        rec = rec.moved("Cancelled", now, reason=reason, end_signature=sig, end_ms=now, terminator=self.node_id)
        self._save(rec, event=AgreementOperationEvent(now, agreement_id, "AgreementCancelledEvent", reason=reason))
        if was_pending:
            self._send_state(rec)

    def agreement_state(self, agreement_id: str) -> str:
        """The agreement's state.

        Raises:
            AgreementNotFoundError.
        """
        return self._agreement(agreement_id).state

    # -- agreements: the provider's side -----------------------------------------------------

    def approve_agreement(self, agreement_id: str) -> None:
        """Approve an agreement proposed to us (Pending → Approved), signed.

        Raises:
            AgreementNotFoundError, InvalidTransitionError.
        """
        rec = self._agreement(agreement_id, role="provider")
        now = now_ms()
        if rec.state == "Approved":
            return
        if rec.terms.valid_to_ms <= now and rec.state == "Pending":
            self._save(rec.moved("Expired", now))
            raise InvalidTransitionError(f"agreement {agreement_id} has expired")
        sig = sign_act(self._id, "approve", rec.terms, now)
        rec = rec.moved("Approved", now, provider_signature=sig, approved_ms=now)
        self._save(rec, event=AgreementOperationEvent(now, agreement_id, "AgreementApprovedEvent"))
        self._send_state(rec)
        self._log.info("agreement_approved", agreement_id=agreement_id, requestor=rec.terms.requestor_id)

    def reject_agreement(self, agreement_id: str, reason: dict[str, Any] | None = None) -> None:
        """Refuse an agreement proposed to us (Pending → Rejected).

        Raises:
            AgreementNotFoundError, InvalidTransitionError.
        """
        rec = self._agreement(agreement_id, role="provider")
        now = now_ms()
        reason = reason or {}
        sig = sign_act(self._id, "reject", rec.terms, _reason_text(reason), now)
        rec = rec.moved("Rejected", now, reason=reason, end_signature=sig, end_ms=now, terminator=self.node_id)
        self._save(rec, event=AgreementOperationEvent(now, agreement_id, "AgreementRejectedEvent", reason=reason))
        self._send_state(rec)

    # -- agreements: both sides --------------------------------------------------------------

    def terminate_agreement(self, agreement_id: str, reason: dict[str, Any] | None = None) -> None:
        """End an approved agreement; repeating it is a no-op.

        Raises:
            AgreementNotFoundError, InvalidTransitionError.
        """
        rec = self._agreement(agreement_id)
        if rec.state == "Terminated":
            return
        now = now_ms()
        reason = reason or {}
        sig = sign_act(self._id, "terminate", rec.terms, _reason_text(reason), now)
        rec = rec.moved("Terminated", now, reason=reason, end_signature=sig, end_ms=now, terminator=self.node_id)
        self._save(rec, event=self._terminated_event(rec, now))
        self._send_state(rec)
        self._log.info("agreement_terminated", agreement_id=agreement_id, by="us")

    def get_agreement(self, agreement_id: str) -> AgreementRecord:
        """The agreement as this node keeps it.

        Raises:
            AgreementNotFoundError.
        """
        return self._agreement(agreement_id)

    def list_agreements(self, state: str | None = None) -> list[AgreementRecord]:
        """Agreements of this node, optionally in one state."""
        return [r for r in self._agreements.values() if state is None or r.state == state]

    def event_log(self) -> EventLog:
        """The node's agreement events (thread-safe; wait on it from your own thread)."""
        return self._log_events

    def _agreement(self, agreement_id: str, role: str | None = None) -> AgreementRecord:
        rec = self._agreements.get(agreement_id)
        if rec is None or (role is not None and rec.role != role):
            raise AgreementNotFoundError(f"agreement {agreement_id} not found")
        return rec

    def _terminated_event(self, rec: AgreementRecord, now: int) -> AgreementOperationEvent:
        side = "Requestor" if rec.terminator == rec.terms.requestor_id else "Provider"
        return AgreementOperationEvent(now, rec.agreement_id, "AgreementTerminatedEvent", terminator=side, reason=rec.reason)

    def _save(self, rec: AgreementRecord, event: AgreementOperationEvent | None = None) -> None:
        self._store.save(rec)
        self._agreements[rec.agreement_id] = rec
        if event is not None:
            event = self._log_events.append(event)
            self._store.add_event(event)
            # The provider agent (or whoever subscribed the offer) hears about its agreements.
            sub = self._subs.get(rec.terms.offer_id) if rec.role == "provider" else None
            if sub is not None and sub.listener is not None:
                sub.listener.tell(event)

    def _send_state(self, rec: AgreementRecord) -> None:
        """Send (or send again) the message that tells the other side our latest state."""
        msg = self._state_message(rec)
        if msg is None:
            return
        if rec.state != "Pending" and rec.unacked != msg.TYPE:
            rec = dataclasses.replace(rec, unacked=msg.TYPE)
            self._store.save(rec)
            self._agreements[rec.agreement_id] = rec
        self._last_sent[rec.agreement_id] = now_ms()
        self._net.send(rec.peer, msg)

    def _state_message(self, rec: AgreementRecord) -> Message | None:
        aid = rec.agreement_id
        if rec.state == "Pending" and rec.role == "requestor" and rec.requestor_signature:
            return AgreementProposed(rec.terms, rec.requestor_signature)
        if rec.state == "Approved" and rec.role == "provider" and rec.provider_signature and rec.approved_ms:
            return AgreementApproved(aid, rec.approved_ms, rec.provider_signature)
        if rec.end_signature is None or rec.end_ms is None or rec.terminator != self.node_id:
            return None
        reason = rec.reason or {}
        if rec.state == "Rejected":
            return AgreementRejected(aid, reason, rec.end_ms, rec.end_signature)
        if rec.state == "Cancelled":
            return AgreementCancelled(aid, reason, rec.end_ms, rec.end_signature)
        if rec.state == "Terminated":
            return AgreementTerminated(aid, self.node_id, reason, rec.end_ms, rec.end_signature)
        return None

    def _on_direct(self, sender: str, msg: Message) -> None:
        if isinstance(msg, ProposalSent):
            self._on_proposal(sender, msg)
        elif isinstance(msg, ProposalRejected):
            self._on_proposal_rejected(sender, msg)
        elif isinstance(msg, AgreementProposed):
            self._on_agreement_proposed(sender, msg)
        elif isinstance(msg, AgreementAck):
            rec = self._agreements.get(msg.agreement_id)
            if rec is not None and rec.peer == sender and rec.unacked == msg.acked:
                self._save(dataclasses.replace(rec, unacked=""))
        elif isinstance(msg, (AgreementApproved, AgreementRejected, AgreementCancelled, AgreementTerminated)):
            self._on_agreement_change(sender, msg)
        else:
            raise ProtocolError(f"the market does not take {msg.TYPE}")

    def _on_agreement_proposed(self, sender: str, msg: AgreementProposed) -> None:
        terms = msg.terms
        if terms.requestor_id != sender or terms.provider_id != self.node_id:
            raise ProtocolError(f"agreement {terms.agreement_id} from {sender} is not between it and us")
        verify_act(sender, msg.requestor_signature, "propose", terms)
        known = self._agreements.get(terms.agreement_id)
        if known is not None:
            if known.role == "provider":
                self._send_state(known)  # our answer may have been lost: send it again
            return
        now = now_ms()
        if terms.valid_to_ms <= now:
            raise MarketError(f"agreement {terms.agreement_id} arrived expired")
        offer_side = self._proposals.get(terms.offer_proposal_id)
        demand_side = self._proposals.get(terms.demand_proposal_id)
        if (
            offer_side is None or not offer_side.ours or offer_side.counterpart != sender
            or offer_side.proposal.properties != terms.offer_properties
            or offer_side.proposal.constraints != terms.offer_constraints
        ):
            raise ProtocolError(f"agreement {terms.agreement_id} does not carry a proposal we made")
        if (
            demand_side is None or demand_side.ours or demand_side.counterpart != sender
            or demand_side.proposal.properties != terms.demand_properties
            or demand_side.proposal.constraints != terms.demand_constraints
            or offer_side.proposal.prev_proposal_id != terms.demand_proposal_id
        ):
            raise ProtocolError(f"agreement {terms.agreement_id} does not carry the requestor's proposal we answered")
        rec = AgreementRecord(terms, "provider", "Pending", requestor_signature=msg.requestor_signature, updated_ms=now)
        self._save(rec)
        offer_side.proposal = dataclasses.replace(offer_side.proposal, state="Accepted")
        sub = self._subs.get(terms.offer_id)
        if sub is not None and sub.active:
            self._emit(sub, AgreementEvent(now, terms.agreement_id))
        self._log.info("agreement_proposed_to_us", agreement_id=terms.agreement_id, requestor=sender)

    def _on_agreement_change(self, sender: str, msg: Message) -> None:
        aid = msg.agreement_id  # type: ignore[attr-defined]
        rec = self._agreements.get(aid)
        if rec is None or rec.peer != sender:
            raise ProtocolError(f"{sender} changes agreement {aid} it is not party to")
        now = now_ms()
        if isinstance(msg, AgreementApproved):
            if rec.role != "requestor":
                raise ProtocolError("only a provider approves")
            verify_act(sender, msg.provider_signature, "approve", rec.terms, msg.approved_ms)
            if rec.state == "Pending":
                rec = rec.moved("Approved", now, provider_signature=msg.provider_signature, approved_ms=msg.approved_ms)
                self._save(rec, event=AgreementOperationEvent(now, aid, "AgreementApprovedEvent"))
                self._log.info("agreement_approved_by_provider", agreement_id=aid)
            elif rec.state in ("Cancelled", "Expired"):
                # We gave up before the approval arrived; end it on the provider's side too.
                reason = {"message": f"the requestor's agreement was {rec.state} before the approval arrived"}
                sig = sign_act(self._id, "terminate", rec.terms, _reason_text(reason), now)
                self._net.send(sender, AgreementTerminated(aid, self.node_id, reason, now, sig))
        elif isinstance(msg, AgreementRejected):
            verify_act(sender, msg.signature, "reject", rec.terms, _reason_text(msg.reason), msg.ts_ms)
            if rec.state == "Pending":
                rec = rec.moved("Rejected", now, reason=msg.reason, end_signature=msg.signature, end_ms=msg.ts_ms, terminator=sender)
                self._save(rec, event=AgreementOperationEvent(now, aid, "AgreementRejectedEvent", reason=msg.reason))
        elif isinstance(msg, AgreementCancelled):
            verify_act(sender, msg.signature, "cancel", rec.terms, _reason_text(msg.reason), msg.ts_ms)
            if rec.state in ("Pending", "Approved"):
                # An approval the requestor never saw counts for nothing: it cancelled first.
                state = "Cancelled" if rec.state == "Pending" else "Terminated"
                kind = "AgreementCancelledEvent" if state == "Cancelled" else "AgreementTerminatedEvent"
                rec = dataclasses.replace(
                    rec, state=state, updated_ms=now, reason=msg.reason, end_signature=msg.signature,
                    end_ms=msg.ts_ms, terminator=sender, unacked="",
                )
                event = (
                    AgreementOperationEvent(now, aid, kind, reason=msg.reason) if state == "Cancelled"
                    else self._terminated_event(rec, now)
                )
                self._save(rec, event=event)
        elif isinstance(msg, AgreementTerminated):
            verify_act(sender, msg.signature, "terminate", rec.terms, _reason_text(msg.reason), msg.ts_ms)
            if msg.terminator != sender:
                raise ProtocolError("a termination is signed by the side that terminates")
            if rec.state == "Approved":
                rec = rec.moved("Terminated", now, reason=msg.reason, end_signature=msg.signature, end_ms=msg.ts_ms, terminator=sender, unacked="")
                self._save(rec, event=self._terminated_event(rec, now))
                self._log.info("agreement_terminated", agreement_id=aid, by="peer")
        self._net.send(sender, AgreementAck(aid, msg.TYPE))

    # -- timers ------------------------------------------------------------------------------

    def _on_tick(self, now: int) -> None:
        for sub in [s for s in self._subs.values() if s.expires_ms <= now]:
            sub.active = False
            sub.queue.close()
            del self._subs[sub.sub_id]
        for pid in [pid for pid, rec in self._proposals.items() if rec.expires_ms + _PROPOSAL_TTL_MS <= now]:
            del self._proposals[pid]
        expired = set(self._offers.expire(now))
        if expired:
            self._offer_of_item = {k: v for k, v in self._offer_of_item.items() if v not in expired}
        for rec in list(self._agreements.values()):
            if rec.state in ("Proposal", "Pending") and rec.terms.valid_to_ms <= now:
                self._save(rec.moved("Expired", now))
                continue
            wants_resend = (rec.state == "Pending" and rec.role == "requestor") or (
                rec.unacked and rec.state not in ("Proposal", "Pending")
            )
            if not wants_resend or now - rec.updated_ms > _RESEND_GIVE_UP_MS:
                continue
            interval = _RESEND_FAST_MS if now - rec.updated_ms < 60_000 else _RESEND_SLOW_MS
            if now - self._last_sent.get(rec.agreement_id, 0) >= interval:
                self._send_state(rec)


def _reason_text(reason: dict[str, Any]) -> str:
    import json

    return json.dumps(reason, sort_keys=True, separators=(",", ":"))


def wait_for_agreement(market: Any, agreement_id: str, timeout_s: float, ask_timeout_s: float = 10.0) -> str:
    """Block (in the caller's thread) until the agreement leaves Proposal/Pending or the timeout; its state.

    Raises:
        AgreementNotFoundError.
    """
    import time

    log: EventLog = market.event_log().get(timeout=ask_timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        mark = log.last_ms
        state = market.agreement_state(agreement_id).get(timeout=ask_timeout_s)
        left = deadline - time.monotonic()
        if state not in ("Proposal", "Pending") or left <= 0:
            return state
        log.after(mark, 1, min(left, 1.0))

