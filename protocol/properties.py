"""Golem property maps: flattening nested JSON to dotted keys, the inverse, and validation of maps from the network."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from protocol.errors import PropertyError

__all__ = [
    "TAG_KEY",
    "MAX_PROPERTIES",
    "MAX_KEY_CHARS",
    "MAX_ENCODED_BYTES",
    "MAX_NESTING",
    "flatten",
    "unflatten",
    "validate_properties",
]

# A key "@tag" inside an object gives the object's own key a value:
# {"model": {"@tag": "linear", "linear": {...}}} -> model=linear, model.linear.*=...
TAG_KEY = "@tag"

MAX_PROPERTIES = 1000
MAX_KEY_CHARS = 256
MAX_ENCODED_BYTES = 64 * 1024
# Deeper than any real property map; it keeps hostile input away from the recursion limit.
MAX_NESTING = 32


def flatten(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Nested JSON objects as one map of dotted keys; already-flat keys pass through.

    >>> flatten({"golem": {"inf.mem.gib": 4, "runtime": {"@tag": "vm", "version": "1.0"}}})
    {'golem.inf.mem.gib': 4, 'golem.runtime': 'vm', 'golem.runtime.version': '1.0'}

    Lists are values, not flattened. Empty objects vanish (they carry no property).
    Values are copied: lists in the result are new lists.

    Raises:
        PropertyError: a non-string or empty key (or key segment), a value that is not
            JSON (str, bool, int, finite float, None, or lists of those), a misplaced
            "@tag", or the same flat key given twice with different values.
    """
    if not isinstance(obj, Mapping):
        raise PropertyError(f"properties must be a JSON object, not {_type_name(obj)}")
    out: dict[str, Any] = {}
    _flatten_into(out, "", obj, 1)
    return out


def unflatten(props: Mapping[str, Any]) -> dict[str, Any]:
    """Nested JSON objects from a flat map; a key that is both a value and a prefix gets "@tag".

    >>> unflatten({"a.b": 1, "a": "x"})
    {'a': {'b': 1, '@tag': 'x'}}

    ``flatten(unflatten(p)) == p`` for every flat map ``p`` that ``flatten`` would produce.

    Raises:
        PropertyError: a bad key or a value that is not JSON, as for ``flatten``.
    """
    if not isinstance(props, Mapping):
        raise PropertyError(f"properties must be a JSON object, not {_type_name(props)}")
    root: dict[str, Any] = {}
    # Objects we build, as opposed to values: a value is never a dict, but be explicit.
    built: set[int] = {id(root)}
    for key, value in props.items():
        _check_key(key)
        value = _check_value(key, value, 1)
        node = root
        *parents, last = key.split(".")
        for segment in parents:
            child = node.get(segment, _ABSENT)
            if child is _ABSENT or id(child) not in built:
                new: dict[str, Any] = {} if child is _ABSENT else {TAG_KEY: child}
                built.add(id(new))
                node[segment] = new
                child = new
            node = child
        existing = node.get(last, _ABSENT)
        if existing is not _ABSENT and id(existing) in built:
            existing[TAG_KEY] = value
        else:
            node[last] = value
    return root


def validate_properties(props: Mapping[str, Any]) -> dict[str, Any]:
    """A property map from the network or REST, checked and flattened, as a new flat dict.

    Nested objects are flattened as by ``flatten``. The flat result must have at most
    ``MAX_PROPERTIES`` keys of at most ``MAX_KEY_CHARS`` characters, and take at most
    ``MAX_ENCODED_BYTES`` as compact UTF-8 JSON.

    Raises:
        PropertyError: anything ``flatten`` refuses, or a map over one of the caps.
    """
    flat = flatten(props)
    if len(flat) > MAX_PROPERTIES:
        raise PropertyError(f"{len(flat)} properties, over the limit of {MAX_PROPERTIES}")
    for key in flat:
        if len(key) > MAX_KEY_CHARS:
            raise PropertyError(f"property {key[:40]!r}... has a {len(key)}-character key, over {MAX_KEY_CHARS}")
    size = len(json.dumps(flat, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > MAX_ENCODED_BYTES:
        raise PropertyError(f"properties take {size} bytes as JSON, over the limit of {MAX_ENCODED_BYTES}")
    return flat


_ABSENT: Any = object()


def _flatten_into(out: dict[str, Any], prefix: str, obj: Mapping[Any, Any], depth: int) -> None:
    if depth > MAX_NESTING:
        raise PropertyError(f"property {prefix!r}: objects nested deeper than {MAX_NESTING} levels")
    for key, value in obj.items():
        if key == TAG_KEY:
            if not prefix:
                raise PropertyError('"@tag" at the top level: it must name the value of an enclosing key')
            if isinstance(value, Mapping):
                raise PropertyError(f'property {prefix!r}: "@tag" must be a value, not an object')
            _put(out, prefix, _check_value(prefix, value, depth))
            continue
        _check_key(key, prefix)
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            _flatten_into(out, full, value, depth + 1)
        else:
            _put(out, full, _check_value(full, value, depth))


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if key in out and not _same(out[key], value):
        raise PropertyError(f"property {key!r} given twice with different values: {out[key]!r} and {value!r}")
    out[key] = value


def _same(a: Any, b: Any) -> bool:
    # Strict: 1, 1.0 and True are three different JSON values.
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _check_key(key: Any, prefix: str = "") -> None:
    where = f" under {prefix!r}" if prefix else ""
    if not isinstance(key, str):
        raise PropertyError(f"property key {key!r}{where} is {_type_name(key)}, not a string")
    if key == "":
        raise PropertyError(f"empty property key{where}")
    for segment in key.split("."):
        if segment == "":
            raise PropertyError(f"property {key!r}{where} has an empty segment")
        if segment == TAG_KEY:
            raise PropertyError(f'property {key!r}{where}: "@tag" is only valid as a whole key')


def _check_value(key: str, value: Any, depth: int) -> Any:
    """The value as plain JSON data (tuples become lists), or PropertyError naming ``key``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PropertyError(f"property {key!r} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, (list, tuple)):
        if depth > MAX_NESTING:
            raise PropertyError(f"property {key!r}: lists nested deeper than {MAX_NESTING} levels")
        return [_check_value(key, item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        raise PropertyError(f"property {key!r}: an object is not a property value")
    raise PropertyError(f"property {key!r} is {_type_name(value)}, not a JSON value")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
