"""Reading constraints rather than evaluating them: why a match fails, what a constraint needs, two-way matches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from protocol.constraints import (
    _ABSENT,
    _FALSE,
    _TRUE,
    _UNDEFINED,
    TYPE_SUFFIXES,
    And,
    Compare,
    Constraint,
    Empty,
    Not,
    Or,
    Present,
    Props,
    Tri,
    _convert_property,
    parse,
)

__all__ = ["Failure", "MatchResult", "explain", "referenced_properties", "required_equalities", "match"]

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

