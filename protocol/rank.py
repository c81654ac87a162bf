"""Rank expressions: arithmetic over the other side's properties that orders acceptable offers or demands.

Golem has no such thing; it follows the Rank of HTCondor's ClassAds. Larger is preferred:

    >>> cheap_and_wide = parse_rank("-golem.com.pricing.model.linear.coeffs[0] * 3600 + golem.inf.cpu.threads")
    >>> cheap_and_wide.evaluate({"golem.com.pricing.model.linear.coeffs": [0.001, 0.0], "golem.inf.cpu.threads": 8})
    4.4

Grammar:

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | primary
    primary := number | call | property ("[" ["-"] digits "]")* | "(" expr ")"
    call    := ("min" | "max") "(" expr ("," expr)* ")" | "abs" "(" expr ")"

A bare property name is dotted words of letters, digits, ``_`` and ``?`` (``golem.inf.mem.gib``).
A name with other characters, such as ``-``, which would read as a minus, goes in
quotes: ``'golem.com.scheme.payu.debit-note.interval-sec?'``. An index counts from 0;
a negative one from the end (``coeffs[-1]`` is the last, Golem's fixed start fee).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ConstraintSyntaxError

__all__ = ["MAX_RANK_TEXT_BYTES", "MAX_RANK_DEPTH", "RankExpression", "parse_rank"]

MAX_RANK_TEXT_BYTES = 64 * 1024
MAX_RANK_DEPTH = 100

_Fn = Callable[[Mapping[str, Any]], "float | None"]


@dataclass(frozen=True, slots=True)
class RankExpression:
    """A parsed rank expression; ``evaluate`` is precompiled, so it is cheap to call often."""

    text: str
    properties: frozenset[str] = field(compare=False)
    _fn: _Fn = field(repr=False, compare=False)

    def evaluate(self, props: Mapping[str, Any]) -> float | None:
        """The rank on a flat property map, or None.

        None when a referenced property is absent or not a number (booleans count as 1 and
        0), an index is out of range, a division is by zero, or the result is not finite.
        """
        result = self._fn(props)
        if result is None or not math.isfinite(result):
            return None
        return result


def parse_rank(text: str) -> RankExpression:
    """The rank expression written in ``text``.

    >>> parse_rank("golem.inf.mem.gib / 2").evaluate({"golem.inf.mem.gib": 8})
    4.0

    Raises:
        ConstraintSyntaxError: the text does not parse, is longer than
            ``MAX_RANK_TEXT_BYTES`` or nests deeper than ``MAX_RANK_DEPTH``.
    """
    if not isinstance(text, str):
        raise TypeError(f"rank text must be a str, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RANK_TEXT_BYTES:
        raise ConstraintSyntaxError.at(text, 0, f"at most {MAX_RANK_TEXT_BYTES} bytes", found=f"{size} bytes")
    parser = _Parser(text)
    fn = parser.parse()
    return RankExpression(text, frozenset(parser.properties), fn)


# Tokens: the regex alternation order matters (numbers before names; "." starts a number).
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_?][A-Za-z0-9_?]*(?:\.[A-Za-z0-9_?]+)*)
  | (?P<quoted>'[^']*'|"[^"]*")
  | (?P<op>[-+*/(),\[\]])
    """,
    re.VERBOSE | re.ASCII,
)
_FUNCTIONS = {"min", "max", "abs"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, name, quoted, op, end
    text: str
    index: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    end = len(text)
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] in "'\"":
                raise ConstraintSyntaxError.at(text, end, f"a closing {text[pos]} for the quote at {pos + 1}")
            raise ConstraintSyntaxError.at(text, pos, "a number, a property name, an operator or a parenthesis")
        kind = m.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("end", "", end))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.properties: set[str] = set()

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def error(self, expected: str, token: _Token | None = None) -> ConstraintSyntaxError:
        token = token or self.token
        found = "end of input" if token.kind == "end" else f'"{token.text}"'
        return ConstraintSyntaxError.at(self.text, token.index, expected, found)

    def accept(self, op: str) -> bool:
        if self.token.kind == "op" and self.token.text == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise self.error(f'"{op}"')

    def parse(self) -> _Fn:
        fn = self.expr(0)
        if self.token.kind != "end":
            raise self.error('an operator "+", "-", "*", "/" or end of input')
        return fn

    def check_depth(self, depth: int) -> None:
        if depth > MAX_RANK_DEPTH:
            token = self.tokens[max(self.i - 1, 0)]
            expected = f"at most {MAX_RANK_DEPTH} nested terms"
            raise ConstraintSyntaxError.at(self.text, token.index, expected, "a deeper one")

    # Depth grows only with parentheses, unary signs and calls, as a reader counts nesting.
    # A long chain like 1+1+...+1 is one n-ary node, so evaluation never recurses deeply.

    def expr(self, depth: int) -> _Fn:
        self.check_depth(depth)
        first = self.term(depth)
        rest: list[tuple[str, _Fn]] = []
        while self.token.kind == "op" and self.token.text in "+-":
            op = self.token.text
            self.i += 1
            rest.append((op, self.term(depth)))
        return _chain(first, rest) if rest else first

    def term(self, depth: int) -> _Fn:
        first = self.unary(depth)
        rest: list[tuple[str, _Fn]] = []
        while self.token.kind == "op" and self.token.text in "*/":
            op = self.token.text
            self.i += 1
            rest.append((op, self.unary(depth)))
        return _chain(first, rest) if rest else first

    def unary(self, depth: int) -> _Fn:
        if self.accept("-"):
            self.check_depth(depth + 1)
            inner = self.unary(depth + 1)
            return lambda props: None if (v := inner(props)) is None else -v
        if self.accept("+"):
            self.check_depth(depth + 1)
            return self.unary(depth + 1)
        return self.primary(depth)

    def primary(self, depth: int) -> _Fn:
        token = self.token
        if token.kind == "number":
            self.i += 1
            number = float(token.text)
            return lambda props: number
        if token.kind == "op" and token.text == "(":
            self.i += 1
            fn = self.expr(depth + 1)
            self.expect(")")
            return fn
        if token.kind == "name" and token.text in _FUNCTIONS and self.tokens[self.i + 1].text == "(":
            return self.call(depth)
        if token.kind in ("name", "quoted"):
            self.i += 1
            name = token.text if token.kind == "name" else token.text[1:-1]
            if not name:
                raise self.error("a property name", token)
            self.properties.add(name)
            return self.indexes(name)
        raise self.error("a number, a property name, a function or \"(\"")

    def call(self, depth: int) -> _Fn:
        name = self.token.text
        self.i += 2  # the name and "("
        args = [self.expr(depth + 1)]
        while self.accept(","):
            args.append(self.expr(depth + 1))
        self.expect(")")
        if name == "abs":
            if len(args) != 1:
                raise self.error("abs() with exactly one argument", self.tokens[self.i - 1])
            inner = args[0]
            return lambda props: None if (v := inner(props)) is None else abs(v)
        pick = min if name == "min" else max

        def fn(props: Mapping[str, Any]) -> float | None:
            values = [arg(props) for arg in args]
            return None if None in values else pick(values)  # type: ignore[type-var]

        return fn

    def indexes(self, name: str) -> _Fn:
        path: list[int] = []
        while self.accept("["):
            negative = self.accept("-")
            token = self.token
            if token.kind != "number" or not token.text.isdigit():
                raise self.error("a whole number index")
            self.i += 1
            path.append(-int(token.text) if negative else int(token.text))
            self.expect("]")
        index_path = tuple(path)

        def fn(props: Mapping[str, Any]) -> float | None:
            value = props.get(name)
            for index in index_path:
                if type(value) is not list:
                    return None
                try:
                    value = value[index]
                except IndexError:
                    return None
            return _number(value)

        return fn


def _number(value: Any) -> float | None:
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int or t is bool:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _chain(first: _Fn, rest: list[tuple[str, _Fn]]) -> _Fn:
    """``first op1 f1 op2 f2 ...`` left to right, in one loop."""
    steps = tuple(rest)

    def fn(props: Mapping[str, Any]) -> float | None:
        acc = first(props)
        if acc is None:
            return None
        for op, operand in steps:
            b = operand(props)
            if b is None:
                return None
            if op == "+":
                acc = acc + b
            elif op == "-":
                acc = acc - b
            elif op == "*":
                acc = acc * b
            elif b == 0:
                return None
            else:
                try:
                    acc = acc / b
                except OverflowError:
                    return None
        return acc

    return fn
