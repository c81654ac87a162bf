"""The constraint language: parsing, three-valued evaluation, explanations, equality analysis and matching."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol.constraints import (
    MAX_DEPTH,
    MAX_TEXT_BYTES,
    And,
    Compare,
    Constraint,
    Empty,
    Failure,
    MatchResult,
    Not,
    Or,
    Present,
    Tri,
    escape_value,
    explain,
    is_valid_attribute,
    match,
    parse,
    referenced_properties,
    required_equalities,
)
from protocol.errors import ConstraintSyntaxError, ProtocolError

__all__: list[str] = []

T, F, U = Tri.TRUE, Tri.FALSE, Tri.UNDEFINED
FUZZ = settings(database=None, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A requestor demand as yapapi builds it, and a provider's offer constraints.
YAPAPI_DEMAND = (
    "(&(golem.inf.mem.gib>=0.5)(golem.inf.storage.gib>=2.0)(golem.runtime.name=vm)"
    "(golem.com.payment.platform.erc20-holesky-tglm.address=*)(golem.com.pricing.model=linear)"
    "(golem.node.debug.subnet=public))"
)
PROVIDER_CONSTRAINTS = "(&(golem.srv.comp.expiration>1700000000000)(golem.node.debug.subnet=public))"
# The same shape as real demands: multi-line, indented, with nested groups.
MULTILINE_DEMAND = """
(&
    (golem.srv.comp.expiration>1700000000000)
    (golem.node.debug.subnet=public)
    (|
        (golem.runtime.name=vm)
        (golem.runtime.name=wasmtime)
    )
    (!
        (golem.node.id.name=bad*)
    )
)
"""
OFFER_PROPS: dict[str, Any] = {
    "golem.inf.mem.gib": 8.0,
    "golem.inf.storage.gib": 40.5,
    "golem.inf.cpu.threads": 4,
    "golem.inf.cpu.capabilities": ["sse4_2", "avx2"],
    "golem.runtime.name": "vm",
    "golem.runtime.version": "0.3.0",
    "golem.com.payment.platform.erc20-holesky-tglm.address": "0x" + "ab" * 20,
    "golem.com.pricing.model": "linear",
    "golem.com.pricing.model.linear.coeffs": [0.0001, 0.00002, 0.0],
    "golem.com.scheme.payu.debit-note.interval-sec?": 120,
    "golem.node.debug.subnet": "public",
    "golem.node.id.name": "provider-1",
    "golem.srv.caps.multi-activity": True,
}
DEMAND_PROPS: dict[str, Any] = {
    "golem.srv.comp.expiration": 1800000000000,
    "golem.node.debug.subnet": "public",
    "golem.srv.comp.task_package": "hash:sha3:abc:http://example.com/image",
}


# -- parsing ------------------------------------------------------------------------------

NEGOTIABLE = "golem.com.scheme.payu.debit-note.interval-sec?"
ADDRESS = "golem.com.payment.platform.erc20-holesky-tglm.address"

PARSES = [
    ("()", Empty()),
    ("  ( )  ", Empty()),
    ("(a=b)", Compare("a", "=", "b")),
    ("(a<1)", Compare("a", "<", "1")),
    ("(a<=1)", Compare("a", "<=", "1")),
    ("(a>1)", Compare("a", ">", "1")),
    ("(a>=1)", Compare("a", ">=", "1")),
    ("(a<>1)", Compare("a", "<>", "1")),
    ("(a=*)", Present("a")),
    ("(a=*   )", Present("a")),
    ("(a$v>=1.2)", Compare("a", ">=", "1.2", "v")),
    ("(a$d=0.1)", Compare("a", "=", "0.1", "d")),
    ("(a$t<2024-01-01T00:00:00Z)", Compare("a", "<", "2024-01-01T00:00:00Z", "t")),
    ("(&)", And(())),
    ("(|)", Or(())),
    ("(&(a=b)(c=d))", And((Compare("a", "=", "b"), Compare("c", "=", "d")))),
    ("(|(a=b)(c=d))", Or((Compare("a", "=", "b"), Compare("c", "=", "d")))),
    ("(!(a=b))", Not(Compare("a", "=", "b"))),
    ("( & ( a=b ) ( c=d ) )", And((Compare("a", "=", "b "), Compare("c", "=", "d ")))),
    ("( !   (a=b))", Not(Compare("a", "=", "b"))),
    ("(\n&\n\t(a=b)\r\n)", And((Compare("a", "=", "b"),))),
    ("(cn=Babs Jensen)", Compare("cn", "=", "Babs Jensen")),
    ("(a = b)", Compare("a", "=", " b")),  # whitespace in a value is kept, as in yagna
    ("(a=)", Compare("a", "=", "")),
    ("(a==b)", Compare("a", "=", "=b")),
    ("(a=(b)", Compare("a", "=", "\\(b")),  # an unescaped "(" in a value is taken literally
    (r"(a=x\)y)", Compare("a", "=", r"x\)y")),
    (r"(a=\*)", Compare("a", "=", r"\*")),
    (r"(a=\q)", Compare("a", "=", "q")),  # any escaped character is itself
    (f"({NEGOTIABLE}>=5)", Compare(NEGOTIABLE, ">=", "5")),
    (f"({ADDRESS}=*)", Present(ADDRESS)),
    ("(a_b-c.9@x=1)", Compare("a_b-c.9@x", "=", "1")),
]


@pytest.mark.parametrize(("text", "expected"), PARSES, ids=[p[0] for p in PARSES])
def test_parse(text: str, expected: Constraint) -> None:
    assert parse(text) == expected


def test_realistic_demands_parse_and_print_back() -> None:
    for text in (YAPAPI_DEMAND, PROVIDER_CONSTRAINTS, MULTILINE_DEMAND):
        c = parse(text)
        assert parse(c.to_text()) == c
        assert parse(c.pretty()) == c
    assert parse(YAPAPI_DEMAND).to_text() == YAPAPI_DEMAND


def test_pretty_indents_groups_and_keeps_leaves_on_one_line() -> None:
    c = parse("(&(a=1)(|(b=2)(c=3))(!(d=4))(!(&(e=5))))")
    assert c.pretty() == "\n".join(
        [
            "(&",
            "  (a=1)",
            "  (|",
            "    (b=2)",
            "    (c=3)",
            "  )",
            "  (!(d=4))",
            "  (!",
            "    (&",
            "      (e=5)",
            "    )",
            "  )",
            ")",
        ]
    )
    assert parse("(&)").pretty() == "(&)"


def test_values_are_canonical_and_unescaped() -> None:
    c = parse(r"(a=x\*y*z\(\)\\)")
    assert isinstance(c, Compare)
    assert c.is_wildcard and c.value == "x*y*z()\\"
    assert c.to_text() == r"(a=x\*y*z\(\)\\)"
    assert Compare("a", "=", "x)y").value_text == r"x\)y"
    assert Compare("a", ">=", "x*").value_text == r"x\*"  # no wildcards in ordering
    assert not Compare("a", ">=", "x*").is_wildcard
    assert escape_value("a*(b)\\") == r"a\*\(b\)\\"


def test_constructors_refuse_what_no_filter_can_say() -> None:
    for bad in [
        lambda: Compare("a b", "=", "x"),
        lambda: Compare("", "=", "x"),
        lambda: Compare("&a", "=", "x"),
        lambda: Compare("a", "~=", "x"),
        lambda: Compare("a", "=", "x", "q"),
        lambda: Compare("a", "=", "x\\"),
        lambda: Compare("a", "=", "*"),
        lambda: Present("a=b"),
    ]:
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        And(("(a=b)",))  # type: ignore[arg-type]
    assert is_valid_attribute("golem.com.scheme.payu.debit-note.interval-sec?")
    assert not is_valid_attribute("a$v")


SYNTAX_ERRORS = [
    # text, 1-based position, expected (a substring), message (a substring)
    ("", 1, '"("', 'at 1:1: expected "(" but found end of input'),
    ("   ", 4, '"("', "end of input"),
    ("a=b", 1, '"("', 'found "a"'),
    ("(a=b", 5, '")"', 'at 1:5: expected ")" but found end of input'),
    ("(&(a=b)(c=d)", 13, '")"', 'at 1:13: expected ")" but found end of input'),
    ("(&(golem.x=1)", 14, '")"', 'at 1:14: expected ")" but found end of input'),
    ("(&(a=b)x)", 8, '"(" or ")"', 'found "x"'),
    ("(a=b))", 6, "end of input", 'found ")"'),
    ("(a=b)(c=d)", 6, "end of input", 'found "("'),
    ("(", 2, "a property name", "end of input"),
    ("(=b)", 2, "a property name", 'found "="'),
    ("(a)", 3, "an operator", 'found ")"'),
    ("(a b=c)", 4, "an operator", 'found "b"'),
    ("(a~=b)", 3, "an operator", "approximate match is not supported"),
    ("(a$x=1)", 3, "type suffix", 'found "$x"'),
    ("(a$", 4, "type suffix", "end of input"),
    ("(a[x]=1)", 3, "an operator", 'found "["'),
    ("(a=b\\", 6, "a character after", "end of input"),
    ("(a=b\\)", 7, '")"', "end of input"),
    ("(!(a=b)(c=d))", 8, '")"', 'found "("'),
    ("(!)", 3, '"("', 'found ")"'),
    ("(&\n  (a=b)\n  (c=d)\n", 20, '")"', "at 4:1 (position 20)"),
    ("(&\n  (a=b)\n  c=d)\n", 14, '"(" or ")"', "at 3:3 (position 14)"),
]


@pytest.mark.parametrize(("text", "position", "expected", "message"), SYNTAX_ERRORS, ids=[s[0] for s in SYNTAX_ERRORS])
def test_syntax_errors_say_where_and_what(text: str, position: int, expected: str, message: str) -> None:
    with pytest.raises(ConstraintSyntaxError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ProtocolError)
    assert err.position == position, str(err)
    assert expected in err.expected
    assert message in str(err)


def test_multiline_error_has_line_and_column() -> None:
    with pytest.raises(ConstraintSyntaxError) as info:
        parse("(&\n  (a=b)\n  (c~d)\n)")
    assert (info.value.line, info.value.column) == (3, 5)
    assert str(info.value).startswith("at 3:5 (position 16): expected an operator")


def test_nesting_is_bounded_without_recursion_errors() -> None:
    ok = "(!" * (MAX_DEPTH - 1) + "(a=b)" + ")" * (MAX_DEPTH - 1)
    assert parse(ok).evaluate({"a": "b"}) is (T if (MAX_DEPTH - 1) % 2 == 0 else F)
    for depth in (MAX_DEPTH, 10_000):
        text = "(!" * depth + "(a=b)" + ")" * depth
        if len(text) > MAX_TEXT_BYTES:
            text = "(!" * 20_000
        with pytest.raises(ConstraintSyntaxError):
            parse(text)
    with pytest.raises(ConstraintSyntaxError, match="nested"):
        parse("(&" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError):
        c: Constraint = Present("a")
        for _ in range(MAX_DEPTH):
            c = Not(c)


def test_input_length_is_bounded() -> None:
    wide = "(&" + "(a=b)" * 14_000 + ")"
    assert len(wide) > MAX_TEXT_BYTES
    with pytest.raises(ConstraintSyntaxError, match="at most 65536 bytes"):
        parse(wide)
    # Counted in UTF-8 bytes, not characters.
    with pytest.raises(ConstraintSyntaxError):
        parse("(a=" + "ж" * (MAX_TEXT_BYTES // 2) + ")")
    wide_ok = parse("(&" + "(a=b)" * 2_000 + ")")
    assert isinstance(wide_ok, And) and len(wide_ok.children) == 2_000


def test_parse_wants_text() -> None:
    with pytest.raises(TypeError):
        parse(None)  # type: ignore[arg-type]


@FUZZ
@given(st.text(alphabet=st.sampled_from("()&|!=<>~*$\\ab. \n\tvdt1-"), max_size=40) | st.text(max_size=40))
def test_parse_raises_nothing_but_syntax_errors(text: str) -> None:
    try:
        c = parse(text)
    except ConstraintSyntaxError as err:
        assert 1 <= err.position <= len(text) + 1
        return
    assert parse(c.to_text()) == c
    c.evaluate({"a": "b", "ab": 1})


# -- evaluation ---------------------------------------------------------------------------

EVALUATIONS: list[tuple[str, dict[str, Any], Tri]] = [
    # empty filter and presence
    ("()", {}, T),
    ("(a=*)", {"a": 1}, T),
    ("(a=*)", {"a": None}, T),
    ("(a=*)", {"a": ""}, T),
    ("(a=*)", {}, F),  # presence is never undefined (as in yagna)
    ("(!(a=*))", {}, T),
    # strings
    ("(a=vm)", {"a": "vm"}, T),
    ("(a=vm)", {"a": "VM"}, F),
    ("(a=vm)", {}, U),
    ("(a=)", {"a": ""}, T),
    ("(a<b)", {"a": "a"}, T),
    ("(a<b)", {"a": "b"}, F),
    ("(a<=b)", {"a": "b"}, T),
    ("(a>b)", {"a": "ba"}, T),
    ("(a>=b)", {"a": "a"}, F),
    ("(a>9)", {"a": "10"}, F),  # a string property compares as text
    ("(a<>vm)", {"a": "wasmtime"}, T),
    ("(a<>vm)", {"a": "vm"}, F),
    ("(a<>vm)", {}, U),
    ("(cn=Babs Jensen)", {"cn": "Babs Jensen"}, T),
    # wildcards
    ("(a=prov*)", {"a": "provider-1"}, T),
    ("(a=prov*)", {"a": "prov"}, T),
    ("(a=prov*)", {"a": "my-provider"}, F),
    ("(a=*x*)", {"a": "abxcd"}, T),
    ("(a=*x*)", {"a": "abcd"}, F),
    ("(a=*end)", {"a": "the end"}, T),
    ("(a=a*b*c)", {"a": "a--b--c"}, T),
    ("(a=a*b*c)", {"a": "a--c--b"}, F),
    ("(a=*x*)", {"a": "line\nx\nline"}, T),
    ("(a=a.c*)", {"a": "abc"}, F),  # regex characters are literal
    ("(a=a+*)", {"a": "a+b"}, T),
    ("(a<>prov*)", {"a": "provider"}, F),
    ("(a<>prov*)", {"a": "other"}, T),
    # escapes
    (r"(a=x\*y)", {"a": "x*y"}, T),
    (r"(a=x\*y)", {"a": "xzy"}, F),
    (r"(a=\(x\))", {"a": "(x)"}, T),
    (r"(a=c:\\dir)", {"a": "c:\\dir"}, T),
    (r"(a=\**)", {"a": "*star"}, T),
    (r"(a=\**)", {"a": "star"}, F),
    # integers and floats
    ("(a=4)", {"a": 4}, T),
    ("(a=4)", {"a": 4.0}, T),
    ("(a=4.0)", {"a": 4}, T),
    ("(a=4)", {"a": 5}, F),
    ("(a<4)", {"a": 3}, T),
    ("(a<4)", {"a": 4}, F),
    ("(a<=4)", {"a": 4}, T),
    ("(a>4)", {"a": 4.5}, T),
    ("(a>=0.5)", {"a": 0.25}, F),
    ("(a>=0.5)", {"a": 0.5}, T),
    ("(a>=-1e3)", {"a": -999}, T),
    ("(a<.5)", {"a": 0.4}, T),
    ("(a<>4)", {"a": 5}, T),
    ("(a<>4)", {"a": 4}, F),
    ("(a>1700000000000)", {"a": 1800000000000}, T),
    ("(a=9007199254740993)", {"a": 9007199254740993}, T),  # big integers compare exactly
    ("(a=9007199254740993)", {"a": 9007199254740992}, F),
    ("(a>=four)", {"a": 4}, F),  # a filter value that is no number: FALSE, not an error
    ("(a=inf)", {"a": float("inf")}, F),
    ("(a=1_000)", {"a": 1000}, F),
    ("(a>= 4 )", {"a": 5}, T),  # spaces around a number are fine
    # booleans
    ("(a=true)", {"a": True}, T),
    ("(a=TRUE)", {"a": True}, T),
    ("(a=True)", {"a": False}, F),
    ("(a=false)", {"a": False}, T),
    ("(a=1)", {"a": True}, F),
    ("(a=yes)", {"a": True}, F),
    ("(a>false)", {"a": True}, F),  # booleans have no order
    ("(a<>true)", {"a": False}, T),
    # lists: "=" is "contains", ordering is "any element"
    ("(a=avx2)", {"a": ["sse4_2", "avx2"]}, T),
    ("(a=neon)", {"a": ["sse4_2", "avx2"]}, F),
    ("(a=av*)", {"a": ["sse4_2", "avx2"]}, T),
    ("(a=2)", {"a": [1, 2.0, 3]}, T),
    ("(a=true)", {"a": ["x", True]}, T),
    ("(a>=3)", {"a": [1, 2, 3]}, T),
    ("(a>3)", {"a": [1, 2, 3]}, F),
    ("(a<1)", {"a": [1, 2, 0.5]}, T),
    ("(a=x)", {"a": []}, F),
    ("(a=x)", {"a": [["y", "x"]]}, T),  # nested lists: any element, all the way down
    ("(a<>x)", {"a": ["y", "z"]}, T),
    ("(a<>x)", {"a": ["x", "z"]}, F),
    ("(a=x)", {"a": [None, "x"]}, T),
    ("(a=x)", {"a": [None]}, F),
    # null: a property without a value
    ("(a=x)", {"a": None}, U),
    ("(a>1)", {"a": None}, U),
    # versions
    ("(a$v>1.9)", {"a": "1.10"}, T),
    ("(a$v<1.9)", {"a": "1.10"}, F),
    ("(a$v=1.0)", {"a": "1.0.0"}, T),
    ("(a$v=v1.2.3)", {"a": "1.2.3"}, T),
    ("(a$v>=0.3.0)", {"a": "0.3.0"}, T),
    ("(a$v<1.0.0)", {"a": "1.0.0-rc.1"}, T),
    ("(a$v<1.0.0-rc.2)", {"a": "1.0.0-rc.1"}, T),
    ("(a$v<1.0.0-rc.10)", {"a": "1.0.0-rc.9"}, T),
    ("(a$v<1.0.0-beta)", {"a": "1.0.0-alpha"}, T),
    ("(a$v<1.0.0-alpha.1)", {"a": "1.0.0-alpha"}, T),
    ("(a$v=1.0.0)", {"a": "1.0.0+build.5"}, T),
    ("(a$v>=1.5)", {"a": 2}, T),  # a number converts by its text
    ("(a$v>=1.0)", {"a": "not-a-version"}, F),  # a property that does not convert: FALSE
    ("(a$v>=x.y)", {"a": "1.0"}, F),  # nor does a filter value
    ("(a$v>=1.0)", {"a": True}, F),
    ("(a$v>=1.0)", {"a": ["0.9", "1.1"]}, T),
    ("(a$v>=1.0)", {}, U),
    ("(a$v>=1.0)", {"a": None}, U),
    ("(a$v<>1.0)", {"a": "1.0.1"}, T),
    # decimals: exact
    ("(a$d=0.3)", {"a": "0.30"}, T),
    ("(a$d=0.3)", {"a": 0.3}, T),
    ("(a=0.3)", {"a": 0.1 + 0.2}, F),  # plain numbers are floats
    ("(a$d>0.1)", {"a": "0.1000000000000000000001"}, T),
    ("(a$d<=1e2)", {"a": 100}, T),
    ("(a$d<1)", {"a": "one"}, F),
    ("(a$d<1)", {"a": "NaN"}, F),
    # datetimes: instants
    ("(a$t>2024-01-01T00:00:00Z)", {"a": "2024-06-01T12:00:00+02:00"}, T),
    ("(a$t=2024-01-01T00:00:00Z)", {"a": "2024-01-01T01:00:00+01:00"}, T),
    ("(a$t<2024-01-01T00:00:00Z)", {"a": "2023-12-31T23:59:59.999Z"}, T),
    ("(a$t<2024-01-01)", {"a": "2023-12-31T23:00:00"}, T),  # no offset: UTC
    ("(a$t>2024-01-01T00:00:00z)", {"a": "2024-01-02T00:00:00Z"}, T),
    ("(a$t>2024-01-01T00:00:00Z)", {"a": 1800000000000}, F),  # numbers are not datetimes
    ("(a$t>2024-01-01T00:00:00Z)", {"a": "yesterday"}, F),
    ("(a$t>tomorrow)", {"a": "2024-01-01T00:00:00Z"}, F),
    # three-valued logic
    ("(&)", {}, T),
    ("(|)", {}, F),
    ("(&(a=1)(b=1))", {"a": 1, "b": 1}, T),
    ("(&(a=1)(b=1))", {"a": 1, "b": 2}, F),
    ("(&(a=1)(b=1))", {"a": 1}, U),
    ("(&(a=1)(b=1))", {"a": 2}, F),  # FALSE wins over UNDEFINED
    ("(&(b=1)(a=1))", {"a": 2}, F),
    ("(|(a=1)(b=1))", {"a": 2, "b": 1}, T),
    ("(|(a=1)(b=1))", {"a": 2, "b": 2}, F),
    ("(|(a=1)(b=1))", {"a": 2}, U),
    ("(|(a=1)(b=1))", {"a": 1}, T),  # TRUE wins over UNDEFINED
    ("(!(a=1))", {"a": 1}, F),
    ("(!(a=1))", {"a": 2}, T),
    ("(!(a=1))", {}, U),
    ("(!(!(a=1)))", {}, U),
    ("(!())", {}, F),
    ("(!(&))", {}, F),
    ("(!(|))", {}, T),
    ("(!(&(a=1)(b=1)))", {"a": 1}, U),
    ("(!(|(a=1)(b=1)))", {"a": 1}, F),
    # odd property values that did not come through validation
    ("(a=x)", {"a": {"x": 1}}, F),
    ("(a=x)", {"a": b"x"}, F),
]


@pytest.mark.parametrize(("text", "props", "expected"), EVALUATIONS, ids=[f"{e[0]} {e[1]}" for e in EVALUATIONS])
def test_evaluate(text: str, props: dict[str, Any], expected: Tri) -> None:
    c = parse(text)
    assert c.evaluate(props) is expected
    # The canonical text means the same thing.
    assert parse(c.to_text()).evaluate(props) is expected


def test_realistic_demand_and_offer_match() -> None:
    demand = parse(YAPAPI_DEMAND)
    offer = parse(PROVIDER_CONSTRAINTS)
    result = match(DEMAND_PROPS, demand, OFFER_PROPS, offer)
    assert result == MatchResult(T, T) and result.matched
    assert parse(MULTILINE_DEMAND).evaluate({**OFFER_PROPS, "golem.srv.comp.expiration": 1800000000000}) is T


def test_match_needs_true_on_both_sides() -> None:
    demand = parse(YAPAPI_DEMAND)
    offer = parse(PROVIDER_CONSTRAINTS)
    small = {**OFFER_PROPS, "golem.inf.mem.gib": 0.25}
    assert match(DEMAND_PROPS, demand, small, offer) == MatchResult(F, T)
    no_expiry = {k: v for k, v in DEMAND_PROPS.items() if k != "golem.srv.comp.expiration"}
    result = match(no_expiry, demand, OFFER_PROPS, offer)
    assert result == MatchResult(T, U) and not result.matched
    other_subnet = {**DEMAND_PROPS, "golem.node.debug.subnet": "devnet"}
    assert not match(other_subnet, demand, OFFER_PROPS, offer).matched


def test_tri_is_not_a_bool() -> None:
    with pytest.raises(TypeError):
        bool(Tri.TRUE)
    assert ~T is F and ~F is T and ~U is U
    assert Tri.of(True) is T and Tri.of(False) is F
    assert Tri("undefined") is U


def test_asts_are_frozen_hashable_values() -> None:
    a = parse("(&(a=1)(b=*))")
    assert a == parse(" (& (a=1) (b=*) ) ") and hash(a) == hash(parse("(&(a=1)(b=*))"))
    with pytest.raises(AttributeError):
        a.children = ()  # type: ignore[misc]
    assert And([Present("a")]) == And((Present("a"),))  # a list of children becomes a tuple
    assert str(a) == a.to_text()


# -- explain ------------------------------------------------------------------------------


def failures(text: str, props: dict[str, Any]) -> list[tuple[str, Tri, str]]:
    return [(f.clause, f.result, f.why) for f in explain(parse(text), props)]


def test_explain_is_empty_when_true() -> None:
    assert explain(parse(YAPAPI_DEMAND), OFFER_PROPS) == []


def test_explain_names_failing_and_absent_clauses() -> None:
    props = {**OFFER_PROPS, "golem.inf.mem.gib": 2}
    del props["golem.com.payment.platform.erc20-holesky-tglm.address"]
    del props["golem.runtime.name"]
    demand = parse(f"(&(golem.inf.mem.gib>=4)(golem.runtime.name=vm)(golem.inf.cpu.threads>=2)({ADDRESS}=*))")
    got = explain(demand, props)
    assert got == [
        Failure("(golem.inf.mem.gib>=4)", F, "golem.inf.mem.gib", 2, "golem.inf.mem.gib is 2, needs >= 4"),
        Failure("(golem.runtime.name=vm)", U, "golem.runtime.name", None, "property absent"),
        Failure(
            "(golem.com.payment.platform.erc20-holesky-tglm.address=*)",
            F,
            "golem.com.payment.platform.erc20-holesky-tglm.address",
            None,
            "property absent",
        ),
    ]


def test_explain_or_lists_every_child() -> None:
    assert failures("(|(a=vm)(a=wasmtime))", {"a": "docker"}) == [
        ("(a=vm)", F, 'a is "docker", needs = vm'),
        ("(a=wasmtime)", F, 'a is "docker", needs = wasmtime'),
    ]


def test_explain_under_not_names_the_clause_that_held() -> None:
    assert failures("(!(a=public))", {"a": "public"}) == [
        ("(a=public)", F, 'a is "public", and (a=public) must not hold'),
    ]
    # (!(|x y)) fails when either holds: only the one that held is to blame.
    assert failures("(!(|(a=1)(b=1)))", {"a": 1, "b": 2}) == [("(a=1)", F, "a is 1, and (a=1) must not hold")]
    # (!(&x y)) fails when both hold: both are to blame.
    assert [f[0] for f in failures("(!(&(a=1)(b=1)))", {"a": 1, "b": 1})] == ["(a=1)", "(b=1)"]
    assert failures("(!(a=*))", {"a": None}) == [("(a=*)", F, "a is null, and (a=*) must not hold")]
    assert failures("(!(!(a=1)))", {"a": 2}) == [("(a=1)", F, "a is 2, needs = 1")]
    assert failures("(!(a=1))", {}) == [("(a=1)", U, "property absent")]


def test_explain_empty_groups() -> None:
    assert failures("(|)", {}) == [("(|)", F, "the empty (|) never holds")]
    assert failures("(!(&))", {}) == [("(&)", F, "the empty (&) always holds, and it is negated")]
    assert failures("(!())", {}) == [("()", F, "the empty filter always holds, and it is negated")]


@pytest.mark.parametrize(
    ("text", "props", "why"),
    [
        ("(a=vm)", {"a": None}, "property has no value (null)"),
        ("(a>=4)", {"a": "10"}, 'a is "10", needs >= 4 (a string property compares as text)'),
        ("(a>=four)", {"a": 4}, "a is 4, needs >= four ('four' is not a number)"),
        ("(a=prov*)", {"a": "x"}, 'a is "x", needs to match prov*'),
        ("(a=avx)", {"a": ["sse"]}, 'a is ["sse"], needs to contain avx'),
        ("(a=av*)", {"a": ["sse"]}, 'a is ["sse"], needs an element to match av*'),
        ("(a>=4)", {"a": [1, 2]}, "a is [1, 2], needs an element >= 4"),
        ("(a<>vm)", {"a": "vm"}, 'a is "vm", must not be vm'),
        ("(a<>vm)", {"a": ["vm"]}, 'a is ["vm"], must not contain vm'),
        ("(a>true)", {"a": True}, "a is true, needs > true (booleans have no order)"),
        ("(a=yes)", {"a": True}, "a is true, needs = yes ('yes' is not true or false)"),
        ("(a$v>=2.0)", {"a": "1.9"}, 'a is "1.9", needs >= 2.0'),
        ("(a$v>=2.0)", {"a": "new"}, 'a is "new", needs >= 2.0 (the value is not a version)'),
        ("(a$d>=x)", {"a": "1"}, "a is \"1\", needs >= x ('x' is not a decimal)"),
        ("(a$t>2024-01-01)", {"a": 5}, "a is 5, needs > 2024-01-01 (the value is not a datetime)"),
    ],
)
def test_explain_why(text: str, props: dict[str, Any], why: str) -> None:
    [failure] = explain(parse(text), props)
    assert failure.why == why
    assert failure.property == "a"
    assert failure.value == props["a"]


# -- analysis -----------------------------------------------------------------------------


def test_referenced_properties() -> None:
    assert referenced_properties(parse(MULTILINE_DEMAND)) == {
        "golem.srv.comp.expiration",
        "golem.node.debug.subnet",
        "golem.runtime.name",
        "golem.node.id.name",
    }
    assert referenced_properties(parse("()")) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            YAPAPI_DEMAND,
            {"golem.runtime.name": {"vm"}, "golem.com.pricing.model": {"linear"}, "golem.node.debug.subnet": {"public"}},
        ),
        (MULTILINE_DEMAND, {"golem.node.debug.subnet": {"public"}, "golem.runtime.name": {"vm", "wasmtime"}}),
        ("(a=x)", {"a": {"x"}}),
        (r"(a=x\*)", {"a": {"x*"}}),  # an escaped star is a literal
        ("(a=x*)", {}),
        ("(a$v=1.0)", {}),
        ("(a>=1)", {}),
        ("(a<>x)", {}),
        ("(a=*)", {}),
        ("(!(a=x))", {}),
        ("(|(a=x)(b=y))", {}),
        ("(|(a=x)(&(a=y)(b=z)))", {"a": {"x", "y"}}),
        ("(|(&(a=x)(b=1))(&(a=y)(b=2)))", {"a": {"x", "y"}, "b": {"1", "2"}}),
        ("(|(a=x)(a=y*))", {}),
        ("(&(a=x)(a=y))", {"a": {"x"}}),  # either child's set is sound; never the intersection
        ("(&(a=x)(|(a=y)(a=z)))", {"a": {"x"}}),
        ("(|)", {}),
        ("()", {}),
    ],
)
def test_required_equalities(text: str, expected: dict[str, set[str]]) -> None:
    assert required_equalities(parse(text)) == {k: frozenset(v) for k, v in expected.items()}


# -- generated ASTs -----------------------------------------------------------------------

ATTRS = st.sampled_from(["a", "b", "c"])
LITERALS = st.sampled_from(["x", "y", "1", "1.0", "true", "", "x*"])
VALUES = st.one_of(
    st.sampled_from(["x", "y", "1", "xy", "", "x*", "TRUE"]),
    st.sampled_from([1, 2, 1.0, 0.5, True, False, None]),
    st.lists(st.sampled_from(["x", "y", 1, True, None]), max_size=3),
)
PROPS = st.dictionaries(ATTRS, VALUES, max_size=3)


@st.composite
def small_leaves(draw: st.DrawFn) -> Constraint:
    attr = draw(ATTRS)
    if draw(st.integers(0, 5)) == 0:
        return Present(attr)
    op = draw(st.sampled_from(["=", "=", "=", "<", ">=", "<>"]))
    pieces = draw(st.lists(LITERALS, min_size=1, max_size=2))
    value = "*".join(escape_value(p) for p in pieces)
    if op == "=" and value.rstrip() == "*":
        return Present(attr)
    return Compare(attr, op, value, draw(st.sampled_from([None, None, None, "v", "d"])))


def trees(leaves: st.SearchStrategy[Constraint]) -> st.SearchStrategy[Constraint]:
    return st.recursive(
        st.one_of(leaves, st.just(Empty())),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda cs: And(tuple(cs))),
            st.lists(inner, max_size=3).map(lambda cs: Or(tuple(cs))),
            inner.map(Not),
        ),
        max_leaves=8,
    )


@st.composite
def any_leaves(draw: st.DrawFn) -> Constraint:
    attr = draw(st.text(min_size=1, max_size=8).filter(is_valid_attribute))
    if draw(st.booleans()):
        return Present(attr)
    op = draw(st.sampled_from(["=", "<", "<=", ">", ">=", "<>"]))
    pieces = draw(st.lists(st.text(max_size=6), min_size=1, max_size=3))
    wild = draw(st.booleans())
    value = ("*" if wild else r"\*").join(escape_value(p) for p in pieces)
    assume(not (op == "=" and value.rstrip() == "*"))
    return Compare(attr, op, value, draw(st.sampled_from([None, "v", "d", "t"])))


@FUZZ
@given(trees(any_leaves()))
def test_text_round_trips(c: Constraint) -> None:
    assert parse(c.to_text()) == c
    assert parse(c.pretty()) == c
    assert parse(c.pretty(indent="\t")) == c


@FUZZ
@given(trees(small_leaves()), PROPS)
def test_required_equalities_are_sound(c: Constraint, props: dict[str, Any]) -> None:
    required = required_equalities(c)
    assert set(required) <= referenced_properties(c)
    if c.evaluate(props) is not T:
        return
    for attr, literals in required.items():
        assert any(Compare(attr, "=", escape_value(lit)).evaluate(props) is T for lit in literals), (attr, literals)
        if isinstance(props[attr], str):  # what an index keyed by string values relies on
            assert props[attr] in literals


def kleene(c: Constraint, props: dict[str, Any]) -> Tri:
    """Three-valued logic spelled out: the reference the compiled evaluator must agree with."""
    if isinstance(c, And):
        results = [kleene(x, props) for x in c.children]
        return F if F in results else U if U in results else T
    if isinstance(c, Or):
        results = [kleene(x, props) for x in c.children]
        return T if T in results else U if U in results else F
    if isinstance(c, Not):
        return ~kleene(c.child, props)
    return c.evaluate(props)


@FUZZ
@given(trees(small_leaves()), PROPS)
def test_evaluation_is_kleene_logic_and_explain_agrees(c: Constraint, props: dict[str, Any]) -> None:
    result = c.evaluate(props)
    assert result is kleene(c, props)
    found = explain(c, props)
    if result is T:
        assert found == []
    else:
        assert found, "a constraint that is not TRUE must have someone to blame"
        assert result in {f.result for f in found}
        assert all(f.result in (F, U) for f in found)
        assert all(f.property == "" or f.property in referenced_properties(c) for f in found)


@FUZZ
@given(st.lists(st.text(alphabet="ab*", max_size=3), min_size=1, max_size=4), st.text(alphabet="ab*\n", max_size=8))
def test_wildcards_match_like_a_glob(pieces: list[str], text: str) -> None:
    value = "*".join(escape_value(p) for p in pieces)
    assume(value.rstrip() != "*")
    reference = re.fullmatch(".*".join(re.escape(p) for p in pieces), text, re.DOTALL) is not None
    assert Compare("a", "=", value).evaluate({"a": text}) is Tri.of(reference)


def test_hostile_values_take_linear_time() -> None:
    # A regex would backtrack for ages on both of these; the matcher must not.
    many_stars = parse("(a=" + "*a" * 40 + "*b)")
    assert many_stars.evaluate({"a": "a" * 5000}) is F
    assert many_stars.evaluate({"a": "a" * 40 + "b"}) is T
    digits = parse("(a>=" + "1" * 30_000 + "x)")
    assert digits.evaluate({"a": 5}) is F


def test_a_value_starting_with_an_equals_sign_prints_unambiguously() -> None:
    # Found by test_text_round_trips: (a<=) read back as "<=" with an empty value.
    for op in ("<", ">"):
        c = Compare("a", op, "=")
        assert parse(c.to_text()) == c
        assert parse(c.to_text()).op == op
