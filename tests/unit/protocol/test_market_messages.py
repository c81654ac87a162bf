"""Market messages: content ids that cover everything, agreement digests over every term, signed acts."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import msgpack
import pytest

from protocol.codec import Message, decode, encode, message_type, to_wire
from protocol.errors import DecodeError, SignatureError
from protocol.market import (
    AgreementApproved,
    AgreementCancelled,
    AgreementProposed,
    AgreementRejected,
    AgreementTerminated,
    AgreementTerms,
    MarketDemand,
    MarketOffer,
    ProposalSent,
    canonical_properties,
    initial_proposal_id,
    sign_act,
    verify_act,
)
from tests.unit.protocol.samples import (
    CAROL,
    MALLORY,
    PROVIDER,
    REQUESTOR,
    agreement_terms,
    market_demand,
    market_offer,
    provider_proposal,
    reason_text,
    requestor_proposal,
    sample,
)

Doc = MarketOffer | MarketDemand | ProposalSent


def _id_of(doc: Doc) -> str:
    if isinstance(doc, MarketOffer):
        return doc.offer_id
    if isinstance(doc, MarketDemand):
        return doc.demand_id
    return doc.proposal_id


def _recomputed_id(doc: Doc) -> str:
    """The id the document's content implies, by the class's own content_id."""
    if isinstance(doc, MarketOffer):
        return MarketOffer.content_id(
            doc.provider_id, doc.properties, doc.constraints, doc.rank, doc.created_ms, doc.expires_ms
        )
    if isinstance(doc, MarketDemand):
        return MarketDemand.content_id(
            doc.requestor_id, doc.properties, doc.constraints, doc.rank, doc.created_ms, doc.expires_ms
        )
    return ProposalSent.content_id(
        doc.prev_proposal_id, doc.demand_id, doc.offer_id, doc.issuer_id,
        doc.properties, doc.constraints, doc.created_ms, doc.expires_ms,
    )


def _with_value(props: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**props, key: value}


def _without(props: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k != key}


# (builder, field, function of the original document giving the new value)
_DOC_CHANGES: list[tuple[Callable[[], Doc], str, Callable[[Any], Any]]] = []
for _build, _node_field in ((market_offer, "provider_id"), (market_demand, "requestor_id")):
    _DOC_CHANGES += [
        (_build, _node_field, lambda d: MALLORY.node_id),
        (_build, "properties", lambda d: _with_value(d.properties, "golem.node.debug.subnet", "devnet")),
        (_build, "properties", lambda d: _with_value(d.properties, "golem.extra", 1)),
        (_build, "properties", lambda d: _without(d.properties, "golem.node.debug.subnet")),
        (_build, "properties", lambda d: {}),
        (_build, "constraints", lambda d: d.constraints + " "),
        (_build, "constraints", lambda d: "()"),
        (_build, "rank", lambda d: "golem.inf.cpu.threads"),
        (_build, "rank", lambda d: d.rank + "1" if d.rank else "1"),
        (_build, "created_ms", lambda d: d.created_ms + 1),
        (_build, "expires_ms", lambda d: d.expires_ms - 1),
    ]
_DOC_CHANGES += [
    (requestor_proposal, "prev_proposal_id", lambda d: "00" * 32),
    (requestor_proposal, "demand_id", lambda d: "11" * 32),
    (requestor_proposal, "offer_id", lambda d: "22" * 32),
    (requestor_proposal, "issuer_id", lambda d: MALLORY.node_id),
    (requestor_proposal, "properties", lambda d: _with_value(d.properties, "golem.srv.comp.expiration", 1)),
    (requestor_proposal, "properties", lambda d: _without(d.properties, "golem.srv.comp.expiration")),
    (requestor_proposal, "constraints", lambda d: "()"),
    (requestor_proposal, "created_ms", lambda d: d.created_ms + 1),
    (requestor_proposal, "expires_ms", lambda d: d.expires_ms + 1),
    (provider_proposal, "properties", lambda d: _with_value(d.properties, "golem.inf.mem.gib", 2.5)),
    (provider_proposal, "prev_proposal_id", lambda d: "33" * 32),
]


def _doc_change_params() -> list[Any]:
    seen: dict[str, int] = {}
    params = []
    for build, name, change in _DOC_CHANGES:
        key = f"{build.__name__}-{name}"
        seen[key] = seen.get(key, 0) + 1
        params.append(pytest.param(build, name, change, id=f"{key}-{seen[key]}"))
    return params


# ---- content ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [market_offer, market_demand, requestor_proposal, provider_proposal])
def test_content_id_of_a_sample_checks_and_survives_the_wire(build: Callable[[], Doc]) -> None:
    doc = build()
    doc.check_id()
    assert _recomputed_id(doc) == _id_of(doc)
    back = decode(encode(doc), expect=type(doc))
    back.check_id()
    assert _id_of(back) == _id_of(doc)


@pytest.mark.parametrize(("build", "name", "change"), _doc_change_params())
def test_any_content_change_breaks_the_id(build: Callable[[], Doc], name: str, change: Callable[[Any], Any]) -> None:
    doc = build()
    value = change(doc)
    assert getattr(doc, name) != value
    changed = dataclasses.replace(doc, **{name: value})
    assert _recomputed_id(changed) != _id_of(doc)
    with pytest.raises(DecodeError, match=_id_of(doc)):
        changed.check_id()
    # With the id recomputed, the changed document is consistent again.
    id_field = {MarketOffer: "offer_id", MarketDemand: "demand_id", ProposalSent: "proposal_id"}[type(doc)]
    dataclasses.replace(changed, **{id_field: _recomputed_id(changed)}).check_id()


@pytest.mark.parametrize("build", [market_offer, market_demand, requestor_proposal])
def test_a_forged_id_does_not_check(build: Callable[[], Doc]) -> None:
    doc = build()
    id_field = {MarketOffer: "offer_id", MarketDemand: "demand_id", ProposalSent: "proposal_id"}[type(doc)]
    with pytest.raises(DecodeError):
        dataclasses.replace(doc, **{id_field: "ab" * 32}).check_id()


def test_proposal_id_does_not_cover_the_attached_demand() -> None:
    """The attached demand is checked by its own id; the proposal's id covers demand_id only."""
    proposal = requestor_proposal()
    assert proposal.demand is not None
    dataclasses.replace(proposal, demand=None).check_id()
    proposal.demand.check_id()
    assert proposal.demand.demand_id == proposal.demand_id


def test_offer_and_demand_ids_differ_for_the_same_content() -> None:
    args = (PROVIDER.node_id, {"a": 1}, "()", "", 1, 2)
    assert MarketOffer.content_id(*args) != MarketDemand.content_id(*args)


def test_properties_that_differ_only_in_number_type_have_different_ids() -> None:
    offer = market_offer(properties={"golem.inf.mem.gib": 2})
    assert offer.offer_id != market_offer(properties={"golem.inf.mem.gib": 2.0}).offer_id


def test_canonical_properties_is_independent_of_insertion_order() -> None:
    props = market_offer().properties
    backwards = dict(reversed(list(props.items())))
    assert list(backwards) != list(props)
    assert canonical_properties(backwards) == canonical_properties(props)
    assert market_offer(properties=backwards).offer_id == market_offer(properties=props).offer_id
    assert agreement_terms(offer_properties=backwards).digest() == agreement_terms(offer_properties=props).digest()


def test_canonical_properties_differs_for_different_content() -> None:
    props = {"a": 1, "b": [1, 2]}
    assert canonical_properties(props) != canonical_properties({"a": 1, "b": [2, 1]})
    assert canonical_properties(props) != canonical_properties({"a": 1})
    assert canonical_properties(props) != canonical_properties({"a": "1", "b": [1, 2]})


def test_initial_proposal_id_is_deterministic_and_ordered() -> None:
    d, o = market_demand().demand_id, market_offer().offer_id
    assert initial_proposal_id(d, o) == initial_proposal_id(d, o)
    assert initial_proposal_id(d, o) != initial_proposal_id(o, d)
    assert initial_proposal_id(d, o) != initial_proposal_id(d, "00" * 32)
    assert len(initial_proposal_id(d, o)) == 64


# ---- agreement terms --------------------------------------------------------------------------


def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, dict):
        return {**value, "golem.extra": "x"}
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"no other value for {value!r}")


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(AgreementTerms)])
def test_agreement_digest_changes_with_every_term(name: str) -> None:
    terms = agreement_terms()
    changed = dataclasses.replace(terms, **{name: _other_value(getattr(terms, name))})
    assert changed.digest() != terms.digest()


def test_agreement_digest_changes_with_a_property_value() -> None:
    terms = agreement_terms()
    props = {**terms.offer_properties, "golem.com.pricing.model.linear.coeffs": [1.0, 0.0, 0.0]}
    assert agreement_terms(offer_properties=props).digest() != terms.digest()
    demand_props = {k: v for k, v in terms.demand_properties.items() if k != "golem.srv.comp.expiration"}
    assert agreement_terms(demand_properties=demand_props).digest() != terms.digest()


def test_agreement_digest_tells_the_sides_apart() -> None:
    """The same properties on the demand side and on the offer side are different terms."""
    terms = agreement_terms()
    swapped = dataclasses.replace(
        terms,
        demand_properties=terms.offer_properties, offer_properties=terms.demand_properties,
        demand_constraints=terms.offer_constraints, offer_constraints=terms.demand_constraints,
    )
    assert swapped.digest() != terms.digest()


def test_agreement_digest_survives_the_wire() -> None:
    terms = agreement_terms()
    assert decode(encode(terms), expect=AgreementTerms).digest() == terms.digest()
    assert len(terms.digest()) == 32


@pytest.mark.parametrize("position", range(4))
def test_agreement_id_depends_on_each_input(position: int) -> None:
    args: list[Any] = ["aa" * 32, "bb" * 32, REQUESTOR.node_id, 1_700_000_005_000]
    base = AgreementTerms.make_id(*args)
    args[position] = args[position] + 1 if isinstance(args[position], int) else MALLORY.node_id
    assert AgreementTerms.make_id(*args) != base


def test_agreement_id_of_the_sample_is_derived_from_its_proposals() -> None:
    terms = agreement_terms()
    assert terms.agreement_id == AgreementTerms.make_id(
        terms.offer_proposal_id, terms.demand_proposal_id, terms.requestor_id, terms.created_ms
    )


# ---- signed acts ------------------------------------------------------------------------------


_ACTS: list[tuple[str, tuple[Any, ...]]] = [
    ("propose", ()),
    ("approve", (1_700_000_006_000,)),
    ("reject", (reason_text({"message": "busy"}), 1_700_000_006_000)),
    ("cancel", (reason_text({}), 1_700_000_006_000)),
    ("terminate", (reason_text({"message": "done"}), 1_700_000_600_000)),
]


@pytest.mark.parametrize(("action", "values"), _ACTS, ids=[a for a, _ in _ACTS])
def test_signed_act_verifies(action: str, values: tuple[Any, ...]) -> None:
    terms = agreement_terms()
    signature = sign_act(REQUESTOR, action, terms, *values)
    verify_act(REQUESTOR.node_id, signature, action, terms, *values)
    assert signature == sign_act(REQUESTOR, action, terms, *values)  # deterministic (RFC 6979)


@pytest.mark.parametrize(("action", "values"), _ACTS, ids=[a for a, _ in _ACTS])
def test_act_does_not_verify_for_another_signer(action: str, values: tuple[Any, ...]) -> None:
    terms = agreement_terms()
    signature = sign_act(MALLORY, action, terms, *values)
    with pytest.raises(SignatureError, match=REQUESTOR.node_id):
        verify_act(REQUESTOR.node_id, signature, action, terms, *values)


@pytest.mark.parametrize(("action", "values"), _ACTS, ids=[a for a, _ in _ACTS])
def test_act_does_not_verify_as_another_action(action: str, values: tuple[Any, ...]) -> None:
    terms = agreement_terms()
    signature = sign_act(PROVIDER, action, terms, *values)
    for other, _ in _ACTS:
        if other != action:
            with pytest.raises(SignatureError, match=other):
                verify_act(PROVIDER.node_id, signature, other, terms, *values)


@pytest.mark.parametrize(("action", "values"), [a for a in _ACTS if a[1]], ids=[a for a, v in _ACTS if v])
def test_act_does_not_verify_with_another_value(action: str, values: tuple[Any, ...]) -> None:
    terms = agreement_terms()
    signature = sign_act(PROVIDER, action, terms, *values)
    variants = [
        values[:-1] + (values[-1] + 1,),  # another time
        values[:-1],  # a value left out
        values + (0,),  # a value added
    ]
    if len(values) > 1:
        variants.append((reason_text({"message": "something else"}),) + values[1:])
    for other in variants:
        with pytest.raises(SignatureError):
            verify_act(PROVIDER.node_id, signature, action, terms, *other)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(AgreementTerms)])
def test_act_does_not_verify_on_changed_terms(name: str) -> None:
    terms = agreement_terms()
    signature = sign_act(REQUESTOR, "propose", terms)
    changed = dataclasses.replace(terms, **{name: _other_value(getattr(terms, name))})
    with pytest.raises(SignatureError):
        verify_act(REQUESTOR.node_id, signature, "propose", changed)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 65, b"\x01" * 64, b"\xff" * 66], ids=["empty", "zeros", "short", "long"])
def test_malformed_act_signature_raises_signature_error(signature: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_act(REQUESTOR.node_id, signature, "propose", agreement_terms())


def test_act_signatures_of_the_samples_verify_after_the_wire() -> None:
    proposed = decode(encode(sample(AgreementProposed.TYPE)), expect=AgreementProposed)
    terms = proposed.terms
    verify_act(REQUESTOR.node_id, proposed.requestor_signature, "propose", terms)

    approved = decode(encode(sample(AgreementApproved.TYPE)), expect=AgreementApproved)
    verify_act(PROVIDER.node_id, approved.provider_signature, "approve", terms, approved.approved_ms)

    rejected = decode(encode(sample(AgreementRejected.TYPE)), expect=AgreementRejected)
    verify_act(PROVIDER.node_id, rejected.signature, "reject", terms, reason_text(rejected.reason), rejected.ts_ms)

    cancelled = decode(encode(sample(AgreementCancelled.TYPE)), expect=AgreementCancelled)
    verify_act(REQUESTOR.node_id, cancelled.signature, "cancel", terms, reason_text(cancelled.reason), cancelled.ts_ms)

    terminated = decode(encode(sample(AgreementTerminated.TYPE)), expect=AgreementTerminated)
    assert terminated.terminator == REQUESTOR.node_id
    verify_act(
        terminated.terminator, terminated.signature, "terminate", terms,
        reason_text(terminated.reason), terminated.ts_ms,
    )
    with pytest.raises(SignatureError):
        verify_act(CAROL.node_id, terminated.signature, "terminate", terms, reason_text(terminated.reason), terminated.ts_ms)


def test_an_act_on_one_agreement_does_not_verify_on_another() -> None:
    terms = agreement_terms()
    other = agreement_terms(created_ms=terms.created_ms + 1)  # same id kept, another term
    signature = sign_act(PROVIDER, "approve", terms, 5)
    with pytest.raises(SignatureError, match=other.agreement_id):
        verify_act(PROVIDER.node_id, signature, "approve", other, 5)


# ---- malformed bodies of market and control messages -----------------------------------------


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _set(*path: Any, value: Any) -> Callable[[Any], None]:
    def mutate(body: Any) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(*path: Any) -> Callable[[Any], None]:
    def mutate(body: Any) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


_MUTATIONS: list[tuple[str, str, Callable[[Any], None]]] = [
    # documents
    ("market.offer", "properties_list", _set("properties", value=[["a", 1]])),
    ("market.offer", "properties_str", _set("properties", value="a=1")),
    ("market.offer", "property_bytes_key", _set("properties", b"golem.x", value=1)),
    ("market.offer", "property_ext_value", _set("properties", "golem.x", value=msgpack.ExtType(1, b"x"))),
    ("market.offer", "constraints_int", _set("constraints", value=1)),
    ("market.offer", "rank_nil", _set("rank", value=None)),
    ("market.offer", "created_float", _set("created_ms", value=1.0)),
    ("market.offer", "expires_str", _set("expires_ms", value="1")),
    ("market.demand", "requestor_bytes", _set("requestor_id", value=b"0x00")),
    ("market.demand", "properties_nil", _set("properties", value=None)),
    # proposals and the demand they carry
    ("market.proposal", "demand_str", _set("demand", value="demand")),
    ("market.proposal", "demand_list", _set("demand", value=[])),
    ("market.proposal", "demand_missing_field", _delete("demand", "rank")),
    ("market.proposal", "demand_extra_field", _set("demand", "extra", value=1)),
    ("market.proposal", "demand_wrong_nested_type", _set("demand", "created_ms", value="0")),
    ("market.proposal", "demand_an_offer", _set("demand", value=to_wire(market_offer()))),
    ("market.proposal", "prev_nil", _set("prev_proposal_id", value=None)),
    ("market.proposal_rejected", "reason_list", _set("reason", value=["busy"])),
    ("market.proposal_rejected", "reason_str", _set("reason", value="busy")),
    # agreements
    ("market.agreement_terms", "valid_to_str", _set("valid_to_ms", value="1")),
    ("market.agreement_terms", "offer_properties_list", _set("offer_properties", value=[])),
    ("market.agreement_terms", "app_session_nil", _set("app_session_id", value=None)),
    ("market.agreement_proposed", "terms_str", _set("terms", value="terms")),
    ("market.agreement_proposed", "terms_missing_field", _delete("terms", "valid_to_ms")),
    ("market.agreement_proposed", "terms_extra_field", _set("terms", "extra", value=0)),
    ("market.agreement_proposed", "terms_bad_property_key", _set("terms", "demand_properties", b"k", value=1)),
    ("market.agreement_proposed", "signature_str", _set("requestor_signature", value="sig")),
    ("market.agreement_approved", "approved_bool", _set("approved_ms", value=True)),
    ("market.agreement_approved", "signature_nil", _set("provider_signature", value=None)),
    ("market.agreement_rejected", "reason_nil", _set("reason", value=None)),
    ("market.agreement_cancelled", "ts_float", _set("ts_ms", value=1.5)),
    ("market.agreement_terminated", "terminator_int", _set("terminator", value=1)),
    ("market.agreement_terminated", "reason_deep", _set("reason", "x", value=_nested_list(40))),
    ("market.agreement_ack", "acked_int", _set("acked", value=1)),
    # control calls
    ("control.call", "args_list", _set("args", value=[1, 2])),
    ("control.call", "args_int_key", _set("args", value={1: 2})),
    ("control.call", "target_nil", _set("target", value=None)),
    ("control.result", "value_ext", _set("value", value=msgpack.ExtType(2, b"x"))),
    ("control.result", "value_nested_ext", _set("value", "properties", value=[msgpack.ExtType(2, b"x")])),
]


@pytest.mark.parametrize(
    ("tag", "mutate"), [pytest.param(t, m, id=f"{t}-{n}") for t, n, m in _MUTATIONS]
)
def test_wrongly_shaped_market_body_is_refused_with_decode_error(tag: str, mutate: Callable[[Any], None]) -> None:
    body = copy.deepcopy(to_wire(sample(tag)))
    cls = message_type(tag)
    _decode(cls, body)  # the unmutated body is fine
    mutate(body)
    with pytest.raises(DecodeError):
        _decode(cls, body)


def _decode(cls: type[Message], body: Any) -> Message:
    return decode(msgpack.packb({"t": cls.TYPE, "v": cls.VERSION, "b": body}, use_bin_type=True))


def test_proposal_without_a_demand_decodes_to_none() -> None:
    body = to_wire(provider_proposal())
    assert body["demand"] is None
    msg = decode(msgpack.packb({"t": ProposalSent.TYPE, "v": 1, "b": body}, use_bin_type=True), expect=ProposalSent)
    assert msg.demand is None
    del body["demand"]
    assert decode(msgpack.packb({"t": ProposalSent.TYPE, "v": 1, "b": body}, use_bin_type=True)) == msg
