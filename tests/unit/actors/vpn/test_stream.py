"""Tunnel streams: bytes arrive once and in order whatever the messages do; lost chunks are sent again."""

from __future__ import annotations

import random

import pytest

from actors.vpn.stream import Inbound, Outbound
from protocol.codec import decode, encode
from protocol.errors import DecodeError
from protocol.vpn import MAX_CHUNK_BYTES, VpnAck, VpnClose, VpnData, VpnOpen


def test_a_stream_survives_loss_duplicates_and_reordering() -> None:
    rng = random.Random(7)
    payload = rng.randbytes(300_000)
    out, inb = Outbound(chunk_bytes=1000, resend_ms=100, window=64), Inbound(window=64)
    wire: list[tuple[int, bytes]] = []
    now = 0
    for start in range(0, len(payload), 7000):
        wire += out.push(payload[start : start + 7000], now)
    got = bytearray()
    rounds = 0
    while not out.all_acked:
        rounds += 1
        assert rounds < 1000, "the stream never completed"
        rng.shuffle(wire)
        delivered = [m for m in wire if rng.random() > 0.3]  # 30 % lost
        delivered += delivered[: len(delivered) // 5]  # and some twice
        wire = []
        for seq, data in delivered:
            for piece in inb.accept(seq, data):
                got += piece
        if rng.random() > 0.2:  # acks get lost too
            out.ack(inb.delivered)
        now += 100
        wire += out.due(now) + out.take(now)
    assert bytes(got) == payload
    assert inb.delivered == out.next_seq == 300
    assert out.in_flight == 0 and inb.waiting == 0


def test_chunks_are_cut_at_the_chunk_size_and_numbered_from_zero() -> None:
    out = Outbound(chunk_bytes=4)
    assert out.push(b"abcdefghij", 0) == [(0, b"abcd"), (1, b"efgh"), (2, b"ij")]
    assert out.push(b"k", 0) == [(3, b"k")]
    assert out.in_flight == 4
    assert out.ack(2) == 2 and out.acked == 2 and out.in_flight == 2
    assert out.ack(1) == 0  # an old ack changes nothing
    assert out.ack(10**6) == 2 and out.acked == 4  # beyond what was sent: clamped
    with pytest.raises(ValueError):
        Outbound(chunk_bytes=MAX_CHUNK_BYTES + 1)


def test_the_sender_runs_at_most_a_window_ahead_of_what_the_consumer_took() -> None:
    out = Outbound(chunk_bytes=10, window=4)
    assert [seq for seq, _ in out.push(b"x" * 100, 0)] == [0, 1, 2, 3]  # 10 chunks queued, 4 go
    assert out.queued_bytes == 60 and out.take(0) == []
    out.ack(4, consumed=1)  # all four delivered, one taken by the consumer: one more may go
    assert out.all_acked and not out.idle
    assert [seq for seq, _ in out.take(0)] == [4]
    out.ack(5, consumed=0)  # consumption never goes back
    assert out.consumed == 1 and out.take(0) == []
    out.ack(5)  # without a consumed figure: as delivered
    assert [seq for seq, _ in out.take(0)] == [5, 6, 7, 8]
    out.ack(10**6, consumed=10**6)  # beyond what was sent: clamped
    assert out.consumed == 9 and [seq for seq, _ in out.take(0)] == [9]
    out.ack(10)
    assert out.idle and out.queued_bytes == 0


def test_resends_wait_for_the_resend_time_and_restart_its_clock() -> None:
    out = Outbound(chunk_bytes=10, resend_ms=1000)
    out.push(b"x" * 25, now_ms=0)
    assert out.due(999) == []
    assert [seq for seq, _ in out.due(1000)] == [0, 1, 2]
    assert out.due(1500) == []
    out.ack(2)
    assert [seq for seq, _ in out.due(2000)] == [2]


def test_the_receiver_drops_what_lies_beyond_its_window_and_ignores_duplicates() -> None:
    inb = Inbound(window=4)
    assert inb.accept(4, b"far") == []  # beyond the window: dropped, the sender sends it again
    assert inb.waiting == 0
    assert inb.accept(1, b"b") == [] and inb.waiting == 1
    assert inb.accept(1, b"b") == []  # duplicate
    assert inb.accept(0, b"a") == [b"a", b"b"] and inb.delivered == 2
    assert inb.accept(0, b"a") == []  # already delivered


def test_tunnel_messages_round_trip_and_bad_ones_are_refused() -> None:
    t = "ab" * 16
    for msg in (VpnOpen(t, "net-1", "192.168.0.2", 80), VpnData(t, 5, b"\x00\xff"), VpnAck(t, 6, 5), VpnClose(t, 7, "bye")):
        assert decode(encode(msg)) == msg
    with pytest.raises(ValueError):
        VpnOpen("nope", "n", "1.2.3.4", 80)
    with pytest.raises(ValueError):
        VpnOpen(t, "n", "1.2.3.4", 0)
    with pytest.raises(ValueError):
        VpnOpen(t, "bad id with spaces", "1.2.3.4", 80)
    with pytest.raises(ValueError):
        VpnData(t, 0, b"")
    with pytest.raises(ValueError):
        VpnData(t, 0, b"x" * (MAX_CHUNK_BYTES + 1))
    with pytest.raises(ValueError):
        VpnAck(t, -1, 0)
    with pytest.raises(ValueError):
        VpnAck(t, 3, 4)
    forged = encode(VpnData(t, 0, b"x")).replace(b"\xc4\x01x", b"\xc4\x00", 1)  # the data made empty on the wire
    assert forged != encode(VpnData(t, 0, b"x"))
    with pytest.raises(DecodeError):
        decode(forged)
