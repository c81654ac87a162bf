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


# -- explaining ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One leaf clause that keeps a constraint from being TRUE, and why."""

    clause: str
    result: Tri
    property: str
    value: Any | None
    why: str


def explain(constraint: Constraint, props: Props) -> list[Failure]:
    """The leaf clauses responsible for ``constraint`` not being TRUE on ``props`` ([] if it is).

    For ``&`` that is every child that is not TRUE; for ``|`` every child (none was TRUE);
    under ``!`` the clauses that held when they must not (``result`` FALSE, ``why`` says so).

    >>> [f.why for f in explain(parse("(&(golem.inf.mem.gib>=4)(golem.runtime.name=vm))"),
    ...                         {"golem.inf.mem.gib": 2, "golem.runtime.name": "vm"})]
    ['golem.inf.mem.gib is 2, needs >= 4']
    """
    if constraint.evaluate(props) is _TRUE:
        return []
    out: list[Failure] = []
    _blame(constraint, props, False, out)
    return out


def _blame(node: Constraint, props: Props, negated: bool, out: list[Failure]) -> None:
    """Collect the leaves that keep ``node`` from being TRUE (from being FALSE when ``negated``)."""
    good = _FALSE if negated else _TRUE
    if isinstance(node, (And, Or)):
        if not node.children:
            # Only "(|)" (never TRUE) and a negated "(&)" (always TRUE) land here.
            if node.evaluate(props) is not good:
                why = "the empty (&) always holds, and it is negated" if negated else "the empty (|) never holds"
                out.append(Failure(node.to_text(), _FALSE, "", None, why))
            return
        # Under negation, And plays Or's part and the other way round (De Morgan).
        all_children = isinstance(node, Or) != negated
        for child in node.children:
            if all_children or child.evaluate(props) is not good:
                _blame(child, props, negated, out)
        return
    if isinstance(node, Not):
        _blame(node.child, props, not negated, out)
        return
    result = node.evaluate(props)
    if result is good:
        return
    out.append(_leaf_failure(node, props, result, negated))


def _leaf_failure(node: Constraint, props: Props, result: Tri, negated: bool) -> Failure:
    clause = node.to_text()
    if isinstance(node, Empty):
        return Failure(clause, _FALSE, "", None, "the empty filter always holds, and it is negated")
    attr = node.attr  # type: ignore[attr-defined]
    value = props.get(attr, _ABSENT)
    if value is _ABSENT:
        return Failure(clause, result, attr, None, "property absent")
    shown = _show(value)
    if result is _UNDEFINED:
        return Failure(clause, _UNDEFINED, attr, value, "property has no value (null)")
    if negated:  # the leaf held, and must not
        return Failure(clause, _FALSE, attr, value, f"{attr} is {shown}, and {clause} must not hold")
    assert isinstance(node, Compare)
    return Failure(clause, _FALSE, attr, value, f"{attr} is {shown}, {_needs(node, value)}")


def _needs(c: Compare, value: Any) -> str:
    shown_literal = c.value_text if c.is_wildcard else c.value
    is_list = type(value) is list
    if c.op == "<>":
        need = f"must not {'contain' if is_list else 'be'} {shown_literal}"
    elif c.op == "=" and c.is_wildcard:
        need = f"needs {'an element ' if is_list else ''}to match {shown_literal}"
    elif c.op == "=" and is_list:
        need = f"needs to contain {shown_literal}"
    else:
        need = f"needs {'an element ' if is_list and c.op != '=' else ''}{c.op} {shown_literal}"
    hint = _type_hint(c, value)
    return need + (f" ({hint})" if hint else "")


def _type_hint(c: Compare, value: Any) -> str:
    items = value if type(value) is list else [value]
    if c.type_suffix is not None:
        kind = TYPE_SUFFIXES[c.type_suffix]
        if c._typed is None:
            return f"{c.value!r} is not a {kind}"
        if all(_convert_property(c.type_suffix, v) is None for v in items):
            return f"the value is not a {kind}"
        return ""
    if any(type(v) in (int, float) for v in items) and c._number is None:
        return f"{c.value!r} is not a number"
    if any(type(v) is str for v in items) and c._number is not None and c.op not in ("=", "<>"):
        return "a string property compares as text"
    if any(type(v) is bool for v in items):
        if c.op not in ("=", "<>"):
            return "booleans have no order"
        if c._bool is None:
            return f"{c.value!r} is not true or false"
    return ""


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


# -- analysis -----------------------------------------------------------------------------


def referenced_properties(c: Constraint) -> set[str]:
    """Every property name the constraint mentions."""
    out: set[str] = set()
    stack = [c]
    while stack:
        node = stack.pop()
        if isinstance(node, (And, Or)):
            stack.extend(node.children)
        elif isinstance(node, Not):
            stack.append(node.child)
        elif isinstance(node, (Compare, Present)):
            out.add(node.attr)
    return out


def required_equalities(c: Constraint) -> dict[str, frozenset[str]]:
    """Properties that must equal one of some literal values for ``c`` to be TRUE.

    Sound, not complete: whenever ``c.evaluate(props)`` is TRUE, then for every
    ``name -> values`` here some ``v`` in ``values`` makes ``(name=v)`` TRUE on ``props``.
    For a string property that means ``props[name] in values``; for a list property,
    one of its elements is. A matcher can index offers by such properties, e.g.
    ``golem.runtime.name`` and ``golem.node.debug.subnet``. Only plain ``=`` with no
    wildcard and no type suffix counts; ``!`` yields nothing.

    >>> required = required_equalities(parse("(&(golem.runtime.name=vm)(|(a=1)(a=2))(b>3))"))
    >>> required == {"golem.runtime.name": {"vm"}, "a": {"1", "2"}}
    True
    """
    if isinstance(c, Compare):
        if c.op == "=" and not c.is_wildcard and c.type_suffix is None:
            return {c.attr: frozenset((c.value,))}
        return {}
    if isinstance(c, And):
        merged: dict[str, frozenset[str]] = {}
        for child in c.children:
            for name, values in required_equalities(child).items():
                # Not the intersection: (a=1)(a=1.0) both hold for the number 1, and
                # (a=x)(a=y) both hold for the list ["x", "y"]. Either child's set is sound.
                if name not in merged or len(values) < len(merged[name]):
                    merged[name] = values
        return merged
    if isinstance(c, Or):
        if not c.children:
            return {}  # never TRUE: nothing to promise
        maps = [required_equalities(child) for child in c.children]
        common = set(maps[0]).intersection(*maps[1:])
        return {name: frozenset().union(*(m[name] for m in maps)) for name in maps[0] if name in common}
    return {}


# -- matching -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Both sides of a match: each side's constraints on the other side's properties."""

    demand_side: Tri
    offer_side: Tri

    @property
    def matched(self) -> bool:
        """Only TRUE on both sides is a match; UNDEFINED is not."""
        return self.demand_side is _TRUE and self.offer_side is _TRUE


def match(
    demand_props: Props, demand_constraint: Constraint, offer_props: Props, offer_constraint: Constraint
) -> MatchResult:
    """Evaluate a demand and an offer against each other."""
    return MatchResult(
        demand_side=demand_constraint.evaluate(offer_props),
        offer_side=offer_constraint.evaluate(demand_props),
    )

