"""The matcher: offers a node has heard, indexed, matched two-way against demands and ranked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from protocol.constraint_analysis import required_equalities
from protocol.constraints import Constraint, Tri, parse
from protocol.market import MarketDemand, MarketOffer
from protocol.rank import RankExpression, parse_rank

__all__ = ["Parsed", "OfferIndex", "parse_side", "rank_offers", "rank_by", "two_way", "INDEXED_PROPERTIES"]

# Properties demands almost always pin to one value; offers are indexed by them so a demand
# is only evaluated against offers that can possibly match.
INDEXED_PROPERTIES = ("golem.runtime.name", "golem.node.debug.subnet", "golem.com.pricing.model")


@dataclass(frozen=True, slots=True)
class Parsed:
    """An offer or demand with its constraint and rank expression parsed once."""

    doc: Any  # MarketOffer or MarketDemand
    constraint: Constraint
    rank: RankExpression | None

    @property
    def properties(self) -> dict[str, Any]:
        """The document's properties."""
        return self.doc.properties


def parse_side(doc: MarketOffer | MarketDemand) -> Parsed:
    """Parse a document's constraints and rank.

    Raises:
        ConstraintSyntaxError: either does not parse.
    """
    constraint = parse(doc.constraints.strip() or "()")
    rank = parse_rank(doc.rank) if doc.rank.strip() else None
    return Parsed(doc, constraint, rank)


@dataclass
class OfferIndex:
    """Offers by id, with an equality index on INDEXED_PROPERTIES."""

    max_offers: int = 200_000
    offers: dict[str, Parsed] = field(default_factory=dict)
    _index: dict[str, dict[Any, set[str]]] = field(default_factory=lambda: {p: {} for p in INDEXED_PROPERTIES})

    def __len__(self) -> int:
        return len(self.offers)

    def add(self, parsed: Parsed) -> bool:
        """Index an offer; False if the index is full or it is already there."""
        offer_id = parsed.doc.offer_id
        if offer_id in self.offers or len(self.offers) >= self.max_offers:
            return False
        self.offers[offer_id] = parsed
        for prop, by_value in self._index.items():
            for value in _index_values(parsed.properties.get(prop)):
                by_value.setdefault(value, set()).add(offer_id)
        return True

    def remove(self, offer_id: str) -> Parsed | None:
        """Forget an offer (withdrawn or expired)."""
        parsed = self.offers.pop(offer_id, None)
        if parsed is None:
            return None
        for prop, by_value in self._index.items():
            for value in _index_values(parsed.properties.get(prop)):
                ids = by_value.get(value)
                if ids is not None:
                    ids.discard(offer_id)
                    if not ids:
                        del by_value[value]
        return parsed

    def expire(self, now_ms: int) -> list[str]:
        """Drop offers whose expiry passed; return their ids."""
        gone = [oid for oid, p in self.offers.items() if p.doc.expires_ms <= now_ms]
        for oid in gone:
            self.remove(oid)
        return gone

    def candidates(self, demand: Parsed) -> Iterable[Parsed]:
        """Offers that the demand's required equalities on indexed properties allow."""
        required = required_equalities(demand.constraint)
        chosen: set[str] | None = None
        for prop in INDEXED_PROPERTIES:
            allowed = required.get(prop)
            if allowed is None:
                continue
            # Offers whose value the index cannot key by a string may match any literal.
            ids: set[str] = set(self._index[prop].get(_UNKEYED, ()))
            for value in allowed:
                ids |= self._index[prop].get(value, set())
            chosen = ids if chosen is None else chosen & ids
            if not chosen:
                return ()
        if chosen is None:
            return list(self.offers.values())
        return [self.offers[oid] for oid in chosen]

    def match(self, demand: Parsed, exclude_provider: str | None = None) -> list[Parsed]:
        """Offers matching the demand both ways, best rank first (then oldest first)."""
        matched: list[Parsed] = []
        # Many offers share one constraint text (the same provider software, the same
        # presets); the offer side is evaluated once per distinct constraint.
        offer_side_cache: dict[str, Tri] = {}
        demand_props = demand.properties
        for offer in self.candidates(demand):
            if offer.doc.provider_id == exclude_provider:
                continue
            if demand.constraint.evaluate(offer.properties) is not Tri.TRUE:
                continue
            text = offer.doc.constraints
            side = offer_side_cache.get(text)
            if side is None:
                side = offer_side_cache[text] = offer.constraint.evaluate(demand_props)
            if side is Tri.TRUE:
                matched.append(offer)
        return rank_offers(demand, matched)


def rank_offers(demand: Parsed, offers: list[Parsed]) -> list[Parsed]:
    """Order offers by the demand's rank expression (higher first; unrankable last)."""
    return rank_by(demand.rank, offers)


def rank_by(rank: RankExpression | None, others: list[Parsed]) -> list[Parsed]:
    """Order the other side's documents by a rank expression (higher first, unrankable last, then oldest)."""
    if rank is None:
        return sorted(others, key=lambda o: o.doc.created_ms)

    def key(other: Parsed) -> tuple[int, float, int]:
        value = rank.evaluate(other.properties)
        return (0, -value, other.doc.created_ms) if value is not None else (1, 0.0, other.doc.created_ms)

    return sorted(others, key=key)


def two_way(demand: Parsed, offer: Parsed) -> bool:
    """True when the demand and the offer match each other."""
    return (
        demand.constraint.evaluate(offer.properties) is Tri.TRUE
        and offer.constraint.evaluate(demand.properties) is Tri.TRUE
    )


# The index key of values other than strings: the constraint language compares numbers
# numerically and booleans as true/false, so (golem.node.debug.subnet=1) holds for 1, 1.0
# and [1]; such an offer must stay a candidate whatever string the demand requires.
_UNKEYED = object()


def _index_values(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    keys: list[Any] = [v for v in items if isinstance(v, str)]
    if any(v is not None and not isinstance(v, str) for v in items):
        keys.append(_UNKEYED)
    return keys
