"""Market messages: offers and demands (gossiped), proposals and agreements (sent directly, signed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from protocol.codec import Message, register
from protocol.errors import DecodeError, SignatureError
from protocol.identity import Identity, keccak, recover_signer

__all__ = [
    "OFFER_TOPIC",
    "DEMAND_TOPIC",
    "MarketOffer",
    "MarketDemand",
    "ProposalSent",
    "ProposalRejected",
    "AgreementTerms",
    "AgreementProposed",
    "AgreementApproved",
    "AgreementRejected",
    "AgreementCancelled",
    "AgreementTerminated",
    "AgreementAck",
    "canonical_properties",
    "initial_proposal_id",
    "sign_act",
    "verify_act",
]

OFFER_TOPIC = "market.offer"
DEMAND_TOPIC = "market.demand"


def canonical_properties(props: dict[str, Any]) -> bytes:
    """Properties as deterministic bytes (sorted keys), for content ids and signatures."""
    return msgpack.packb(sorted(props.items()), use_bin_type=True)


def _hash(domain: bytes, *values: Any) -> str:
    return keccak(domain + msgpack.packb(list(values), use_bin_type=True)).hex()


def initial_proposal_id(demand_id: str, offer_id: str) -> str:
    """The id of the Initial proposal an offer makes to a demand; both sides can compute it."""
    return _hash(b"loam/initial/1\x00", demand_id, offer_id)


class _Published(Message):
    """What offers and demands share: an id that is the hash of their content."""

    __slots__ = ()
    _DOMAIN: ClassVar[bytes]
    _KIND: ClassVar[str]

    @classmethod
    def content_id(
        cls, node_id: str, properties: dict[str, Any], constraints: str, rank: str, created_ms: int, expires_ms: int
    ) -> str:
        """The document's id: a hash of everything in it."""
        return _hash(cls._DOMAIN, node_id, canonical_properties(properties), constraints, rank, created_ms, expires_ms)

    def _id_and_node(self) -> tuple[str, str]:
        raise NotImplementedError

    def check_id(self) -> None:
        """Raises DecodeError unless the document's id is the hash of its content."""
        doc_id, node_id = self._id_and_node()
        props, cons, rank = self.properties, self.constraints, self.rank  # type: ignore[attr-defined]
        created, expires = self.created_ms, self.expires_ms  # type: ignore[attr-defined]
        if self.content_id(node_id, props, cons, rank, created, expires) != doc_id:
            raise DecodeError(f"{self._KIND} id {doc_id} does not match its content")


@register
@dataclass(frozen=True, slots=True)
class MarketOffer(_Published):
    """A provider's offer as gossiped: properties, constraints, an optional rank expression."""

    TYPE: ClassVar[str] = "market.offer"
    _DOMAIN: ClassVar[bytes] = b"loam/offer/1\x00"
    _KIND: ClassVar[str] = "offer"
    offer_id: str
    provider_id: str
    properties: dict[str, Any]
    constraints: str
    rank: str
    created_ms: int
    expires_ms: int

    def _id_and_node(self) -> tuple[str, str]:
        return self.offer_id, self.provider_id


@register
@dataclass(frozen=True, slots=True)
class MarketDemand(_Published):
    """A requestor's demand as gossiped."""

    TYPE: ClassVar[str] = "market.demand"
    _DOMAIN: ClassVar[bytes] = b"loam/demand/1\x00"
    _KIND: ClassVar[str] = "demand"
    demand_id: str
    requestor_id: str
    properties: dict[str, Any]
    constraints: str
    rank: str
    created_ms: int
    expires_ms: int

    def _id_and_node(self) -> tuple[str, str]:
        return self.demand_id, self.requestor_id


@register
@dataclass(frozen=True, slots=True)
class ProposalSent(Message):
    """A counter-proposal (Draft) sent directly to the other side of a negotiation.

    `demand` travels with the requestor's first counter so the provider has the demand even
    if gossip has not brought it yet.
    """

    TYPE: ClassVar[str] = "market.proposal"
    proposal_id: str
    prev_proposal_id: str
    demand_id: str
    offer_id: str
    issuer_id: str
    properties: dict[str, Any]
    constraints: str
    created_ms: int
    expires_ms: int
    demand: MarketDemand | None = None

    @staticmethod
    def content_id(
        prev_proposal_id: str, demand_id: str, offer_id: str, issuer_id: str,
        properties: dict[str, Any], constraints: str, created_ms: int, expires_ms: int,
    ) -> str:
        """The proposal id: a hash of the proposal's content and what it answers."""
        return _hash(
            b"loam/proposal/1\x00", prev_proposal_id, demand_id, offer_id, issuer_id,
            canonical_properties(properties), constraints, created_ms, expires_ms,
        )

    def check_id(self) -> None:
        """Raises DecodeError unless proposal_id is the hash of the content."""
        expected = self.content_id(
            self.prev_proposal_id, self.demand_id, self.offer_id, self.issuer_id,
            self.properties, self.constraints, self.created_ms, self.expires_ms,
        )
        if expected != self.proposal_id:
            raise DecodeError(f"proposal id {self.proposal_id} does not match its content")


@register
@dataclass(frozen=True, slots=True)
class ProposalRejected(Message):
    """The sender rejects a proposal of the receiver; that negotiation chain ends."""

    TYPE: ClassVar[str] = "market.proposal_rejected"
    proposal_id: str
    demand_id: str
    offer_id: str
    reason: dict[str, Any]


@register
@dataclass(frozen=True, slots=True)
class AgreementTerms(Message):
    """What both sides sign: the demand and offer sides as last proposed, and the validity."""

    TYPE: ClassVar[str] = "market.agreement_terms"
    agreement_id: str
    requestor_id: str
    provider_id: str
    demand_id: str
    offer_id: str
    demand_proposal_id: str
    offer_proposal_id: str
    demand_properties: dict[str, Any]
    demand_constraints: str
    offer_properties: dict[str, Any]
    offer_constraints: str
    valid_to_ms: int
    created_ms: int
    app_session_id: str = ""

    @staticmethod
    def make_id(offer_proposal_id: str, demand_proposal_id: str, requestor_id: str, created_ms: int) -> str:
        """The agreement id (derived, so both sides agree on it)."""
        return _hash(b"loam/agreement/1\x00", offer_proposal_id, demand_proposal_id, requestor_id, created_ms)

    def digest(self) -> bytes:
        """The hash both sides sign (every term, canonically)."""
        return keccak(
            b"loam/agreement-terms/1\x00"
            + msgpack.packb(
                [
                    self.agreement_id, self.requestor_id, self.provider_id, self.demand_id, self.offer_id,
                    self.demand_proposal_id, self.offer_proposal_id,
                    canonical_properties(self.demand_properties), self.demand_constraints,
                    canonical_properties(self.offer_properties), self.offer_constraints,
                    self.valid_to_ms, self.created_ms, self.app_session_id,
                ],
                use_bin_type=True,
            )
        )


def _act_digest(action: str, agreement_digest: bytes, *values: Any) -> bytes:
    return keccak(b"loam/agreement-act/1\x00" + msgpack.packb([action, agreement_digest, *values], use_bin_type=True))


def sign_act(identity: Identity, action: str, terms: AgreementTerms, *values: Any) -> bytes:
    """A signature by identity over an action on an agreement (propose, approve, reject, ...)."""
    return identity.sign(_act_digest(action, terms.digest(), *values))


def verify_act(signer: str, signature: bytes, action: str, terms: AgreementTerms, *values: Any) -> None:
    """Raises SignatureError unless signer signed this action on these terms."""
    if recover_signer(_act_digest(action, terms.digest(), *values), signature) != signer:
        raise SignatureError(f"{action} of agreement {terms.agreement_id} is not signed by {signer}")


@register
@dataclass(frozen=True, slots=True)
class AgreementProposed(Message):
    """The requestor confirms an agreement and sends it, signed, for the provider's approval."""

    TYPE: ClassVar[str] = "market.agreement_proposed"
    terms: AgreementTerms
    requestor_signature: bytes


@register
@dataclass(frozen=True, slots=True)
class AgreementApproved(Message):
    """The provider approves; its signature covers the terms and the approval time."""

    TYPE: ClassVar[str] = "market.agreement_approved"
    agreement_id: str
    approved_ms: int
    provider_signature: bytes


@register
@dataclass(frozen=True, slots=True)
class AgreementRejected(Message):
    """The provider rejects an agreement proposed to it."""

    TYPE: ClassVar[str] = "market.agreement_rejected"
    agreement_id: str
    reason: dict[str, Any]
    ts_ms: int
    signature: bytes


@register
@dataclass(frozen=True, slots=True)
class AgreementCancelled(Message):
    """The requestor withdraws an agreement before the provider approved it."""

    TYPE: ClassVar[str] = "market.agreement_cancelled"
    agreement_id: str
    reason: dict[str, Any]
    ts_ms: int
    signature: bytes


@register
@dataclass(frozen=True, slots=True)
class AgreementTerminated(Message):
    """Either side ends an approved agreement, with a reason."""

    TYPE: ClassVar[str] = "market.agreement_terminated"
    agreement_id: str
    terminator: str
    reason: dict[str, Any]
    ts_ms: int
    signature: bytes


@register
@dataclass(frozen=True, slots=True)
class AgreementAck(Message):
    """Receipt of an agreement message, so the sender stops re-sending it."""

    TYPE: ClassVar[str] = "market.agreement_ack"
    agreement_id: str
    acked: str  # the TYPE of the message acknowledged

