"""Signed envelopes: every message that leaves a node travels in one."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.codec import Message, decode, encode
from protocol.errors import DecodeError, MessageTooLargeError, ReplayError, SignatureError, StaleMessageError
from protocol.identity import Identity, is_node_id, keccak, recover_signer

__all__ = ["Envelope", "ReplayGuard", "seal", "open_frame", "WIRE_VERSION", "MSG_ID_BYTES"]

WIRE_VERSION = 1
MSG_ID_BYTES = 16
_DOMAIN = b"loam/envelope/1\x00"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message body signed by its sender, optionally addressed to one recipient."""

    sender: str
    recipient: str | None
    msg_id: bytes
    ts_ms: int
    body: bytes
    signature: bytes

    def canonical(self) -> bytes:
        """The bytes the signature covers."""
        return _canonical(self.sender, self.recipient, self.msg_id, self.ts_ms, self.body)

    def to_frame(self) -> bytes:
        """The envelope as one msgpack frame."""
        return msgpack.packb(
            [WIRE_VERSION, self.sender, self.recipient, self.msg_id, self.ts_ms, self.body, self.signature],
            use_bin_type=True,
        )

    def message(self) -> Message:
        """The decoded body.

        Raises:
            DecodeError: the body is not a registered message of the right shape.
        """
        return decode(self.body)


def _canonical(sender: str, recipient: str | None, msg_id: bytes, ts_ms: int, body: bytes) -> bytes:
    return _DOMAIN + msgpack.packb([WIRE_VERSION, sender, recipient, msg_id, ts_ms, body], use_bin_type=True)


def seal(identity: Identity, msg: Message | bytes, now_ms: int, recipient: str | None = None) -> Envelope:
    """Sign a message (or already-encoded body) as identity, for recipient or for anyone."""
    body = msg if isinstance(msg, bytes) else encode(msg)
    msg_id = os.urandom(MSG_ID_BYTES)
    digest = keccak(_canonical(identity.node_id, recipient, msg_id, now_ms, body))
    return Envelope(identity.node_id, recipient, msg_id, now_ms, body, identity.sign(digest))


def parse_frame(frame: bytes, max_bytes: int) -> Envelope:
    """Unpack a frame into an envelope without checking its signature.

    Raises:
        MessageTooLargeError: the frame is over max_bytes.
        DecodeError: it is not an envelope.
    """
    if len(frame) > max_bytes:
        raise MessageTooLargeError(f"frame of {len(frame)} bytes is over the cap of {max_bytes}")
    try:
        raw: Any = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception as exc:
        raise DecodeError(f"malformed envelope: {exc}") from None
    if not isinstance(raw, list) or len(raw) != 7:
        raise DecodeError("an envelope is a list of 7 items")
    version, sender, recipient, msg_id, ts_ms, body, signature = raw
    if version != WIRE_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported wire version {version!r}")
    if not is_node_id(sender):
        raise DecodeError("envelope sender is not a node id")
    if recipient is not None and not is_node_id(recipient):
        raise DecodeError("envelope recipient is not a node id")
    if type(msg_id) is not bytes or len(msg_id) != MSG_ID_BYTES:
        raise DecodeError(f"message id must be {MSG_ID_BYTES} bytes")
    if type(ts_ms) is not int:
        raise DecodeError("timestamp must be an integer")
    if type(body) is not bytes or type(signature) is not bytes:
        raise DecodeError("body and signature must be bytes")
    return Envelope(sender, recipient, msg_id, ts_ms, body, signature)


def verify(env: Envelope) -> None:
    """Check that the envelope was signed by its claimed sender.

    Raises:
        SignatureError: it was not.
    """
    signer = recover_signer(keccak(env.canonical()), env.signature)
    if signer != env.sender:
        raise SignatureError(f"envelope claims sender {env.sender} but was signed by {signer}")


def open_frame(
    frame: bytes,
    *,
    now_ms: int,
    max_bytes: int,
    skew_ms: int,
    replay: ReplayGuard | None,
) -> tuple[Envelope, Message]:
    """Parse, verify, time-check, replay-check and decode one frame.

    Raises:
        ProtocolError: any of the checks fails (the subclass says which).
    """
    env = parse_frame(frame, max_bytes)
    verify(env)
    if abs(env.ts_ms - now_ms) > skew_ms:
        raise StaleMessageError(f"message from {env.sender} is {(now_ms - env.ts_ms) / 1000:.1f} s off our clock")
    msg = env.message()
    if replay is not None:
        replay.check_and_remember(env.msg_id, now_ms)
    return env, msg


class ReplayGuard:
    """Remembers message ids for window_ms so a replayed frame is refused.

    Messages outside the skew window are refused by their timestamp, so the guard only needs
    ids while a frame can still be fresh: a frame first seen skew_ms before its timestamp stays
    fresh until skew_ms after it, so window_ms must be at least 2 * skew_ms. max_ids bounds
    memory under a flood.
    """

    def __init__(self, window_ms: int, max_ids: int = 500_000) -> None:
        self._window_ms = window_ms
        self._max_ids = max_ids
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, msg_id: bytes, now_ms: int) -> None:
        """Remember msg_id.

        Raises:
            ReplayError: msg_id was seen within the window.
        """
        self._expire(now_ms)
        if msg_id in self._seen:
            raise ReplayError(f"message id {msg_id.hex()} was seen before")
        self._seen[msg_id] = now_ms + self._window_ms
        if len(self._seen) > self._max_ids:
            self._seen.popitem(last=False)

    def _expire(self, now_ms: int) -> None:
        seen = self._seen
        while seen:
            first = next(iter(seen))
            # Kept through now_ms == expiry inclusive, as the skew check in open_frame is inclusive.
            if seen[first] >= now_ms:
                break
            del seen[first]
