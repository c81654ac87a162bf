"""The one codec: typed messages to msgpack bytes and back, with strict shape checks."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, ClassVar, TypeVar

import msgpack

from protocol.errors import DecodeError

__all__ = ["Message", "register", "encode", "decode", "to_wire", "from_wire", "registered", "message_type"]

M = TypeVar("M", bound="Message")


class Message:
    """Base of every typed message; subclasses are frozen, slotted dataclasses.

    >>> @register
    ... @dataclasses.dataclass(frozen=True, slots=True)
    ... class Ping(Message):
    ...     TYPE = "doc.ping"
    ...     nonce: int
    """

    __slots__ = ()
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


# A converter takes a decoded msgpack value and returns the typed value, or raises DecodeError.
Converter = Callable[[Any, str], Any]

_REGISTRY: dict[str, type[Message]] = {}
_CONVERTERS: dict[type, Converter] = {}


def register(cls: type[M]) -> type[M]:
    """Add a message class to the registry under its TYPE tag (a class decorator)."""
    if not dataclasses.is_dataclass(cls) or not issubclass(cls, Message):
        raise TypeError(f"{cls.__name__} must be a dataclass deriving from Message")
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} has no TYPE tag")
    known = _REGISTRY.get(cls.TYPE)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"type tag {cls.TYPE!r} used by both {known.__qualname__} and {cls.__qualname__}")
    _REGISTRY[cls.TYPE] = cls
    return cls


def registered() -> dict[str, type[Message]]:
    """A copy of the tag → class registry."""
    return dict(_REGISTRY)


def message_type(tag: str) -> type[Message]:
    """The class registered under a tag.

    Raises:
        DecodeError: no class has that tag.
    """
    try:
        return _REGISTRY[tag]
    except KeyError:
        raise DecodeError(f"unknown message type {tag!r}") from None


def to_wire(value: Any) -> Any:
    """Turn a message (or a value inside one) into plain msgpack-able data."""
    if isinstance(value, Message):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def encode(msg: Message) -> bytes:
    """Encode a registered message as msgpack bytes: {"t": tag, "v": version, "b": fields}."""
    if type(msg).TYPE not in _REGISTRY:
        raise TypeError(f"{type(msg).__name__} is not a registered message")
    return msgpack.packb({"t": msg.TYPE, "v": msg.VERSION, "b": to_wire(msg)}, use_bin_type=True)


def decode(data: bytes, expect: type[M] | None = None) -> M:
    """Decode bytes made by encode() into a fully built message.

    Raises:
        DecodeError: malformed msgpack, an unknown tag, an unsupported version, a missing,
            extra or mistyped field, or (with expect) a message of another type.
    """
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"malformed msgpack: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != {"t", "v", "b"}:
        raise DecodeError("a message must be a map with keys t, v, b")
    tag, version, body = raw["t"], raw["v"], raw["b"]
    if not isinstance(tag, str):
        raise DecodeError("message type tag must be a string")
    cls = message_type(tag)
    if expect is not None and cls is not expect:
        raise DecodeError(f"expected a {expect.TYPE} message, got {tag}")
    if type(version) is not int or version != cls.VERSION:  # 1.0 and True both == 1
        raise DecodeError(f"unsupported version {version!r} of {tag} (this node speaks {cls.VERSION})")
    return from_wire(cls, body, tag)


def from_wire(cls: type[M], body: Any, where: str = "") -> M:
    """Build a message of class cls from its plain-data fields, checking every field."""
    return _converter(cls)(body, where or cls.TYPE)


def _converter(tp: Any) -> Converter:
    conv = _CONVERTERS.get(tp)
    if conv is None:
        conv = _build(tp)
        if isinstance(tp, type):
            _CONVERTERS[tp] = conv
    return conv


def _fail(where: str, what: str) -> typing.NoReturn:
    raise DecodeError(f"{where}: {what}")


def _build(tp: Any) -> Converter:
    if isinstance(tp, type) and issubclass(tp, Message):
        return _message_converter(tp)
    if tp is Any:
        return lambda v, where: _check_plain(v, where)
    if tp is bool:
        return _exact(bool, "a bool")
    if tp is int:
        def conv_int(v: Any, where: str) -> int:
            if type(v) is not int:
                _fail(where, f"expected an integer, got {type(v).__name__}")
            return v
        return conv_int
    if tp is float:
        def conv_float(v: Any, where: str) -> float:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            _fail(where, f"expected a number, got {type(v).__name__}")
        return conv_float
    if tp is str:
        return _exact(str, "a string")
    if tp is bytes:
        return _exact(bytes, "bytes")
    if tp is type(None):
        return _exact(type(None), "nil")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_converter(a) for a in args]
        def conv_union(v: Any, where: str) -> Any:
            if v is None and type(None) in args:
                return None
            errors = []
            for opt in options:
                try:
                    return opt(v, where)
                except DecodeError as exc:
                    errors.append(str(exc))
            _fail(where, f"no alternative of {tp} fits: {'; '.join(errors)}")
        return conv_union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0])
            def conv_var_tuple(v: Any, where: str) -> tuple:
                if not isinstance(v, list):
                    _fail(where, f"expected a list, got {type(v).__name__}")
                return tuple(item(x, f"{where}[{i}]") for i, x in enumerate(v))
            return conv_var_tuple
        items = [_converter(a) for a in args]
        def conv_fixed_tuple(v: Any, where: str) -> tuple:
            if not isinstance(v, list) or len(v) != len(items):
                _fail(where, f"expected a list of {len(items)} items")
            return tuple(c(x, f"{where}[{i}]") for i, (c, x) in enumerate(zip(items, v)))
        return conv_fixed_tuple
    if origin is dict:
        key_conv, val_conv = _converter(args[0]), _converter(args[1])
        def conv_dict(v: Any, where: str) -> dict:
            if not isinstance(v, dict):
                _fail(where, f"expected a map, got {type(v).__name__}")
            return {key_conv(k, f"{where} key"): val_conv(x, f"{where}.{k}") for k, x in v.items()}
        return conv_dict
    raise TypeError(f"the codec cannot carry fields of type {tp!r}")


def _exact(kind: type, name: str) -> Converter:
    def conv(v: Any, where: str) -> Any:
        if type(v) is not kind:
            _fail(where, f"expected {name}, got {type(v).__name__}")
        return v
    return conv


def _check_plain(v: Any, where: str, depth: int = 0) -> Any:
    """Accept plain JSON-like data (plus bytes) for fields typed Any."""
    if depth > 32:
        _fail(where, "nested too deeply")
    if v is None or type(v) in (bool, int, float, str, bytes):
        return v
    if isinstance(v, list):
        return [_check_plain(x, where, depth + 1) for x in v]
    if isinstance(v, dict):
        for k, x in v.items():
            _check_plain(x, f"{where}.{k}", depth + 1)
        return v
    _fail(where, f"unsupported value of type {type(v).__name__}")


def _message_converter(cls: type[Message]) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, f) for f in dataclasses.fields(cls)]
    names = {name for name, _ in fields}
    required = {
        name for name, f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    # Converters of nested types are resolved lazily so messages may refer to each other.
    convs: dict[str, Converter] = {}

    def conv(v: Any, where: str) -> Message:
        if not isinstance(v, dict):
            _fail(where, f"expected a map of fields, got {type(v).__name__}")
        keys = set(v)
        missing = required - keys
        if missing:
            _fail(where, f"missing field(s) {', '.join(sorted(missing))}")
        extra = keys - names
        if extra:
            _fail(where, f"unknown field(s) {', '.join(sorted(map(str, extra)))}")
        kwargs = {}
        for name, value in v.items():
            c = convs.get(name)
            if c is None:
                c = convs[name] = _converter(hints[name])
            kwargs[name] = c(value, f"{where}.{name}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # __post_init__ checks raise ValueError
            _fail(where, str(exc))

    return conv
