"""What kind of JSON value something is, in words, for error messages ("must be a string, not a number")."""

from __future__ import annotations

from typing import Any

__all__ = ["json_type"]


def json_type(value: Any, *, array: str = "an array") -> str:
    """The JSON kind of a decoded value: "null", "a boolean", "a number", "a string", an array, "an object".

    >>> json_type([1]), json_type([1], array="a list"), json_type(True)
    ('an array', 'a list', 'a boolean')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return array
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
