"""Golem's constraint language: LDAP-style filters over flat property maps, evaluated in three-valued logic.

    >>> demand = parse("(&(golem.inf.mem.gib>=0.5)(golem.runtime.name=vm))")
    >>> demand.evaluate({"golem.inf.mem.gib": 4, "golem.runtime.name": "vm"})
    <Tri.TRUE: 'true'>
    >>> demand.evaluate({"golem.runtime.name": "vm"})
    <Tri.UNDEFINED: 'undefined'>

Grammar (whitespace and newlines are allowed between terms):

    filter := "(" ( "&" filter* | "|" filter* | "!" filter | item )? ")"     "()" matches all
    item   := attr [ "$v" | "$d" | "$t" ] op value  |  attr "=*"
    op     := "=" | "<" | "<=" | ">" | ">=" | "<>"

A value runs to the first unescaped ")"; a backslash makes the next character literal
(``\\(``, ``\\)``, ``\\*``, ``\\\\``). An unescaped ``*`` in an ``=`` or ``<>`` value without
a type suffix is a wildcard. ``<>`` (not equal) is not in the original grammar's
documentation but current yagna accepts it, so we do too.
"""

from __future__ import annotations

import enum
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from protocol.errors import ConstraintSyntaxError

__all__ = [
    "MAX_TEXT_BYTES",
    "MAX_DEPTH",
    "OPERATORS",
    "TYPE_SUFFIXES",
    "Tri",
    "Constraint",
    "Empty",
    "And",
    "Or",
    "Not",
    "Compare",
    "Present",
    "Failure",
    "MatchResult",
    "parse",
    "escape_value",
    "is_valid_attribute",
    "explain",
    "referenced_properties",
    "required_equalities",
    "match",
]

MAX_TEXT_BYTES = 64 * 1024
MAX_DEPTH = 100
OPERATORS = ("=", "<", "<=", ">", ">=", "<>")
TYPE_SUFFIXES = {"v": "version", "d": "decimal", "t": "datetime"}


class Tri(enum.Enum):
    """A three-valued truth: a comparison on an absent property is UNDEFINED, not FALSE."""

    TRUE = "true"
    FALSE = "false"
    UNDEFINED = "undefined"

    def __bool__(self) -> bool:
        # Every enum member is truthy, so `if c.evaluate(p):` would always pass.
        raise TypeError("a Tri is not a bool: compare with `is Tri.TRUE`")

    def __invert__(self) -> Tri:
        """Negation: TRUE and FALSE swap, UNDEFINED stays."""
        if self is Tri.TRUE:
            return Tri.FALSE
        if self is Tri.FALSE:
            return Tri.TRUE
        return Tri.UNDEFINED

    @classmethod
    def of(cls, value: bool) -> Tri:
        """TRUE or FALSE."""
        return cls.TRUE if value else cls.FALSE


# Module-level names: the evaluation closures look these up once per call, not per attribute access.
_TRUE = Tri.TRUE
_FALSE = Tri.FALSE
_UNDEFINED = Tri.UNDEFINED
_ABSENT: Any = object()

Props = Mapping[str, Any]
_Eval = Callable[[Props], Tri]


# -- AST ----------------------------------------------------------------------------------


class Constraint:
    """A parsed filter. ``evaluate`` is precompiled at construction, so it is cheap to call often."""

    __slots__ = ()
    _fn: _Eval
    _depth: int

    def evaluate(self, props: Props) -> Tri:
        """The filter's truth on a flat property map."""
        return self._fn(props)

    def to_text(self) -> str:
        """Compact canonical text: ``parse(c.to_text()) == c``."""
        raise NotImplementedError

    def pretty(self, indent: str = "  ") -> str:
        """Multi-line text, one clause a line, nested clauses indented; it parses back to ``self``."""
        return "\n".join(self._pretty_lines(indent))

    def _pretty_lines(self, indent: str) -> Iterator[str]:
        yield self.to_text()

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True, slots=True)
class Empty(Constraint):
    """``()``: no constraint, always TRUE."""

    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fn", lambda props: _TRUE)
        object.__setattr__(self, "_depth", 1)

    def to_text(self) -> str:
        return "()"


def _init_children(node: And | Or, children: Any) -> tuple[Constraint, ...]:
    children = tuple(children)
    for child in children:
        if not isinstance(child, Constraint):
            raise TypeError(f"a child of {type(node).__name__} must be a Constraint, not {type(child).__name__}")
    depth = 1 + max((c._depth for c in children), default=0)
    if depth > MAX_DEPTH:
        raise ValueError(f"constraint nested deeper than {MAX_DEPTH} levels")
    object.__setattr__(node, "children", children)
    object.__setattr__(node, "_depth", depth)
    return children


def _group(fns: tuple[_Eval, ...], *, decisive: Tri, otherwise: Tri) -> _Eval:
    """The evaluator of & (decisive FALSE) or | (decisive TRUE): the first decisive child
    settles it; else UNDEFINED if any child is, else `otherwise`."""

    def evaluate(props: Props) -> Tri:
        result = otherwise
        for fn in fns:
            r = fn(props)
            if r is decisive:
                return decisive
            if r is _UNDEFINED:
                result = _UNDEFINED
        return result

    return evaluate


@dataclass(frozen=True, slots=True)
class And(Constraint):
    """``(&A B ...)``: FALSE if any child is FALSE, else UNDEFINED if any is, else TRUE (``(&)`` is TRUE)."""

    children: tuple[Constraint, ...]
    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fns = tuple(c._fn for c in _init_children(self, self.children))
        object.__setattr__(self, "_fn", _group(fns, decisive=_FALSE, otherwise=_TRUE))

    def to_text(self) -> str:
        return "(&" + "".join(c.to_text() for c in self.children) + ")"

    def _pretty_lines(self, indent: str) -> Iterator[str]:
        yield from _pretty_group("&", self.children, indent)


@dataclass(frozen=True, slots=True)
class Or(Constraint):
    """``(|A B ...)``: TRUE if any child is TRUE, else UNDEFINED if any is, else FALSE (``(|)`` is FALSE)."""

    children: tuple[Constraint, ...]
    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fns = tuple(c._fn for c in _init_children(self, self.children))
        object.__setattr__(self, "_fn", _group(fns, decisive=_TRUE, otherwise=_FALSE))

    def to_text(self) -> str:
        return "(|" + "".join(c.to_text() for c in self.children) + ")"

    def _pretty_lines(self, indent: str) -> Iterator[str]:
        yield from _pretty_group("|", self.children, indent)


@dataclass(frozen=True, slots=True)
class Not(Constraint):
    """``(!A)``: TRUE and FALSE swap, UNDEFINED stays UNDEFINED."""

    child: Constraint
    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.child, Constraint):
            raise TypeError(f"the child of Not must be a Constraint, not {type(self.child).__name__}")
        if self.child._depth + 1 > MAX_DEPTH:
            raise ValueError(f"constraint nested deeper than {MAX_DEPTH} levels")
        inner = self.child._fn

        def evaluate(props: Props) -> Tri:
            r = inner(props)
            return _FALSE if r is _TRUE else _TRUE if r is _FALSE else _UNDEFINED

        object.__setattr__(self, "_fn", evaluate)
        object.__setattr__(self, "_depth", self.child._depth + 1)

    def to_text(self) -> str:
        return "(!" + self.child.to_text() + ")"

    def _pretty_lines(self, indent: str) -> Iterator[str]:
        if isinstance(self.child, (Compare, Present, Empty)):
            yield self.to_text()
            return
        yield "(!"
        for line in self.child._pretty_lines(indent):
            yield indent + line
        yield ")"


def _pretty_group(op: str, children: tuple[Constraint, ...], indent: str) -> Iterator[str]:
    if not children:
        yield f"({op})"
        return
    yield "(" + op
    for child in children:
        for line in child._pretty_lines(indent):
            yield indent + line
    yield ")"


@dataclass(frozen=True, slots=True)
class Present(Constraint):
    """``(attr=*)``: TRUE if the property exists (whatever its value), FALSE if not.

    Presence is never UNDEFINED: like yagna, an absent property makes it FALSE.
    """

    attr: str
    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_attribute(self.attr)
        attr = self.attr
        object.__setattr__(self, "_fn", lambda props: _TRUE if attr in props else _FALSE)
        object.__setattr__(self, "_depth", 1)

    def to_text(self) -> str:
        return f"({self.attr}=*)"


@dataclass(frozen=True, slots=True)
class Compare(Constraint):
    """``(attr[$suffix] op value)``; ``value_text`` is the value as written in a filter.

    ``value_text`` is made canonical on construction (escapes only where needed), so
    ``Compare("a", "=", "x\\\\y")`` and ``Compare("a", "=", "xy")`` are equal. Use
    ``escape_value`` to build one from a literal string. ``type_suffix`` is None, "v"
    (version), "d" (decimal) or "t" (datetime).

    Raises:
        ValueError: a bad attribute name, operator or suffix, a value ending in a lone
            backslash, or an ``=`` value of a bare ``*`` (that is ``Present``).
    """

    attr: str
    op: str
    value_text: str
    type_suffix: str | None = None
    # Precompiled at construction: the value as each type, so evaluate() never parses.
    value: str = field(init=False, repr=False, compare=False)
    is_wildcard: bool = field(init=False, repr=False, compare=False)
    _segments: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    _number: int | float | None = field(init=False, repr=False, compare=False)
    _bool: bool | None = field(init=False, repr=False, compare=False)
    _typed: Any = field(init=False, repr=False, compare=False)
    _fn: _Eval = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_attribute(self.attr)
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}; one of {', '.join(OPERATORS)}")
        if self.type_suffix is not None and self.type_suffix not in TYPE_SUFFIXES:
            raise ValueError(f"unknown type suffix {self.type_suffix!r}; one of None, 'v', 'd', 't'")
        if not isinstance(self.value_text, str):
            raise TypeError(f"value_text must be a str, not {type(self.value_text).__name__}")
        segments = _split_value(self.value_text)
        wildcard = len(segments) > 1 and self.op in ("=", "<>") and self.type_suffix is None
        literal = "*".join(segments)
        if wildcard:
            canonical = "*".join(escape_value(s) for s in segments)
            if self.op == "=" and canonical.rstrip() == "*":
                raise ValueError(f"({self.attr}=*) is a presence test: use Present({self.attr!r})")
        else:
            canonical = escape_value(literal)
        set_ = object.__setattr__
        set_(self, "value_text", canonical)
        set_(self, "value", literal)
        set_(self, "is_wildcard", wildcard)
        set_(self, "_segments", tuple(segments) if wildcard else None)
        set_(self, "_number", _parse_number(literal))
        set_(self, "_bool", _BOOLS.get(literal.strip().lower()))
        set_(self, "_typed", None if self.type_suffix is None else _CONVERTERS[self.type_suffix](literal))
        set_(self, "_fn", _compile_compare(self))
        set_(self, "_depth", 1)

    def to_text(self) -> str:
        suffix = "" if self.type_suffix is None else "$" + self.type_suffix
        value = self.value_text
        if self.op in ("<", ">") and value.startswith("="):
            # "(a<=)" would read back as "<=" with an empty value: escape the "=".
            value = "\\" + value
        return f"({self.attr}{suffix}{self.op}{value})"


# -- values -------------------------------------------------------------------------------

_BOOLS = {"true": True, "false": False}
# Unambiguous (no two ways to split a run of digits), so a long hostile value fails in linear time.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_VERSION = re.compile(r"[vV]?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?", re.ASCII)
_NAME_STOP = frozenset("()=<>~*\\$[]")
_ESCAPE = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)", "*": "\\*"})


def escape_value(text: str) -> str:
    """A literal string as filter value text: ``\\``, ``(``, ``)`` and ``*`` get a backslash.

    >>> escape_value("a*(b)")
    'a\\\\*\\\\(b\\\\)'
    """
    return text.translate(_ESCAPE)


def is_valid_attribute(name: str) -> bool:
    """Whether ``name`` can be written as a property name in a filter.

    Any non-empty text without whitespace or ``( ) = < > ~ * \\ $ [ ]``, not starting with
    ``& | !``: dots, ``-``, ``_``, digits, ``@`` and the ``?`` of negotiable properties are fine.
    """
    return (
        isinstance(name, str)
        and name != ""
        and name[0] not in "&|!"
        and not any(ch in _NAME_STOP or ch.isspace() for ch in name)
    )


def _check_attribute(name: str) -> None:
    if not is_valid_attribute(name):
        raise ValueError(f"{name!r} is not a property name a filter can hold")


def _split_value(text: str) -> list[str]:
    """The unescaped pieces of a value between its unescaped ``*``s."""
    if "\\" not in text:
        return text.split("*")
    segments: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise ValueError(f"value {text!r} ends in a lone backslash")
            current.append(nxt)
        elif ch == "*":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
    segments.append("".join(current))
    return segments


def _parse_number(text: str) -> int | float | None:
    # Stricter than float(): no "inf", "nan" or "1_000" (Rust's f64 parser, which yagna uses,
    # takes no underscores either). Integers stay int so that big ones compare exactly.
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # longer than int's digit limit
            pass
    return float(text)


def _parse_decimal(text: str) -> Decimal | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def _parse_version(text: str) -> tuple[Any, ...] | None:
    # Offers repeat the same few versions; a long string (hostile, or no version) skips the cache.
    return _version_key_cached(text) if len(text) <= _CACHED_CHARS else _version_key(text)


def _version_key(text: str) -> tuple[Any, ...] | None:
    """A sort key: 1.10 > 1.9, 1.0 == 1.0.0, 1.0.0-rc.1 < 1.0.0 (semver precedence), +build ignored.

    yagna uses the semver crate, which insists on three components; we also take "1" and
    "1.2" (zero-padded) and a leading "v", since real properties carry such versions.
    """
    m = _VERSION.fullmatch(text.strip())
    if m is None:
        return None
    try:
        release = [int(part) for part in m.group(1).split(".")]
    except ValueError:
        return None
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = m.group(2)
    if pre is None:
        return (tuple(release), 1, ())
    ids: list[tuple[int, Any]] = []
    for ident in pre.split("."):
        if ident == "":
            return None
        if ident.isdigit():
            try:
                ids.append((0, int(ident)))
            except ValueError:
                return None
        else:
            ids.append((1, ident))
    return (tuple(release), 0, tuple(ids))


def _parse_datetime(text: str) -> datetime | None:
    return _instant_cached(text) if len(text) <= _CACHED_CHARS else _instant(text)


def _instant(text: str) -> datetime | None:
    """RFC 3339 / ISO 8601; a time without an offset is taken as UTC so that all compare as instants."""
    text = text.strip()
    if text[-1:] == "z":
        text = text[:-1] + "Z"
    try:
        value = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


_CACHED_CHARS = 64
_version_key_cached = lru_cache(maxsize=1024)(_version_key)
_instant_cached = lru_cache(maxsize=1024)(_instant)
_CONVERTERS: dict[str, Callable[[str], Any]] = {"v": _parse_version, "d": _parse_decimal, "t": _parse_datetime}


def _convert_property(suffix: str, value: Any) -> Any:
    """A property value as the suffix's type, or None. Only strings and numbers convert.

    yagna converts only strings and counts a failure as UNDEFINED; we follow Loam's rule
    that a value which does not convert makes the comparison FALSE. Numbers convert to
    versions and decimals by their shortest text (1.5 -> "1.5"), never to datetimes.
    """
    t = type(value)
    if t is str:
        return _CONVERTERS[suffix](value)
    if (t is int or t is float) and suffix != "t":
        return _CONVERTERS[suffix](repr(value))
    return None


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq}


def _value_test(c: Compare) -> Callable[[Any], bool | None]:
    """A test of one property value: True, False, or None for a null (a property without a value).

    Typing follows the property's value: strings compare as strings (with wildcards for
    ``=``), numbers numerically, booleans against "true"/"false" (case-insensitive, ``=``
    only), a list by any element (for ``=`` that is "contains"). A filter value that does
    not parse as the property's type gives False, never an error. ``<>`` is the negation
    of ``=`` on a present, non-null value ("does not contain" for a list).
    """
    op = "=" if c.op == "<>" else c.op
    cmp = _ORDER[op]
    literal = c.value
    number = c._number
    boolean = c._bool
    segments = c._segments
    suffix = c.type_suffix
    typed = c._typed

    if suffix is not None:
        if typed is None:
            # The filter's own value does not convert: FALSE for every present value.
            def test_typed(v: Any) -> bool | None:
                return None if v is None else False

            return test_typed

        def test_typed_value(v: Any) -> bool | None:
            if type(v) is list:
                return any(test_typed_value(x) for x in v)
            if v is None:
                return None
            converted = _convert_property(suffix, v)
            return converted is not None and bool(cmp(converted, typed))

        return test_typed_value

    if segments is not None:

        def test_str(v: str) -> bool:
            return _wildcard_match(segments, v)

    else:

        def test_str(v: str) -> bool:
            return bool(cmp(v, literal))

    def test(v: Any) -> bool | None:
        t = type(v)
        if t is str:
            return test_str(v)
        if t is int or t is float:
            return number is not None and bool(cmp(v, number))
        if t is bool:
            return op == "=" and v is boolean
        if t is list:
            return any(test(x) for x in v)
        if v is None:
            return None
        return False  # not a JSON value: nothing matches it

    return test


def _wildcard_match(segments: tuple[str, ...], text: str) -> bool:
    """Whether ``text`` is the pieces in order with anything between them (a glob of ``*`` only).

    Not a regex: ``.*a.*a.*a...`` backtracks exponentially on hostile input. Taking each
    middle piece at its leftmost place is enough for globs, so this is linear in effect.
    """
    first, last = segments[0], segments[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    pos = len(first)
    end = len(text) - len(last)
    for piece in segments[1:-1]:
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def _compile_compare(c: Compare) -> _Eval:
    attr = c.attr
    test = _value_test(c)
    negate = c.op == "<>"

    def evaluate(props: Props) -> Tri:
        v = props.get(attr, _ABSENT)
        if v is _ABSENT:
            return _UNDEFINED
        r = test(v)
        if r is None:
            return _UNDEFINED
        return _FALSE if r is negate else _TRUE

    return evaluate


# -- parsing ------------------------------------------------------------------------------


def parse(text: str) -> Constraint:
    """The constraint written in ``text``.

    >>> parse("(&(golem.runtime.name=vm) (golem.inf.mem.gib>=4))").to_text()
    '(&(golem.runtime.name=vm)(golem.inf.mem.gib>=4))'

    Raises:
        ConstraintSyntaxError: the text does not parse, is longer than ``MAX_TEXT_BYTES``
            or nests deeper than ``MAX_DEPTH``; the error's ``position`` (1-based) and
            ``expected`` say where and what.
    """
    if not isinstance(text, str):
        raise TypeError(f"constraint text must be a str, not {type(text).__name__}")
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ConstraintSyntaxError.at(
            text, 0, f"at most {MAX_TEXT_BYTES} bytes", found=f"{len(text.encode('utf-8', 'surrogatepass'))} bytes"
        )
    return _Parser(text).parse()


class _Parser:
    """Recursive descent, with the depth checked before each descent (so never RecursionError)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = len(text)

    def error(self, expected: str, index: int | None = None, found: str | None = None) -> ConstraintSyntaxError:
        return ConstraintSyntaxError.at(self.text, self.pos if index is None else index, expected, found)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.end else ""

    def skip_space(self) -> None:
        text, pos, end = self.text, self.pos, self.end
        while pos < end and text[pos].isspace():
            pos += 1
        self.pos = pos

    def parse(self) -> Constraint:
        self.skip_space()
        result = self.filter(1)
        self.skip_space()
        if self.pos < self.end:
            raise self.error("end of input")
        return result

    def filter(self, depth: int) -> Constraint:
        if self.peek() != "(":
            raise self.error('"("')
        if depth > MAX_DEPTH:
            raise self.error(f"at most {MAX_DEPTH} nested filters", found="a deeper one")
        self.pos += 1
        self.skip_space()
        ch = self.peek()
        if ch == ")":
            self.pos += 1
            return Empty()
        if ch in ("&", "|"):
            self.pos += 1
            children: list[Constraint] = []
            while True:
                self.skip_space()
                nxt = self.peek()
                if nxt == ")":
                    self.pos += 1
                    break
                if nxt != "(":
                    # At the end of input, the missing ")" is the likelier mistake.
                    raise self.error('")"' if nxt == "" else '"(" or ")"')
                children.append(self.filter(depth + 1))
            return And(tuple(children)) if ch == "&" else Or(tuple(children))
        if ch == "!":
            self.pos += 1
            self.skip_space()
            child = self.filter(depth + 1)
            self.skip_space()
            self.expect_close()
            return Not(child)
        return self.item()

    def expect_close(self) -> None:
        if self.peek() != ")":
            raise self.error('")"')
        self.pos += 1

    def item(self) -> Constraint:
        text, end = self.text, self.end
        start = pos = self.pos
        while pos < end and text[pos] not in _NAME_STOP and not text[pos].isspace():
            pos += 1
        if pos == start:
            raise self.error('a property name, "&", "|", "!" or ")"')
        attr = text[start:pos]
        self.pos = pos
        self.skip_space()
        suffix = None
        if self.peek() == "$":
            self.pos += 1
            suffix = self.peek()
            if suffix not in TYPE_SUFFIXES:
                if suffix == "":
                    raise self.error('a type suffix "$v", "$d" or "$t"')
                found = f'"${suffix}"' if suffix.isprintable() else None
                raise self.error('a type suffix "$v", "$d" or "$t"', index=self.pos - 1, found=found)
            self.pos += 1
            self.skip_space()
        op = self.operator()
        value_start = pos = self.pos
        while pos < end:
            ch = text[pos]
            if ch == "\\":
                if pos + 1 >= end:
                    raise self.error('a character after "\\"', index=pos + 1)
                pos += 2
            elif ch == ")":
                break
            else:
                pos += 1
        if pos >= end:
            raise self.error('")"', index=end)
        raw = text[value_start:pos]
        self.pos = pos + 1
        if op == "=" and raw.rstrip() == "*":
            # yagna also reads "(a=*  )" as presence; a type suffix means nothing there.
            return Present(attr)
        return Compare(attr, op, raw, suffix)

    def operator(self) -> str:
        text, pos = self.text, self.pos
        two = text[pos : pos + 2]
        if two in ("<=", ">=", "<>"):
            self.pos += 2
            return two
        one = text[pos : pos + 1]
        if one in ("=", "<", ">"):
            self.pos += 1
            return one
        expected = 'an operator "=", "<", "<=", ">", ">=" or "<>"'
        if one == "~":
            raise self.error(expected, found='"~=" (approximate match is not supported)')
        raise self.error(expected)


# Explaining, indexing and two-way matching live in protocol/constraint_analysis.py; they
# are importable from here too, loaded on first use.
_ANALYSIS = frozenset({"Failure", "MatchResult", "explain", "referenced_properties", "required_equalities", "match"})


def __getattr__(name: str) -> Any:
    if name in _ANALYSIS:
        from protocol import constraint_analysis

        return getattr(constraint_analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
