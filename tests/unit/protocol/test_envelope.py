"""Signed envelopes: sealing, opening, and every way a frame is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import encode
from protocol.envelope import MSG_ID_BYTES, WIRE_VERSION, Envelope, ReplayGuard, open_frame, seal
from protocol.errors import (
    DecodeError,
    MessageTooLargeError,
    ProtocolError,
    ReplayError,
    SignatureError,
    StaleMessageError,
)
from protocol.identity import Identity, keccak
from protocol.net import Goodbye, Heartbeat
from tests.unit.protocol.samples import ALICE, BOB, MALLORY, T0_MS, sample

NOW_MS = T0_MS
SKEW_MS = 30_000
MAX_BYTES = 64 * 1024
FUZZ = settings(database=None, max_examples=100, deadline=None)


def open_(frame: bytes, *, now_ms: int = NOW_MS, max_bytes: int = MAX_BYTES, replay: ReplayGuard | None = None) -> Any:
    return open_frame(frame, now_ms=now_ms, max_bytes=max_bytes, skew_ms=SKEW_MS, replay=replay)


def fields_of(frame: bytes) -> list[Any]:
    return msgpack.unpackb(frame, raw=False)


def repack(items: list[Any]) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


def resigned(env: Envelope, signer: Identity, **changes: Any) -> Envelope:
    """env with changes, signed by signer over the changed content."""
    env = dataclasses.replace(env, **changes)
    return dataclasses.replace(env, signature=signer.sign(keccak(env.canonical())))


def with_item(frame: bytes, index: int, value: Any) -> bytes:
    items = fields_of(frame)
    items[index] = value
    return repack(items)


# The positions of an envelope's parts in its frame.
VERSION, SENDER, RECIPIENT, MSG_ID, TS, BODY, SIGNATURE = range(7)


# ---- round trips ------------------------------------------------------------------------------


def test_sealed_message_opens_to_the_same_envelope_and_message() -> None:
    msg = Heartbeat(seq=5)
    env = seal(ALICE, msg, NOW_MS)
    opened, back = open_(env.to_frame(), replay=ReplayGuard(2 * SKEW_MS))
    assert opened == env
    assert back == msg
    assert opened.sender == ALICE.node_id
    assert opened.ts_ms == NOW_MS
    assert opened.body == encode(msg)
    assert len(opened.msg_id) == MSG_ID_BYTES


@pytest.mark.parametrize("tag", ["net.hello_ack", "net.gossip_push", "control.net_status"])
def test_nested_messages_travel_in_envelopes(tag: str) -> None:
    msg = sample(tag)
    _, back = open_(seal(BOB, msg, NOW_MS).to_frame())
    assert back == msg


def test_an_encoded_body_can_be_sealed_as_is() -> None:
    body = encode(Goodbye(reason="bye"))
    env = seal(ALICE, body, NOW_MS)
    assert env.body == body
    assert open_(env.to_frame())[1] == Goodbye(reason="bye")


def test_recipient_is_preserved() -> None:
    env, _ = open_(seal(ALICE, Heartbeat(seq=1), NOW_MS, recipient=BOB.node_id).to_frame())
    assert env.recipient == BOB.node_id


def test_broadcast_has_no_recipient() -> None:
    env, _ = open_(seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame())
    assert env.recipient is None


def test_each_seal_gets_a_fresh_message_id() -> None:
    ids = {seal(ALICE, Heartbeat(seq=1), NOW_MS).msg_id for _ in range(50)}
    assert len(ids) == 50


def test_frame_is_the_documented_list() -> None:
    env = seal(ALICE, Heartbeat(seq=1), NOW_MS, recipient=BOB.node_id)
    assert fields_of(env.to_frame()) == [
        WIRE_VERSION, ALICE.node_id, BOB.node_id, env.msg_id, NOW_MS, env.body, env.signature
    ]


def test_message_of_envelope_decodes_its_body() -> None:
    assert seal(ALICE, Heartbeat(seq=9), NOW_MS).message() == Heartbeat(seq=9)


# ---- forgery and tampering --------------------------------------------------------------------


def test_tampered_body_is_refused() -> None:
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame()
    with pytest.raises(SignatureError):
        open_(with_item(frame, BODY, encode(Heartbeat(seq=2))))


def test_sender_swapped_on_a_sealed_frame_is_refused() -> None:
    frame = seal(MALLORY, Heartbeat(seq=1), NOW_MS).to_frame()
    with pytest.raises(SignatureError):
        open_(with_item(frame, SENDER, ALICE.node_id))


def test_claiming_another_node_id_with_own_valid_signature_is_refused() -> None:
    """Mallory signs a well-formed envelope that names Alice as its sender."""
    forged = resigned(seal(MALLORY, Heartbeat(seq=1), NOW_MS), MALLORY, sender=ALICE.node_id)
    with pytest.raises(SignatureError, match=f"claims sender {ALICE.node_id} but was signed by {MALLORY.node_id}"):
        open_(forged.to_frame())


def test_signature_moved_to_another_envelope_is_refused() -> None:
    a = seal(ALICE, Heartbeat(seq=1), NOW_MS)
    b = seal(ALICE, Heartbeat(seq=2), NOW_MS)
    with pytest.raises(SignatureError):
        open_(dataclasses.replace(b, signature=a.signature).to_frame())


@pytest.mark.parametrize(
    ("index", "value"),
    [
        pytest.param(RECIPIENT, BOB.node_id, id="recipient_added"),
        pytest.param(MSG_ID, bytes(MSG_ID_BYTES), id="msg_id"),
        pytest.param(TS, NOW_MS + 1, id="timestamp"),
    ],
)
def test_tampered_signed_fields_are_refused(index: int, value: Any) -> None:
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame()
    with pytest.raises(SignatureError):
        open_(with_item(frame, index, value))


def test_recipient_removed_is_refused() -> None:
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS, recipient=BOB.node_id).to_frame()
    with pytest.raises(SignatureError):
        open_(with_item(frame, RECIPIENT, None))


@pytest.mark.parametrize("position", [0, 17, 40, 63])
def test_flipped_signature_byte_is_refused(position: int) -> None:
    env = seal(ALICE, Heartbeat(seq=1), NOW_MS)
    sig = bytearray(env.signature)
    sig[position] ^= 0x01
    with pytest.raises(SignatureError):
        open_(dataclasses.replace(env, signature=bytes(sig)).to_frame())


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(b"", id="empty"),
        pytest.param("truncated", id="truncated_64"),
        pytest.param("extended", id="extended_66"),
        pytest.param("bad_recovery_id", id="recovery_id_4"),
        pytest.param(bytes(65), id="all_zero"),
    ],
)
def test_malformed_signature_is_refused(signature: Any) -> None:
    env = seal(ALICE, Heartbeat(seq=1), NOW_MS)
    sig = {
        "truncated": env.signature[:-1],
        "extended": env.signature + b"\x00",
        "bad_recovery_id": env.signature[:64] + b"\x04",
    }.get(signature, signature)
    with pytest.raises(SignatureError):
        open_(dataclasses.replace(env, signature=sig).to_frame())


@FUZZ
@given(st.binary(min_size=65, max_size=65))
def test_random_signatures_are_refused(sig: bytes) -> None:
    env = seal(ALICE, Heartbeat(seq=1), NOW_MS)
    with pytest.raises(SignatureError):
        open_(dataclasses.replace(env, signature=sig).to_frame())


def test_validly_signed_body_that_is_no_message_is_a_decode_error() -> None:
    frame = seal(ALICE, b"\x93\x01\x02\x03", NOW_MS).to_frame()
    with pytest.raises(DecodeError):
        open_(frame)


# ---- frame shape ------------------------------------------------------------------------------


def _shape_cases() -> list[Any]:
    good = seal(ALICE, Heartbeat(seq=1), NOW_MS, recipient=BOB.node_id).to_frame()
    items = fields_of(good)
    cases = {
        "garbage": b"\xc1",
        "empty": b"",
        "trailing_garbage": good + b"\x00",
        "truncated": good[:-3],
        "map": msgpack.packb({"v": 1}),
        "six_items": repack(items[:6]),
        "eight_items": repack(items + [b""]),
        "wire_version_2": with_item(good, VERSION, 2),
        "wire_version_0": with_item(good, VERSION, 0),
        "wire_version_true": with_item(good, VERSION, True),
        "wire_version_float": with_item(good, VERSION, 1.0),
        "wire_version_str": with_item(good, VERSION, "1"),
        "sender_lowercase": with_item(good, SENDER, ALICE.node_id.lower()),
        "sender_garbage": with_item(good, SENDER, "alice"),
        "sender_bytes": with_item(good, SENDER, bytes.fromhex(ALICE.node_id[2:])),
        "recipient_lowercase": with_item(good, RECIPIENT, BOB.node_id.lower()),
        "recipient_empty": with_item(good, RECIPIENT, ""),
        "msg_id_short": with_item(good, MSG_ID, bytes(MSG_ID_BYTES - 1)),
        "msg_id_long": with_item(good, MSG_ID, bytes(MSG_ID_BYTES + 1)),
        "msg_id_str": with_item(good, MSG_ID, "0" * MSG_ID_BYTES),
        "ts_float": with_item(good, TS, float(NOW_MS)),
        "ts_bool": with_item(good, TS, True),
        "ts_str": with_item(good, TS, str(NOW_MS)),
        "body_str": with_item(good, BODY, "body"),
        "signature_str": with_item(good, SIGNATURE, "sig"),
        "signature_nil": with_item(good, SIGNATURE, None),
    }
    return [pytest.param(frame, id=name) for name, frame in cases.items()]


@pytest.mark.parametrize("frame", _shape_cases())
def test_frame_of_the_wrong_shape_is_a_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        open_(frame)


@FUZZ
@given(st.binary(max_size=300))
def test_random_frames_only_raise_protocol_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        open_(frame)


# ---- size -------------------------------------------------------------------------------------


def test_frame_over_the_cap_is_refused_before_parsing() -> None:
    frame = seal(ALICE, Goodbye(reason="x" * 1000), NOW_MS).to_frame()
    with pytest.raises(MessageTooLargeError):
        open_(frame, max_bytes=len(frame) - 1)
    with pytest.raises(MessageTooLargeError):
        open_(b"\xc1" * 101, max_bytes=100)  # garbage, but too large is what is reported


def test_frame_exactly_at_the_cap_is_accepted() -> None:
    frame = seal(ALICE, Goodbye(reason="x" * 1000), NOW_MS).to_frame()
    assert open_(frame, max_bytes=len(frame))[1] == Goodbye(reason="x" * 1000)


# ---- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [SKEW_MS + 1, -(SKEW_MS + 1), 10 * SKEW_MS, -10 * SKEW_MS])
def test_message_outside_the_skew_window_is_stale(offset_ms: int) -> None:
    """Positive offsets: the sender's clock is ahead of ours; negative: the message is old."""
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS + offset_ms).to_frame()
    with pytest.raises(StaleMessageError):
        open_(frame)


@pytest.mark.parametrize("offset_ms", [SKEW_MS, -SKEW_MS, 0])
def test_message_at_the_edge_of_the_skew_window_is_accepted(offset_ms: int) -> None:
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS + offset_ms).to_frame()
    assert open_(frame)[1] == Heartbeat(seq=1)


def test_forged_stale_frame_is_a_signature_error_not_stale() -> None:
    """The signature is checked first, so a forger learns nothing from the clock check."""
    env = seal(MALLORY, Heartbeat(seq=1), NOW_MS - 10 * SKEW_MS)
    with pytest.raises(SignatureError):
        open_(dataclasses.replace(env, sender=ALICE.node_id).to_frame())


# ---- replay -----------------------------------------------------------------------------------


def test_replayed_frame_is_refused() -> None:
    guard = ReplayGuard(2 * SKEW_MS)
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame()
    open_(frame, replay=guard)
    with pytest.raises(ReplayError):
        open_(frame, now_ms=NOW_MS + 1, replay=guard)


def test_without_a_guard_a_frame_can_be_opened_twice() -> None:
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame()
    open_(frame)
    open_(frame)


def test_replay_is_refused_for_as_long_as_the_frame_is_fresh() -> None:
    """With a window of twice the skew, a frame first seen at the earliest moment it is fresh
    is still refused at the last moment it is fresh."""
    guard = ReplayGuard(2 * SKEW_MS)
    frame = seal(ALICE, Heartbeat(seq=1), NOW_MS).to_frame()
    open_(frame, now_ms=NOW_MS - SKEW_MS, replay=guard)
    for now in (NOW_MS - SKEW_MS, NOW_MS, NOW_MS + SKEW_MS - 1, NOW_MS + SKEW_MS):
        with pytest.raises(ReplayError):
            open_(frame, now_ms=now, replay=guard)
    with pytest.raises(StaleMessageError):
        open_(frame, now_ms=NOW_MS + SKEW_MS + 1, replay=guard)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda env: dataclasses.replace(env, body=encode(Heartbeat(seq=666))), id="bad_signature"),
        pytest.param(lambda env: resigned(env, MALLORY), id="signed_by_another"),
        pytest.param(lambda env: resigned(env, ALICE, body=b"\x00"), id="undecodable_body"),
        pytest.param(lambda env: resigned(env, ALICE, ts_ms=NOW_MS - 2 * SKEW_MS), id="stale"),
    ],
)
def test_refused_frame_does_not_burn_its_message_id(forge: Any) -> None:
    """A copy that fails a check must not make the genuine frame with the same id a replay."""
    guard = ReplayGuard(2 * SKEW_MS)
    genuine = seal(ALICE, Heartbeat(seq=1), NOW_MS)
    bad = forge(genuine)
    assert bad.msg_id == genuine.msg_id
    with pytest.raises(ProtocolError):
        open_(bad.to_frame(), replay=guard)
    assert len(guard) == 0
    assert open_(genuine.to_frame(), replay=guard)[1] == Heartbeat(seq=1)


def test_stale_frame_is_not_remembered() -> None:
    guard = ReplayGuard(2 * SKEW_MS)
    with pytest.raises(StaleMessageError):
        open_(seal(ALICE, Heartbeat(seq=1), NOW_MS - 2 * SKEW_MS).to_frame(), replay=guard)
    assert len(guard) == 0


@pytest.mark.parametrize("later_ms", [0, 1, 999, 1_000])
def test_guard_refuses_an_id_within_its_window(later_ms: int) -> None:
    """The window is inclusive at its end, like the skew check."""
    guard = ReplayGuard(window_ms=1_000)
    guard.check_and_remember(b"a" * 16, now_ms=0)
    with pytest.raises(ReplayError, match=(b"a" * 16).hex()):
        guard.check_and_remember(b"a" * 16, now_ms=later_ms)


def test_guard_forgets_an_id_after_its_window() -> None:
    guard = ReplayGuard(window_ms=1_000)
    guard.check_and_remember(b"a" * 16, now_ms=0)
    guard.check_and_remember(b"b" * 16, now_ms=500)
    guard.check_and_remember(b"a" * 16, now_ms=1_001)  # forgotten, so accepted again
    with pytest.raises(ReplayError):
        guard.check_and_remember(b"b" * 16, now_ms=1_001)
    guard.check_and_remember(b"b" * 16, now_ms=1_501)


def test_guard_memory_shrinks_as_ids_expire() -> None:
    guard = ReplayGuard(window_ms=1_000)
    for i in range(10):
        guard.check_and_remember(bytes([i]) * 16, now_ms=i * 100)
    assert len(guard) == 10
    guard.check_and_remember(b"z" * 16, now_ms=1_450)  # ids seen at 0..400 expire, 500 stays
    assert len(guard) == 6


def test_guard_memory_is_bounded_by_max_ids() -> None:
    guard = ReplayGuard(window_ms=10**9, max_ids=3)
    ids = [bytes([i]) * 16 for i in range(10)]
    for i, msg_id in enumerate(ids):
        guard.check_and_remember(msg_id, now_ms=i)
        assert len(guard) == min(i + 1, 3)
    for msg_id in ids[-3:]:  # the newest are still refused
        with pytest.raises(ReplayError):
            guard.check_and_remember(msg_id, now_ms=20)
    guard.check_and_remember(ids[0], now_ms=20)  # the oldest were dropped to make room
    assert len(guard) == 3

