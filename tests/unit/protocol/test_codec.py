"""The codec: every message round-trips, and anything else is refused with DecodeError alone."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import control, net
from protocol.codec import Message, decode, encode, from_wire, message_type, register, registered, to_wire
from protocol.errors import DecodeError, ProtocolError
from tests.unit.protocol.samples import ALICE, SAMPLES, protocol_messages, sample

TAGS = sorted(protocol_messages())
# A message without a sample fails test_every_registered_protocol_message_has_a_sample alone,
# rather than every test below that needs a sample.
SAMPLED = [t for t in TAGS if t in SAMPLES]
FUZZ = settings(database=None, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_HEARTBEAT_BODY = object()


def frame(t: Any = "net.heartbeat", v: Any = 1, b: Any = _HEARTBEAT_BODY, **extra: Any) -> bytes:
    """A top-level message map packed the way encode() packs it, with any parts swapped."""
    top = {"t": t, "v": v, "b": {"seq": 1} if b is _HEARTBEAT_BODY else b, **extra}
    return msgpack.packb(top, use_bin_type=True)


def body_of(tag: str) -> dict[str, Any]:
    """The plain-data fields of a message's sample, to mutate."""
    return copy.deepcopy(to_wire(sample(tag)))


def decode_body(tag: str, body: Any) -> Message:
    return decode(frame(tag, message_type(tag).VERSION, body))


# ---- samples and round trips ------------------------------------------------------------------


def test_every_registered_protocol_message_has_a_sample() -> None:
    missing = sorted(set(TAGS) - set(SAMPLES))
    assert not missing, f"no sample for {missing}: add a builder to SAMPLES in tests/unit/protocol/samples.py"


def test_every_sample_is_of_a_registered_protocol_message() -> None:
    unknown = sorted(set(SAMPLES) - set(TAGS))
    assert not unknown, f"samples for tags no protocol module registers: {unknown}"


@pytest.mark.parametrize("tag", SAMPLED)
def test_sample_is_an_instance_of_its_registered_class(tag: str) -> None:
    assert type(sample(tag)) is registered()[tag]


@pytest.mark.parametrize("tag", SAMPLED)
def test_sample_is_deterministic(tag: str) -> None:
    assert encode(sample(tag)) == encode(sample(tag))


@pytest.mark.parametrize("tag", SAMPLED)
def test_message_round_trips(tag: str) -> None:
    msg = sample(tag)
    data = encode(msg)
    back = decode(data)
    assert type(back) is type(msg)
    assert back == msg
    assert decode(data, expect=type(msg)) == msg
    assert encode(back) == data


@pytest.mark.parametrize("tag", SAMPLED)
def test_encoding_is_a_map_of_tag_version_body(tag: str) -> None:
    msg = sample(tag)
    raw = msgpack.unpackb(encode(msg), raw=False)
    assert raw == {"t": tag, "v": type(msg).VERSION, "b": to_wire(msg)}


@pytest.mark.parametrize("tag", SAMPLED)
def test_decoded_sequences_are_tuples(tag: str) -> None:
    """Lists on the wire become tuples, so decoded messages stay hashable and immutable."""

    def walk(value: Any) -> None:
        assert not isinstance(value, list), f"{tag} decoded a list: {value!r}"
        if isinstance(value, Message):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, tuple):
            for v in value:
                walk(v)

    walk(decode(encode(sample(tag))))


def test_decode_with_expect_refuses_another_type() -> None:
    with pytest.raises(DecodeError, match="expected a net.goodbye"):
        decode(encode(net.Heartbeat(seq=1)), expect=net.Goodbye)


def test_encode_refuses_an_unregistered_message() -> None:
    @dataclass(frozen=True, slots=True)
    class Unlisted(Message):
        TYPE: ClassVar[str] = "test.unlisted"
        n: int

    with pytest.raises(TypeError):
        encode(Unlisted(1))


def test_register_refuses_a_second_class_for_a_tag() -> None:
    @dataclass(frozen=True, slots=True)
    class Impostor(Message):
        TYPE: ClassVar[str] = net.Heartbeat.TYPE
        seq: int

    with pytest.raises(TypeError, match="used by both"):
        register(Impostor)
    assert registered()[net.Heartbeat.TYPE] is net.Heartbeat


def test_register_refuses_non_messages_and_missing_tags() -> None:
    @dataclass(frozen=True)
    class NotAMessage:
        TYPE: ClassVar[str] = "test.not_a_message"

    @dataclass(frozen=True, slots=True)
    class Untagged(Message):
        n: int

    with pytest.raises(TypeError):
        register(NotAMessage)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        register(Untagged)


def test_registered_returns_a_copy() -> None:
    reg = registered()
    reg.clear()
    assert registered()


def test_float_field_accepts_an_integer() -> None:
    body = body_of(control.GossipPublishRequest.TYPE)
    body["ttl_s"] = 30
    msg = decode_body(control.GossipPublishRequest.TYPE, body)
    assert msg.ttl_s == 30.0 and type(msg.ttl_s) is float


def test_non_finite_floats_survive() -> None:
    msg = control.GossipPublishRequest(topic="t", payload=b"", ttl_s=math.inf, subnet="")
    assert decode(encode(msg)) == msg


# ---- rejections -------------------------------------------------------------------------------


def _rejection_cases() -> list[Any]:
    hb = encode(net.Heartbeat(seq=1))
    cases: dict[str, bytes] = {
        # not msgpack, or not exactly one msgpack value
        "empty": b"",
        "reserved_byte": b"\xc1",
        "truncated_array": b"\x92\x01",
        "truncated_str": b"\xd9\x10abc",
        "truncated_message": hb[:-1],
        "trailing_garbage": hb + b"\x00",
        "two_messages": hb + hb,
        "integer_map_key": msgpack.packb({1: 2}),
        "ext_type": msgpack.packb(msgpack.ExtType(5, b"x")),
        # top level
        "top_level_list": msgpack.packb(["net.heartbeat", 1, {"seq": 1}]),
        "top_level_int": msgpack.packb(1),
        "top_level_str": msgpack.packb("net.heartbeat"),
        "top_level_nil": msgpack.packb(None),
        "top_level_missing_body": msgpack.packb({"t": "net.heartbeat", "v": 1}),
        "top_level_missing_tag": msgpack.packb({"v": 1, "b": {"seq": 1}}),
        "top_level_extra_key": frame(x=1),
        "top_level_bytes_keys": msgpack.packb({b"t": b"net.heartbeat", b"v": 1, b"b": {b"seq": 1}}, use_bin_type=True),
        # tag
        "unknown_tag": frame(t="net.no_such_message"),
        "empty_tag": frame(t=""),
        "tag_as_bytes": frame(t=b"net.heartbeat"),
        "tag_as_int": frame(t=1),
        "tag_as_nil": frame(t=None),
        # version
        "version_2": frame(v=2),
        "version_0": frame(v=0),
        "version_negative": frame(v=-1),
        "version_true": frame(v=True),
        "version_float": frame(v=1.0),
        "version_str": frame(v="1"),
        "version_nil": frame(v=None),
        # body shape
        "body_list": frame(b=[1]),
        "body_nil": frame(b=None),
        "body_int": frame(b=1),
        "missing_field": frame(b={}),
        "extra_field": frame(b={"seq": 1, "extra": 2}),
        "bytes_field_name": msgpack.packb({"t": "net.heartbeat", "v": 1, "b": {b"seq": 1}}, use_bin_type=True),
        # scalar types
        "bool_for_int": frame(b={"seq": True}),
        "float_for_int": frame(b={"seq": 1.0}),
        "str_for_int": frame(b={"seq": "1"}),
        "nil_for_int": frame(b={"seq": None}),
        "int_for_bytes": frame("net.routed", 1, {"target": ALICE.node_id, "ttl": 3, "frame": 1}),
        "str_for_bytes": frame("net.routed", 1, {"target": ALICE.node_id, "ttl": 3, "frame": "abc"}),
        "bytes_for_str": frame("net.goodbye", 1, {"reason": b"bye"}),
        "int_for_str": frame("net.goodbye", 1, {"reason": 5}),
        "int_for_bool": frame("net.hello", 1, {"record": to_wire(sample("net.peer_record")), "neighbour": 1}),
        "str_for_float": frame(
            "control.gossip_publish_request", 1, {"topic": "t", "payload": b"", "ttl_s": "1", "subnet": ""}
        ),
        "bool_for_float": frame(
            "control.gossip_publish_request", 1, {"topic": "t", "payload": b"", "ttl_s": True, "subnet": ""}
        ),
        "message_with_no_fields_given_one": frame("control.inbox_request", 1, {"x": 1}),
    }
    return [pytest.param(data, id=name) for name, data in cases.items()]


@pytest.mark.parametrize("data", _rejection_cases())
def test_malformed_input_is_refused_with_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def _mutations() -> list[Any]:
    """(tag, name, function mutating the sample body in place) for nested-shape rejections."""
    pr = "net.peer_record"

    def setter(*path: Any, value: Any) -> Any:
        def mutate(body: Any) -> None:
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        return mutate

    def deleter(*path: Any) -> Any:
        def mutate(body: Any) -> None:
            target = body
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
        return mutate

    cases = [
        # nested messages
        ("net.hello", "record_str", setter("record", value="record")),
        ("net.hello", "record_list", setter("record", value=[])),
        ("net.hello", "record_missing_field", deleter("record", "seq")),
        ("net.hello", "record_extra_field", setter("record", "extra", value=1)),
        ("net.hello", "record_wrong_nested_type", setter("record", "seq", value="7")),
        ("net.hello_ack", "peers_map", setter("peers", value={"a": 1})),
        ("net.hello_ack", "peers_str", setter("peers", value="peers")),
        ("net.hello_ack", "peer_item_int", setter("peers", 0, value=1)),
        ("net.hello_ack", "peer_item_missing_field", deleter("peers", 1, "curve_key")),
        ("net.gossip_push", "item_bad_withdrawn", setter("items", 0, "withdrawn", value=0)),
        ("control.net_status", "neighbour_bad_age", setter("neighbours", 0, "age_s", value="12")),
        ("control.gossip_list", "entry_nil", setter("entries", 0, value=None)),
        # maps
        ("control.net_counters", "counters_list", setter("counters", value=[1, 2])),
        ("control.net_counters", "counter_bool", setter("counters", "frames_in", value=True)),
        ("control.net_counters", "counter_float", setter("counters", "frames_in", value=1.5)),
        ("control.net_counters", "counter_bytes_key", setter("counters", b"frames_in", value=1)),
        # variable tuples
        (pr, "addresses_str", setter("addresses", value="tcp://198.51.100.7:7464")),
        (pr, "addresses_map", setter("addresses", value={})),
        (pr, "address_item_bytes", setter("addresses", 0, value=b"tcp://198.51.100.7:7464")),
        ("net.gossip_ids", "bucket_item_bool", setter("buckets", 0, value=False)),
        ("net.gossip_digest", "bucket_item_str", setter("buckets", 0, value="x")),
        # fixed tuples
        ("net.gossip_ids", "entry_too_short", setter("entries", 0, value=["ab" * 32])),
        ("net.gossip_ids", "entry_too_long", setter("entries", 0, value=["ab" * 32, True, 1])),
        ("net.gossip_ids", "entry_empty", setter("entries", 0, value=[])),
        ("net.gossip_ids", "entry_map", setter("entries", 0, value={"ab": True})),
        ("net.gossip_ids", "entry_str", setter("entries", 0, value="ab")),
        ("net.gossip_ids", "entry_wrong_item_type", setter("entries", 0, value=["ab" * 32, 1])),
        ("net.gossip_ids", "entry_swapped", setter("entries", 0, value=[True, "ab" * 32])),
        # __post_init__ validation, top level and nested
        (pr, "node_id_lowercase", setter("node_id", value=ALICE.node_id.lower())),
        (pr, "node_id_garbage", setter("node_id", value="alice")),
        (pr, "node_id_empty", setter("node_id", value="")),
        (pr, "curve_key_32_bytes", setter("curve_key", value=bytes(32))),
        (pr, "curve_key_41_bytes", setter("curve_key", value=bytes(41))),
        (pr, "address_not_tcp", setter("addresses", 0, value="udp://198.51.100.7:7464")),
        (pr, "address_too_long", setter("addresses", 0, value="tcp://" + "a" * 200)),
        (pr, "too_many_addresses", setter("addresses", value=["tcp://198.51.100.7:1"] * 9)),
        (pr, "too_many_subnets", setter("subnets", value=["s"] * 17)),
        (pr, "via_not_node_id", setter("via", value=["nobody"])),
        ("net.hello", "nested_record_bad_node_id", setter("record", "node_id", value="0x1234")),
        ("net.hello_ack", "nested_peer_bad_curve_key", setter("peers", 0, "curve_key", value=b"short")),
        ("net.gossip_digest", "digest_63_buckets", lambda b: b["buckets"].pop()),
        ("net.gossip_digest", "digest_65_buckets", lambda b: b["buckets"].append(b"")),
    ]
    return [pytest.param(tag, mutate, id=f"{tag}-{name}") for tag, name, mutate in cases]


@pytest.mark.parametrize(("tag", "mutate"), _mutations())
def test_wrongly_shaped_body_is_refused_with_decode_error(tag: str, mutate: Any) -> None:
    body = body_of(tag)
    decode_body(tag, body)  # the unmutated body is fine
    mutate(body)
    with pytest.raises(DecodeError):
        decode_body(tag, body)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


@pytest.mark.parametrize("tag", SAMPLED)
def test_each_missing_required_field_or_extra_field_is_refused(tag: str) -> None:
    body = body_of(tag)
    for f in dataclasses.fields(message_type(tag)):
        if _has_default(f):
            continue
        partial = {k: v for k, v in body.items() if k != f.name}
        with pytest.raises(DecodeError, match=f"missing field.*{f.name}"):
            decode_body(tag, partial)
    with pytest.raises(DecodeError, match="unknown field"):
        decode_body(tag, {**body, "zz_extra": 0})


def test_a_field_with_a_default_may_be_left_out() -> None:
    """The codec treats fields with defaults as optional; an unsigned record then fails verify()."""
    body = body_of("net.peer_record")
    del body["signature"]
    record = decode_body("net.peer_record", body)
    assert record.signature == b""
    assert record == dataclasses.replace(sample("net.peer_record"), signature=b"")


def test_decode_error_names_where_the_problem_is() -> None:
    body = body_of("net.hello_ack")
    body["peers"][1]["seq"] = "x"
    with pytest.raises(DecodeError, match=r"net\.hello_ack\.peers\[1\]\.seq"):
        decode_body("net.hello_ack", body)


def test_decode_error_is_a_protocol_error() -> None:
    assert issubclass(DecodeError, ProtocolError)


# ---- fields typed Any (no registered message has one yet; checked through from_wire) ------------


@dataclass(frozen=True, slots=True)
class _Blob(Message):
    """Not registered: only from_wire is used, so the registry stays as the protocol defines it."""

    TYPE: ClassVar[str] = "test.blob"
    value: Any


def _nested_list(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def _nested_map(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = {"k": v}
    return v


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, "s", b"b", [1, "a", [b"x"]], {"a": {"b": [1, None]}}, _nested_list(30), _nested_map(30)],
)
def test_any_field_accepts_plain_data(value: Any) -> None:
    assert from_wire(_Blob, {"value": value}).value == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(_nested_list(40), id="deep_list"),
        pytest.param(_nested_map(40), id="deep_map"),
        pytest.param([{"a": _nested_list(40)}], id="deep_mixed"),
        pytest.param(msgpack.ExtType(1, b"x"), id="ext_type"),
        pytest.param([msgpack.Timestamp(1)], id="nested_timestamp"),
        pytest.param({"a": msgpack.ExtType(1, b"x")}, id="ext_in_map"),
        pytest.param(object(), id="object"),
    ],
)
def test_any_field_refuses_deep_or_foreign_values(value: Any) -> None:
    with pytest.raises(DecodeError):
        from_wire(_Blob, {"value": value})


def test_any_field_refuses_deep_nesting_from_bytes() -> None:
    data = msgpack.packb({"value": _nested_list(100)})
    with pytest.raises(DecodeError, match="nested too deeply"):
        from_wire(_Blob, msgpack.unpackb(data))


def test_msgpack_nesting_beyond_the_unpacker_stack_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"\x91" * 100_000 + b"\x00")


# ---- fuzzing ----------------------------------------------------------------------------------


def _decode_or_refuse(data: bytes) -> None:
    """decode() either builds a message that re-encodes stably or raises DecodeError; nothing else."""
    try:
        msg = decode(data)
    except DecodeError:
        return
    assert type(msg).TYPE in registered()
    again = encode(msg)
    assert encode(decode(again)) == again


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(st.sampled_from(SAMPLED), st.binary(min_size=1, max_size=64), st.integers(0, 10_000))
def test_corrupted_encodings_only_raise_decode_error(tag: str, patch: bytes, at: int) -> None:
    data = bytearray(encode(sample(tag)))
    at %= len(data)
    data[at : at + len(patch)] = patch
    _decode_or_refuse(bytes(data))


@FUZZ
@given(st.sampled_from(SAMPLED), st.integers(0, 10_000))
def test_truncated_encodings_only_raise_decode_error(tag: str, cut: int) -> None:
    data = encode(sample(tag))
    _decode_or_refuse(data[: cut % len(data)])


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_plain = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(_plain)
def test_random_msgpack_values_only_raise_decode_error(value: Any) -> None:
    _decode_or_refuse(msgpack.packb(value, use_bin_type=True))


@FUZZ
@given(
    st.sampled_from(SAMPLED) | st.text(max_size=30),
    st.sampled_from([1, 0, 2, True, 1.0]) | _scalars,
    _plain,
)
def test_random_top_level_maps_only_raise_decode_error(tag: Any, version: Any, body: Any) -> None:
    _decode_or_refuse(frame(tag, version, body))


def _walk_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path (of keys and indexes) into a plain-data body."""
    out = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _walk_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _walk_paths(v, path + (i,))
    return out


@FUZZ
@given(st.data())
def test_bodies_with_one_value_replaced_only_raise_decode_error(data: st.DataObject) -> None:
    tag = data.draw(st.sampled_from(SAMPLED))
    body = body_of(tag)
    paths = _walk_paths(body)
    if paths:
        path = data.draw(st.sampled_from(paths))
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(_plain)
    _decode_or_refuse(frame(tag, message_type(tag).VERSION, body))

