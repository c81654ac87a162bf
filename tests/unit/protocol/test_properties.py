"""Property maps: flattening nested JSON, the inverse, and validation of maps from the network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import PropertyError, ProtocolError
from protocol.properties import (
    MAX_ENCODED_BYTES,
    MAX_KEY_CHARS,
    MAX_NESTING,
    MAX_PROPERTIES,
    flatten,
    unflatten,
    validate_properties,
)

__all__: list[str] = []

FUZZ = settings(database=None, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PRICING = {"golem": {"com": {"pricing": {"model": {"@tag": "linear", "linear": {"coeffs": [0.1, 0.2, 0.0]}}}}}}
PRICING_FLAT = {"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [0.1, 0.2, 0.0]}


def test_flatten_joins_keys_and_tag_gives_the_parent_a_value() -> None:
    assert flatten(PRICING) == PRICING_FLAT


def test_flat_keys_pass_through() -> None:
    assert flatten(PRICING_FLAT) == PRICING_FLAT


def test_flat_and_nested_keys_mix() -> None:
    # The shape of ya-agreement-utils' own test document.
    nested = {
        "golem": {
            "srv.caps.multi-activity": True,
            "inf": {"mem.gib": 0.5, "storage.gib": 5},
            "node": {"id.name": "dany"},
            "activity.caps": {"transfer.protocol": ["http", "https", "container"]},
            "com": {
                "scheme": "payu",
                "scheme.payu": {"debit-note.interval-sec?": 60},
                "pricing": {"model": "linear", "model.linear": {"coeffs": [0, 0.01, 0.0016]}},
            },
        },
        "golem.node.debug.subnet": "public",
    }
    assert flatten(nested) == {
        "golem.srv.caps.multi-activity": True,
        "golem.inf.mem.gib": 0.5,
        "golem.inf.storage.gib": 5,
        "golem.node.id.name": "dany",
        "golem.activity.caps.transfer.protocol": ["http", "https", "container"],
        "golem.com.scheme": "payu",
        "golem.com.scheme.payu.debit-note.interval-sec?": 60,
        "golem.com.pricing.model": "linear",
        "golem.com.pricing.model.linear.coeffs": [0, 0.01, 0.0016],
        "golem.node.debug.subnet": "public",
    }


def test_values_lists_and_nulls() -> None:
    assert flatten({"a": [[1, "x"], [True, None]], "b": None, "c": (1, 2)}) == {
        "a": [[1, "x"], [True, None]],
        "b": None,
        "c": [1, 2],
    }
    source = {"a": [1, 2]}
    flat = flatten(source)
    flat["a"].append(3)
    assert source == {"a": [1, 2]}  # lists are copied


def test_empty_objects_vanish() -> None:
    assert flatten({"a": {}, "b": {"c": {}}, "d": 1}) == {"d": 1}


def test_same_key_twice_with_the_same_value_is_fine() -> None:
    assert flatten({"a.b": 1, "a": {"b": 1}}) == {"a.b": 1}


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({"a.b": 1, "a": {"b": 2}}, "'a.b'"),
        ({"a.b": 1, "a": {"b": True}}, "'a.b'"),  # 1 and true are different JSON
        ({"a.b": 1, "a": {"b": 1.0}}, "'a.b'"),
        ({"a.m": "other", "a": {"m": {"@tag": "linear"}}}, "'a.m'"),
        ({"a.@tag": "y"}, "'a.@tag'"),
        ({"": 1}, "empty"),
        ({"a": {"": 1}}, "empty"),
        ({"a..b": 1}, "'a..b'"),
        ({".a": 1}, "'.a'"),
        ({"a.": 1}, "'a.'"),
        ({1: "x"}, "1"),
        ({"a": {2: "x"}}, "2"),
        ({"a": {1, 2}}, "'a'"),
        ({"a": b"x"}, "'a'"),
        ({"a": float("nan")}, "'a'"),
        ({"a": float("inf")}, "'a'"),
        ({"a": [1, {"b": 2}]}, "'a'"),
        ({"a": object()}, "'a'"),
        ({"@tag": "x"}, "@tag"),
        ({"a": {"@tag": {"b": 1}}}, "'a'"),
    ],
)
def test_flatten_refuses_what_is_not_a_property_map(props: dict[Any, Any], named: str) -> None:
    with pytest.raises(PropertyError) as info:
        flatten(props)
    assert isinstance(info.value, ProtocolError)
    assert named in str(info.value)


def test_flatten_wants_a_mapping() -> None:
    for bad in ([], "x", None, 1):
        with pytest.raises(PropertyError, match="JSON object"):
            flatten(bad)  # type: ignore[arg-type]


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {"x": 1}
    for _ in range(MAX_NESTING + 1):
        deep = {"k": deep}
    with pytest.raises(PropertyError, match="nested"):
        flatten(deep)
    deep_list: list[Any] = [1]
    for _ in range(MAX_NESTING + 1):
        deep_list = [deep_list]
    with pytest.raises(PropertyError, match="nested"):
        flatten({"a": deep_list})
    far: list[Any] = []
    for _ in range(5000):  # far past the recursion limit: refused all the same
        far = [far]
    with pytest.raises(PropertyError):
        flatten({"a": far})


def test_unflatten_uses_tag_when_a_key_is_both_value_and_prefix() -> None:
    assert unflatten(PRICING_FLAT) == PRICING
    # Either order of keys gives the same tree.
    assert unflatten(dict(reversed(list(PRICING_FLAT.items())))) == PRICING
    assert unflatten({"a": 1, "a.b.c": 2, "a.b": None}) == {"a": {"@tag": 1, "b": {"@tag": None, "c": 2}}}
    assert unflatten({}) == {}


def test_unflatten_refuses_bad_keys_and_values() -> None:
    for bad in ({"": 1}, {"a..b": 1}, {"a": {"b": 1}}, {"a": float("nan")}, {3: 1}):
        with pytest.raises(PropertyError):
            unflatten(bad)  # type: ignore[arg-type]


SEGMENTS = st.sampled_from(["a", "b", "golem", "inf", "x-y", "n?"])
KEYS = st.lists(SEGMENTS, min_size=1, max_size=4).map(".".join)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5)
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@FUZZ
@given(st.dictionaries(KEYS, JSON_VALUES, max_size=8))
def test_flatten_undoes_unflatten(flat: dict[str, Any]) -> None:
    nested = unflatten(flat)
    assert flatten(nested) == flat
    # And the tree is plain JSON.
    assert json.loads(json.dumps(nested)) == nested


def test_validate_properties_flattens_and_checks_caps() -> None:
    assert validate_properties(PRICING) == PRICING_FLAT
    assert validate_properties({f"k{i}": i for i in range(MAX_PROPERTIES)})
    with pytest.raises(PropertyError, match=str(MAX_PROPERTIES)):
        validate_properties({f"k{i}": i for i in range(MAX_PROPERTIES + 1)})
    assert validate_properties({"k" * MAX_KEY_CHARS: 1})
    with pytest.raises(PropertyError, match=str(MAX_KEY_CHARS)):
        validate_properties({"k" * (MAX_KEY_CHARS + 1): 1})
    with pytest.raises(PropertyError, match="bytes"):
        validate_properties({"a": "x" * MAX_ENCODED_BYTES})
    with pytest.raises(PropertyError, match="bytes"):
        validate_properties({"a": "ж" * (MAX_ENCODED_BYTES // 2)})  # counted in UTF-8 bytes
    with pytest.raises(PropertyError, match="'a'"):
        validate_properties({"a": {1, 2}})
