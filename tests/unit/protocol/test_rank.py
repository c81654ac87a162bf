"""Rank expressions: parsing, evaluation over the other side's properties, and bounded input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import ConstraintSyntaxError
from protocol.rank import MAX_RANK_DEPTH, MAX_RANK_TEXT_BYTES, RankExpression, parse_rank

__all__: list[str] = []

FUZZ = settings(database=None, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OFFER: dict[str, Any] = {
    "golem.com.pricing.model.linear.coeffs": [0.0001, 0.00002, 0.5],
    "golem.inf.cpu.threads": 8,
    "golem.inf.mem.gib": 16.0,
    "golem.srv.caps.multi-activity": True,
    "golem.com.scheme.payu.debit-note.interval-sec?": 120,
    "golem.runtime.name": "vm",
    "nested": [[1, 2], [3, 4]],
    "min": 7,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-golem.com.pricing.model.linear.coeffs[0] * 3600 + golem.inf.cpu.threads", -0.36 + 8),
        ("golem.inf.mem.gib / 2", 8.0),
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left to right
        ("24 / 4 / 3", 2.0),
        ("2 * -3", -6.0),
        ("--2", 2.0),
        ("+2", 2.0),
        ("-(1 + 2)", -3.0),
        ("1.5e2 + .5", 150.5),
        ("'golem.srv.caps.multi-activity' * 10", 10.0),  # booleans count as 1 and 0
        ("golem.com.pricing.model.linear.coeffs[-1]", 0.5),
        ("golem.com.pricing.model.linear.coeffs[2]", 0.5),
        ("nested[1][0]", 3.0),
        ("nested[-1][-1]", 4.0),
        ("min(3, 1, 2)", 1.0),
        ("max(3, golem.inf.cpu.threads, 2)", 8.0),
        ("abs(-golem.inf.mem.gib)", 16.0),
        ("min(5)", 5.0),
        ("min + 1", 8.0),  # a property that happens to be named like a function
        ("'golem.com.scheme.payu.debit-note.interval-sec?' / 60", 2.0),
        ('"golem.inf.cpu.threads"', 8.0),
        ("golem.com.scheme.payu.debit-note.interval-sec? - 1", None),  # bare: "debit" minus "note..."
        ("  golem.inf.cpu.threads\n  * 2\n", 16.0),
    ],
)
def test_evaluate(text: str, expected: float | None) -> None:
    result = parse_rank(text).evaluate(OFFER)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "golem.inf.gpu.count",  # absent
        "golem.runtime.name",  # a string
        "golem.com.pricing.model.linear.coeffs",  # a list without an index
        "golem.com.pricing.model.linear.coeffs[3]",  # out of range
        "golem.com.pricing.model.linear.coeffs[-4]",
        "golem.inf.cpu.threads[0]",  # not a list
        "nested[0]",  # a list, not a number
        "1 / 0",
        "golem.inf.cpu.threads / (golem.inf.mem.gib - 16)",
        "min(1, golem.inf.gpu.count)",
        "abs(golem.runtime.name)",
        "1e308 * 10",  # not finite
        "1e400",
        "1e308 / 1e-10",
        "-x + 1",
    ],
)
def test_evaluate_gives_none_when_it_cannot_say(text: str) -> None:
    assert parse_rank(text).evaluate(OFFER) is None


def test_properties_are_listed() -> None:
    rank = parse_rank("-a.b[0] * 2 + max(c, 'd-e') + min(1, 2)")
    assert rank.properties == {"a.b", "c", "d-e"}
    assert rank == parse_rank("-a.b[0] * 2 + max(c, 'd-e') + min(1, 2)")
    assert isinstance(rank, RankExpression) and rank.text.startswith("-a.b")


def test_larger_rank_is_preferred_so_sorting_orders_offers() -> None:
    rank = parse_rank("-golem.com.pricing.model.linear.coeffs[0] * 3600")
    offers = [{"golem.com.pricing.model.linear.coeffs": [c, 0, 0]} for c in (0.3, 0.1, 0.2)]
    offers.append({})
    ranked = sorted(offers, key=lambda o: (r := rank.evaluate(o)) is not None and r or float("-inf"), reverse=True)
    assert [o.get("golem.com.pricing.model.linear.coeffs", [None])[0] for o in ranked] == [0.1, 0.2, 0.3, None]


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("", 1, "a number"),
        ("1 +", 4, "a number"),
        ("(1", 3, '")"'),
        ("1 2", 3, "an operator"),
        ("min()", 5, "a number"),
        ("min(1,)", 7, "a number"),
        ("abs(1, 2)", 9, "abs() with exactly one argument"),
        ("a[1.5]", 3, "a whole number index"),
        ("a[x]", 3, "a whole number index"),
        ("a[1", 4, '"]"'),
        ("'abc", 5, "a closing '"),
        ("''", 1, "a property name"),
        ("a $ b", 3, "a number, a property name"),
        ("a ^ 2", 3, "a number, a property name"),
        ("1 +\n  * 2", 7, "a number"),
    ],
)
def test_syntax_errors_say_where_and_what(text: str, position: int, expected: str) -> None:
    with pytest.raises(ConstraintSyntaxError) as info:
        parse_rank(text)
    assert info.value.position == position, str(info.value)
    assert expected in info.value.expected


def test_depth_and_length_are_bounded() -> None:
    assert parse_rank("(" * MAX_RANK_DEPTH + "1" + ")" * MAX_RANK_DEPTH).evaluate({}) == 1.0
    assert parse_rank("-" * MAX_RANK_DEPTH + "1").evaluate({}) == 1.0
    too_deep = MAX_RANK_DEPTH + 1
    for text in ("(" * too_deep + "1" + ")" * too_deep, "-" * too_deep + "1", "(" * 20_000):
        with pytest.raises(ConstraintSyntaxError, match="nested"):
            parse_rank(text)
    with pytest.raises(ConstraintSyntaxError, match="bytes"):
        parse_rank("1" * (MAX_RANK_TEXT_BYTES + 1))
    # A long flat chain is fine: it never recurses, in parsing or evaluation.
    chain = "+".join(["1"] * 20_000)
    assert parse_rank(chain).evaluate({}) == 20_000.0


@FUZZ
@given(
    st.text(alphabet=st.sampled_from("()+-*/,[]'\"0123456789.eE abc_?minaxbs\n"), max_size=30)
    | st.text(max_size=30)
)
def test_parse_raises_nothing_but_syntax_errors(text: str) -> None:
    try:
        rank = parse_rank(text)
    except ConstraintSyntaxError as err:
        assert 1 <= err.position <= len(text) + 1
        return
    result = rank.evaluate({"a": 1, "b": [1, 2], "c": "x"})
    assert result is None or isinstance(result, float)
