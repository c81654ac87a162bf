"""The matcher: the offer index narrows, matching is two-way, ranking orders, and the index never loses a match."""

from __future__ import annotations

import random
from typing import Any

import pytest

from actors.market.matching import OfferIndex, Parsed, parse_side, rank_offers, two_way
from protocol.constraints import Tri
from protocol.errors import ConstraintSyntaxError
from protocol.identity import Identity
from protocol.market import MarketDemand, MarketOffer
from tests.unit.protocol.samples import ALICE, BOB, CAROL, MALLORY, T0_MS

COEFFS = "golem.com.pricing.model.linear.coeffs"
CHEAPEST_FIRST = f"-{COEFFS}[0]"


def offer(
    provider: Identity = ALICE,
    runtime: str | None = "wasmtime",
    subnet: str | None = "public",
    price: float | None = 0.001,
    constraints: str = "",
    created_ms: int = T0_MS,
    expires_ms: int = T0_MS + 3_600_000,
    **extra: Any,
) -> Parsed:
    """A parsed offer; None leaves a property out."""
    props: dict[str, Any] = {"golem.inf.mem.gib": 4.0, "golem.com.pricing.model": "linear"}
    if runtime is not None:
        props["golem.runtime.name"] = runtime
    if subnet is not None:
        props["golem.node.debug.subnet"] = subnet
    if price is not None:
        props[COEFFS] = [price, 0.0001, 0.0]
    props.update(extra)
    doc = MarketOffer(
        offer_id=MarketOffer.content_id(provider.node_id, props, constraints, "", created_ms, expires_ms),
        provider_id=provider.node_id,
        properties=props,
        constraints=constraints,
        rank="",
        created_ms=created_ms,
        expires_ms=expires_ms,
    )
    return parse_side(doc)


def demand(constraints: str = "", rank: str = "", requestor: Identity = BOB, **props: Any) -> Parsed:
    """A parsed demand; keyword properties use "__" for "." (golem__srv__x -> golem.srv.x)."""
    properties = {k.replace("__", "."): v for k, v in props.items()}
    doc = MarketDemand(
        demand_id=MarketDemand.content_id(requestor.node_id, properties, constraints, rank, T0_MS, T0_MS + 600_000),
        requestor_id=requestor.node_id,
        properties=properties,
        constraints=constraints,
        rank=rank,
        created_ms=T0_MS,
        expires_ms=T0_MS + 600_000,
    )
    return parse_side(doc)


def index_of(*offers: Parsed) -> OfferIndex:
    index = OfferIndex()
    for o in offers:
        assert index.add(o)
    return index


def ids(parsed: list[Parsed] | Any) -> list[str]:
    return [p.doc.offer_id for p in parsed]


# ---- parse_side -------------------------------------------------------------------------------


def test_parse_side_treats_blank_constraints_as_match_all_and_blank_rank_as_none() -> None:
    parsed = offer(constraints="  ")
    assert parsed.rank is None
    assert parsed.properties is parsed.doc.properties
    assert parsed.constraint.evaluate({}) is Tri.TRUE


def test_parse_side_parses_a_rank() -> None:
    parsed = demand(rank=CHEAPEST_FIRST)
    assert parsed.rank is not None
    assert parsed.rank.evaluate({COEFFS: [0.5, 0.0]}) == -0.5


@pytest.mark.parametrize(("constraints", "rank"), [("(golem.runtime.name=", ""), ("", "1 +"), ("(&(a=1)", "x")])
def test_parse_side_refuses_what_does_not_parse(constraints: str, rank: str) -> None:
    with pytest.raises(ConstraintSyntaxError):
        demand(constraints=constraints, rank=rank)


# ---- add, remove, expire ----------------------------------------------------------------------


def test_added_offer_is_kept_once() -> None:
    o = offer()
    index = OfferIndex()
    assert index.add(o)
    assert not index.add(o)
    assert len(index) == 1
    assert index.offers[o.doc.offer_id] is o


def test_full_index_refuses_more_offers() -> None:
    index = OfferIndex(max_offers=2)
    assert index.add(offer(created_ms=T0_MS))
    assert index.add(offer(created_ms=T0_MS + 1))
    assert not index.add(offer(created_ms=T0_MS + 2))
    assert len(index) == 2


def test_removed_offer_is_gone_from_the_index_and_matching() -> None:
    a, b = offer(ALICE), offer(CAROL)
    index = index_of(a, b)
    assert index.remove(a.doc.offer_id) is a
    assert index.remove(a.doc.offer_id) is None
    assert len(index) == 1
    d = demand("(golem.runtime.name=wasmtime)")
    assert ids(index.candidates(d)) == [b.doc.offer_id]
    assert ids(index.match(d)) == [b.doc.offer_id]
    index.remove(b.doc.offer_id)
    assert list(index.candidates(d)) == []
    # no empty buckets stay behind
    assert all(not by_value for by_value in index._index.values())


def test_remove_of_an_unknown_offer_is_none() -> None:
    assert OfferIndex().remove("ab" * 32) is None


def test_removed_offer_can_be_added_again() -> None:
    o = offer()
    index = index_of(o)
    index.remove(o.doc.offer_id)
    assert index.add(o)
    assert ids(index.match(demand("(golem.runtime.name=wasmtime)"))) == [o.doc.offer_id]


def test_expire_drops_offers_at_or_past_their_expiry() -> None:
    early = offer(ALICE, expires_ms=T0_MS + 1_000)
    on_time = offer(CAROL, expires_ms=T0_MS + 2_000)
    late = offer(MALLORY, expires_ms=T0_MS + 3_000)
    index = index_of(early, on_time, late)
    assert index.expire(T0_MS + 999) == []
    assert index.expire(T0_MS + 2_000) == [early.doc.offer_id, on_time.doc.offer_id]
    assert list(index.offers) == [late.doc.offer_id]
    assert ids(index.match(demand())) == [late.doc.offer_id]


def test_expired_offer_is_not_matched() -> None:
    o = offer(expires_ms=T0_MS + 10)
    index = index_of(o)
    index.expire(T0_MS + 10)
    assert index.match(demand()) == []


# ---- candidates -------------------------------------------------------------------------------


def _mixed_offers() -> dict[str, Parsed]:
    return {
        "wasm_public": offer(ALICE, "wasmtime", "public", created_ms=T0_MS),
        "wasm_devnet": offer(ALICE, "wasmtime", "devnet", created_ms=T0_MS + 1),
        "vm_public": offer(CAROL, "vm", "public", created_ms=T0_MS + 2),
        "vm_devnet": offer(CAROL, "vm", "devnet", created_ms=T0_MS + 3),
        "no_runtime": offer(MALLORY, None, "public", created_ms=T0_MS + 4),
        "no_subnet": offer(MALLORY, "vm", None, created_ms=T0_MS + 5),
    }


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        ("(golem.runtime.name=wasmtime)", {"wasm_public", "wasm_devnet"}),
        ("(golem.runtime.name=vm)", {"vm_public", "vm_devnet", "no_subnet"}),
        ("(golem.node.debug.subnet=public)", {"wasm_public", "vm_public", "no_runtime"}),
        ("(&(golem.runtime.name=vm)(golem.node.debug.subnet=devnet))", {"vm_devnet"}),
        ("(|(golem.runtime.name=vm)(golem.runtime.name=wasmtime))", {"wasm_public", "wasm_devnet", "vm_public", "vm_devnet", "no_subnet"}),
        ("(&(golem.runtime.name=vm)(golem.inf.mem.gib>=1))", {"vm_public", "vm_devnet", "no_subnet"}),
        ("(golem.runtime.name=docker)", set()),
        ("(&(golem.runtime.name=wasmtime)(golem.node.debug.subnet=nowhere))", set()),
    ],
)
def test_candidates_narrow_by_required_runtime_and_subnet(constraints: str, expected: set[str]) -> None:
    offers = _mixed_offers()
    index = index_of(*offers.values())
    by_id = {o.doc.offer_id: name for name, o in offers.items()}
    assert {by_id[i] for i in ids(index.candidates(demand(constraints)))} == expected


@pytest.mark.parametrize(
    "constraints",
    [
        "",
        "()",
        "(golem.inf.mem.gib>=1)",
        "(golem.runtime.name=wasm*)",  # a wildcard is no equality
        "(!(golem.runtime.name=vm))",
        "(|(golem.runtime.name=vm)(golem.inf.mem.gib>=1))",  # not required on every branch
        "(golem.runtime.name<>vm)",
    ],
)
def test_candidates_are_all_offers_when_the_demand_requires_nothing_indexed(constraints: str) -> None:
    offers = _mixed_offers()
    index = index_of(*offers.values())
    assert sorted(ids(index.candidates(demand(constraints)))) == sorted(o.doc.offer_id for o in offers.values())


def test_candidates_of_an_empty_index_are_empty() -> None:
    assert list(OfferIndex().candidates(demand("(golem.runtime.name=vm)"))) == []
    assert list(OfferIndex().candidates(demand())) == []


def test_list_valued_property_is_indexed_by_each_string() -> None:
    both = offer(subnet=None, **{"golem.node.debug.subnet": ["public", "devnet"]})
    index = index_of(both)
    for subnet in ("public", "devnet"):
        d = demand(f"(golem.node.debug.subnet={subnet})")
        assert ids(index.candidates(d)) == [both.doc.offer_id]
        assert ids(index.match(d)) == [both.doc.offer_id]
    assert list(index.candidates(demand("(golem.node.debug.subnet=other)"))) == []
    index.remove(both.doc.offer_id)
    assert all(not by_value for by_value in index._index.values())


@pytest.mark.parametrize(
    ("value", "constraints"),
    [
        (7, "(golem.node.debug.subnet=7)"),
        (7, "(golem.node.debug.subnet=7.0)"),
        (True, "(golem.node.debug.subnet=true)"),
        ([7, "x"], "(golem.node.debug.subnet=7)"),
    ],
)
def test_offer_with_a_non_string_indexed_value_is_still_matched(value: Any, constraints: str) -> None:
    """The constraint language compares numbers numerically and booleans as true/false, so an
    offer whose indexed property is not a string may still satisfy a required equality."""
    odd = offer(subnet=None, **{"golem.node.debug.subnet": value})
    index = index_of(odd, offer(CAROL, subnet="public"))
    d = demand(constraints)
    assert two_way(d, odd)
    assert ids(index.match(d)) == [odd.doc.offer_id]
    index.remove(odd.doc.offer_id)
    assert not any(odd.doc.offer_id in ids_ for by_value in index._index.values() for ids_ in by_value.values())


# ---- two-way matching -------------------------------------------------------------------------


def test_offer_whose_constraints_reject_the_demand_is_not_matched() -> None:
    picky = offer(ALICE, constraints="(golem.srv.comp.expiration>2000000000000)")
    easy = offer(CAROL, constraints="(golem.srv.comp.expiration>0)")
    index = index_of(picky, easy)
    d = demand("(golem.runtime.name=wasmtime)", golem__srv__comp__expiration=T0_MS + 600_000)
    assert ids(index.match(d)) == [easy.doc.offer_id]
    assert not two_way(d, picky)
    assert two_way(d, easy)


def test_demand_whose_constraints_reject_the_offer_is_not_matched() -> None:
    big = offer(ALICE, **{"golem.inf.mem.gib": 8.0})
    small = offer(CAROL, created_ms=T0_MS + 1, **{"golem.inf.mem.gib": 1.0})
    index = index_of(big, small)
    d = demand("(&(golem.runtime.name=wasmtime)(golem.inf.mem.gib>=2))")
    assert [o.doc.provider_id for o in index.match(d)] == [ALICE.node_id]


def test_undefined_on_the_offer_side_is_not_a_match() -> None:
    """The offer asks about a property the demand does not have."""
    o = offer(constraints="(golem.srv.comp.expiration>0)")
    d = demand("(golem.runtime.name=wasmtime)")
    assert not two_way(d, o)
    assert index_of(o).match(d) == []


def test_undefined_on_the_demand_side_is_not_a_match() -> None:
    """The demand asks about a property the offer does not have."""
    o = offer()
    d = demand("(golem.inf.gpu.count>=1)")
    assert not two_way(d, o)
    assert index_of(o).match(d) == []


def test_negated_undefined_is_still_not_a_match() -> None:
    o = offer()
    d = demand("(!(golem.inf.gpu.count>=1))")
    assert not two_way(d, o)
    assert index_of(o).match(d) == []


def test_offers_sharing_a_constraint_text_are_each_matched() -> None:
    """The offer side is evaluated once per distinct constraint text; every offer still counts."""
    shared = "(golem.srv.comp.expiration>0)"
    offers = [offer(p, constraints=shared, created_ms=T0_MS + i) for i, p in enumerate((ALICE, CAROL, MALLORY))]
    other = offer(ALICE, constraints="(golem.srv.comp.expiration<0)", created_ms=T0_MS + 9)
    index = index_of(*offers, other)
    d = demand(golem__srv__comp__expiration=1)
    assert ids(index.match(d)) == ids(offers)


def test_exclude_provider_leaves_out_that_providers_offers() -> None:
    mine = offer(BOB, created_ms=T0_MS)
    theirs = offer(ALICE, created_ms=T0_MS + 1)
    index = index_of(mine, theirs)
    d = demand("(golem.runtime.name=wasmtime)", requestor=BOB)
    assert ids(index.match(d)) == [mine.doc.offer_id, theirs.doc.offer_id]
    assert ids(index.match(d, exclude_provider=BOB.node_id)) == [theirs.doc.offer_id]
    assert ids(index.match(d, exclude_provider=CAROL.node_id)) == [mine.doc.offer_id, theirs.doc.offer_id]


# ---- ranking ----------------------------------------------------------------------------------


def test_rank_on_negated_price_orders_cheapest_first() -> None:
    dear = offer(ALICE, price=0.01, created_ms=T0_MS)
    cheap = offer(CAROL, price=0.0001, created_ms=T0_MS + 1)
    middle = offer(MALLORY, price=0.001, created_ms=T0_MS + 2)
    index = index_of(dear, cheap, middle)
    ranked = index.match(demand("(golem.runtime.name=wasmtime)", rank=CHEAPEST_FIRST))
    assert ids(ranked) == ids([cheap, middle, dear])


def test_offers_the_rank_cannot_evaluate_come_last_oldest_first() -> None:
    unpriced_old = offer(ALICE, price=None, created_ms=T0_MS)
    unpriced_new = offer(CAROL, price=None, created_ms=T0_MS + 5)
    odd_price = offer(MALLORY, price=None, created_ms=T0_MS + 1, **{COEFFS: ["free"]})
    priced = offer(BOB, price=0.5, created_ms=T0_MS + 9)
    index = index_of(unpriced_new, priced, odd_price, unpriced_old)
    ranked = index.match(demand(rank=CHEAPEST_FIRST))
    assert ids(ranked) == ids([priced, unpriced_old, odd_price, unpriced_new])


def test_equal_rank_is_broken_oldest_first() -> None:
    newer = offer(ALICE, price=0.001, created_ms=T0_MS + 10)
    older = offer(CAROL, price=0.001, created_ms=T0_MS)
    index = index_of(newer, older)
    assert ids(index.match(demand(rank=CHEAPEST_FIRST))) == ids([older, newer])


def test_without_rank_oldest_offer_comes_first() -> None:
    offers = [offer(p, created_ms=T0_MS + t) for p, t in ((ALICE, 30), (CAROL, 10), (MALLORY, 20))]
    index = index_of(*offers)
    assert [o.doc.created_ms for o in index.match(demand())] == [T0_MS + 10, T0_MS + 20, T0_MS + 30]


def test_rank_higher_is_better() -> None:
    small = offer(ALICE, created_ms=T0_MS, **{"golem.inf.mem.gib": 1.0})
    big = offer(CAROL, created_ms=T0_MS + 1, **{"golem.inf.mem.gib": 64.0})
    assert ids(rank_offers(demand(rank="golem.inf.mem.gib"), [small, big])) == ids([big, small])


def test_rank_offers_of_nothing_is_nothing() -> None:
    assert rank_offers(demand(rank=CHEAPEST_FIRST), []) == []
    assert rank_offers(demand(), []) == []


# ---- soundness: the index and the cache never change the answer ---------------------------------

_RUNTIMES = ["wasmtime", "vm", "docker", None, ["vm", "wasmtime"], 1]
_SUBNETS = ["public", "devnet", "private", None, ["public", "devnet"], True]
_OFFER_CONSTRAINTS = [
    "",
    "(golem.srv.comp.expiration>0)",
    "(golem.node.debug.subnet=public)",
    "(&(golem.node.debug.subnet=devnet)(golem.srv.comp.expiration>0))",
    "(golem.srv.comp.task_package=*)",
]
_DEMAND_CONSTRAINTS = [
    "",
    "(golem.runtime.name=vm)",
    "(golem.runtime.name=wasmtime)",
    "(golem.runtime.name=1)",
    "(golem.node.debug.subnet=true)",
    "(&(golem.runtime.name=vm)(golem.node.debug.subnet=public))",
    "(|(golem.runtime.name=vm)(golem.runtime.name=docker))",
    "(&(golem.node.debug.subnet=devnet)(golem.inf.mem.gib>=2))",
    f"(&(golem.runtime.name=wasmtime)({COEFFS}<=0.005))",
    "(!(golem.runtime.name=vm))",
    "(golem.inf.mem.gib>=8)",
    "(golem.com.pricing.model=linear)",
]
_RANKS = ["", CHEAPEST_FIRST, "golem.inf.mem.gib", f"golem.inf.mem.gib - {COEFFS}[0] * 1000"]


def _random_offer(rng: random.Random, i: int) -> Parsed:
    extra: dict[str, Any] = {"golem.inf.mem.gib": rng.choice([0.5, 2.0, 8.0, 16.0])}
    if rng.random() < 0.2:
        extra["golem.com.pricing.model"] = rng.choice(["fixed", ["linear"]])
    return offer(
        provider=rng.choice([ALICE, CAROL, MALLORY, BOB]),
        runtime=None,
        subnet=None,
        price=rng.choice([None, 0.0001, 0.001, 0.001, 0.01]),
        constraints=rng.choice(_OFFER_CONSTRAINTS),
        # Unique times: ties in rank are then broken the same way for the index and brute force.
        created_ms=T0_MS + rng.randrange(1000) * 1000 + i,
        **extra,
        **{
            k: v
            for k, v in (
                ("golem.runtime.name", rng.choice(_RUNTIMES)),
                ("golem.node.debug.subnet", rng.choice(_SUBNETS)),
            )
            if v is not None
        },
    )


@pytest.mark.parametrize("seed", range(8))
def test_match_equals_brute_force_two_way_over_all_offers(seed: int) -> None:
    rng = random.Random(seed)
    offers = [_random_offer(rng, i) for i in range(150)]
    index = index_of(*offers)
    # Churn, so the soundness also covers an index that offers left.
    for o in rng.sample(offers, 30):
        index.remove(o.doc.offer_id)
    live = list(index.offers.values())
    for constraints in _DEMAND_CONSTRAINTS:
        for rank in _RANKS:
            d = demand(
                constraints, rank=rank,
                golem__srv__comp__expiration=T0_MS + 600_000,
                golem__node__debug__subnet=rng.choice(["public", "devnet"]),
            )
            exclude = rng.choice([None, ALICE.node_id])
            expected = [o for o in live if two_way(d, o) and o.doc.provider_id != exclude]
            got = index.match(d, exclude_provider=exclude)
            assert sorted(ids(got)) == sorted(ids(expected)), (constraints, rank)
            assert ids(got) == ids(rank_offers(d, expected)), (constraints, rank)
