"""Hostile peers against real node processes: every attack is counted and the node keeps serving.

The attacker is a bare ZeroMQ DEALER with a CURVE key of its own, speaking the wire protocol
by hand: it can seal any envelope, alter it after sealing, or send bytes that are no envelope
at all. After each attack the node must still answer its control channel, accept a new
legitimate node and gossip to it.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterator

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from node.settings import load_settings, parse_contact
from protocol.codec import Message, decode, encode
from protocol.envelope import MSG_ID_BYTES, Envelope, parse_frame, seal
from protocol.identity import Identity, keccak
from protocol.net import GossipItem, GossipPush, Heartbeat, Hello, HelloAck, PeerExchange, PeerRecord
from tests.integration.harness import NodeProcess, Testnet, wait_for

pytestmark = pytest.mark.integration

SUBNET = "public"  # the subnet NodeProcess gives its nodes


def _now_ms() -> int:
    return int(time.time() * 1000)


def record_of(identity: Identity, *, addresses: tuple[str, ...] = (), seq: int | None = None) -> PeerRecord:
    """A peer record of identity, signed by it."""
    seq = _now_ms() if seq is None else seq
    return PeerRecord(identity.node_id, identity.curve_public, addresses, (SUBNET,), (), seq).signed(identity)


def item_of(identity: Identity, topic: str, payload: bytes, ttl_ms: int = 60_000) -> GossipItem:
    """A valid live gossip item published by identity."""
    now = _now_ms()
    return GossipItem.create(identity, topic, payload, subnet=SUBNET, created_ms=now, expires_ms=now + ttl_ms)


class Attacker:
    """A hand-driven connection to a node: its own identity and CURVE key, no NetActor."""

    def __init__(self, node: NodeProcess, identity: Identity | None = None, *, monitor: bool = False) -> None:
        assert node.contact is not None
        self.node = node
        self.identity = identity or Identity.generate()
        server_key, self.endpoint = parse_contact(node.contact)
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.curve_secretkey = self.identity.curve_secret
        self.sock.curve_publickey = self.identity.curve_public
        self.sock.curve_serverkey = server_key
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) if monitor else None
        self.sock.connect(self.endpoint)

    def seal(
        self, msg: Message | bytes, *, ts_ms: int | None = None, signer: Identity | None = None
    ) -> Envelope:
        """An envelope of msg signed by signer (the attacker by default), stamped now unless told."""
        return seal(signer or self.identity, msg, _now_ms() if ts_ms is None else ts_ms, recipient=self.node.node_id)

    def send(self, frame: Envelope | bytes) -> None:
        """Send one frame (an envelope is framed first)."""
        self.sock.send(frame.to_frame() if isinstance(frame, Envelope) else frame)

    def replies(self, timeout_s: float) -> list[Message]:
        """The messages the node sent within timeout_s."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                break
            got.append(decode(parse_frame(self.sock.recv(), 1 << 24).body))
        return got

    def handshake(self, timeout_s: float = 5.0) -> HelloAck:
        """A legitimate Hello (not as neighbour); returns the node's HelloAck."""
        self.send(self.seal(Hello(record_of(self.identity), neighbour=False)))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.replies(0.2):
                if isinstance(msg, HelloAck):
                    assert msg.record.node_id == self.node.node_id
                    return msg
        raise AssertionError(f"no HelloAck from {self.node.name} within {timeout_s} s")

    def wait_disconnected(self, timeout_s: float) -> bool:
        """True when ZeroMQ reports that the node closed the connection."""
        assert self.monitor is not None
        if not self.monitor.poll(int(timeout_s * 1000), zmq.POLLIN):
            return False
        event = recv_monitor_message(self.monitor)
        return event["event"] == zmq.EVENT_DISCONNECTED

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self._ctx.term()


@pytest.fixture
def attackers() -> Iterator[Callable[..., Attacker]]:
    """Make Attackers; all are closed after the test."""
    made: list[Attacker] = []

    def make(node: NodeProcess, identity: Identity | None = None, *, monitor: bool = False) -> Attacker:
        made.append(Attacker(node, identity, monitor=monitor))
        return made[-1]

    yield make
    for attacker in made:
        attacker.close()


def _rejections(node: NodeProcess, before: dict[str, int]) -> dict[str, int]:
    now = node.counters()
    return {
        k: now[k] - before.get(k, 0)
        for k in now
        if k.startswith("rejected.") and now[k] != before.get(k, 0)
    }


def expect_rejections(
    node: NodeProcess, before: dict[str, int], expected: dict[str, int], timeout_s: float = 5.0
) -> None:
    """Wait until node counted the expected rejections since `before`; nothing else may have been rejected."""
    def reached() -> dict[str, int] | None:
        delta = _rejections(node, before)
        return delta if all(delta.get(k, 0) >= n for k, n in expected.items()) else None

    try:
        delta = wait_for(f"{expected} on {node.name}", reached, timeout_s)
    except AssertionError:
        raise AssertionError(f"expected rejections {expected}, got {_rejections(node, before)}") from None
    assert delta == expected


def assert_still_serving(testnet: Testnet, node: NodeProcess) -> None:
    """The node answers, let no exception escape its frame handling, and a new node can join it and get its gossip."""
    assert node.alive(), node.log_tail()
    assert node.status().node_id == node.node_id
    counters = node.counters()
    assert "frame_bugs" not in counters, node.log_tail()
    joiner = testnet.add(f"joiner-{len(testnet.nodes)}", bootstrap=[node.contact])
    wait_for("the joiner to become a neighbour", lambda: joiner.node_id in node.neighbour_ids(), 15)
    published = node.publish("after-attack", b"the node still gossips")
    wait_for("the new item on the joiner", lambda: published.item_id in joiner.item_ids("after-attack"), 10)
    assert "frame_bugs" not in node.counters(), node.log_tail()


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x55]) + data[index + 1:]


# -- 1. signatures ---------------------------------------------------------------------------


def test_an_envelope_with_altered_signature_bytes_is_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    env = attacker.seal(Heartbeat(1))
    attacker.send(dataclasses.replace(env, signature=_flip(env.signature, 7)))  # recovers another key
    attacker.send(dataclasses.replace(env, signature=bytes(65)))  # recovers no key
    attacker.send(dataclasses.replace(env, signature=env.signature[:64]))  # wrong length
    attacker.send(dataclasses.replace(attacker.seal(Heartbeat(2)), body=encode(Heartbeat(3))))  # body altered
    expect_rejections(victim, before, {"rejected.SignatureError": 4})
    assert_still_serving(testnet, victim)


# -- 2. claiming another node id --------------------------------------------------------------


def test_claiming_another_nodes_id_is_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    b_identity = Identity.generate()
    b = testnet.add("b", identity=b_identity)
    wait_for("b to neighbour the victim", lambda: b.node_id in victim.neighbour_ids(), 15)
    ghost = Identity.generate()  # a node that is not running; the attacker holds its key
    before = victim.counters()

    # B's genuine record (as anyone can learn it from gossip) in a Hello the attacker signs.
    stolen = record_of(b_identity, addresses=(parse_contact(b.contact)[1],), seq=1)
    first = attackers(victim)
    first.send(first.seal(Hello(stolen, neighbour=True)))
    # A record and envelope signed by the ghost's key, over a connection authenticated with the
    # attacker's own CURVE key: the record's CURVE key is not the connection's.
    second = attackers(victim)
    second.send(second.seal(Hello(record_of(ghost), neighbour=True), signer=ghost))
    expect_rejections(victim, before, {"rejected.ProtocolError": 2})
    assert not [m for m in first.replies(0.3) + second.replies(0.1) if isinstance(m, HelloAck)]

    # After a real handshake: an envelope naming B as sender but signed by the attacker, and
    # one really signed by the ghost's key sent on the attacker's link.
    third = attackers(victim)
    third.handshake()
    before = victim.counters()
    unsigned = Envelope(b.node_id, victim.node_id, os.urandom(MSG_ID_BYTES), _now_ms(), encode(Heartbeat(1)), b"")
    third.send(dataclasses.replace(unsigned, signature=third.identity.sign(keccak(unsigned.canonical()))))
    third.send(third.seal(Heartbeat(2), signer=ghost))
    expect_rejections(victim, before, {"rejected.SignatureError": 1, "rejected.ProtocolError": 1})

    links = victim.status().neighbours
    assert [n.role for n in links if n.node_id == b.node_id] == ["neighbour"]  # B's genuine link, once
    assert not [n for n in links if n.node_id in (ghost.node_id, first.identity.node_id, second.identity.node_id)]
    assert_still_serving(testnet, victim)
    published = victim.publish("still-b", b"b keeps its link")
    wait_for("the item on b", lambda: published.item_id in b.item_ids("still-b"), 10)


# -- 3, 4. replays and stale timestamps -------------------------------------------------------


def test_a_replayed_frame_is_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    frame = attacker.seal(Heartbeat(1)).to_frame()
    attacker.send(frame)
    attacker.send(frame)
    expect_rejections(victim, before, {"rejected.ReplayError": 1})
    # The captured frame replayed on another connection.
    attackers(victim).send(frame)
    expect_rejections(victim, before, {"rejected.ReplayError": 2})
    assert_still_serving(testnet, victim)


def test_envelopes_stamped_far_from_the_nodes_clock_are_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    attacker.send(attacker.seal(Heartbeat(1), ts_ms=_now_ms() - 10 * 60_000))
    attacker.send(attacker.seal(Heartbeat(2), ts_ms=_now_ms() + 10 * 60_000))
    # A stale Hello on a fresh connection is no way in either.
    late = attackers(victim)
    late.send(late.seal(Hello(record_of(late.identity), neighbour=False), ts_ms=_now_ms() - 10 * 60_000))
    expect_rejections(victim, before, {"rejected.StaleMessageError": 3})
    assert not late.replies(0.3)
    assert_still_serving(testnet, victim)


# -- 5, 6. bytes that are no envelope, bodies that are no message -----------------------------


def test_garbage_and_truncated_frames_are_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    valid = attacker.seal(Heartbeat(1)).to_frame()
    frames = [
        b"",
        b"\xc1",  # a byte msgpack never uses
        random.Random(7).randbytes(512),
        b"\x91" * 100_000 + b"\xc0",  # nested 100 000 deep
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G items
        b"\xc6\xff\xff\xff\xff",  # bytes claiming 4 GB
        msgpack.packb({1: 2}),
        msgpack.packb([1, 2, 3]),
        valid[: len(valid) // 2],
        valid[:-1],
        msgpack.packb([2] + msgpack.unpackb(valid)[1:]),  # another wire version
        msgpack.packb(msgpack.unpackb(valid)[:3] + [b"short id"] + msgpack.unpackb(valid)[4:]),
    ]
    for frame in frames:
        attacker.send(frame)
    expect_rejections(victim, before, {"rejected.DecodeError": len(frames)})
    # Garbage on a connection that never said Hello is rejected the same way.
    stranger = attackers(victim)
    stranger.send(b"\x00garbage")
    expect_rejections(victim, before, {"rejected.DecodeError": len(frames) + 1})
    assert not stranger.replies(0.2)
    assert_still_serving(testnet, victim)


def test_signed_bodies_of_unknown_type_or_wrong_shape_are_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    good_record = msgpack.unpackb(msgpack.packb(dataclasses.asdict(record_of(attacker.identity))))
    bodies = [
        {"t": "evil.unknown", "v": 1, "b": {}},
        {"t": "net.heartbeat", "v": 1, "b": {"seq": "1"}},
        {"t": "net.heartbeat", "v": 2, "b": {"seq": 1}},
        {"t": "net.heartbeat", "v": 1.0, "b": {"seq": 1}},
        {"t": "net.heartbeat", "v": 1, "b": {}},
        {"t": "net.heartbeat", "v": 1, "b": {"seq": 1, "extra": True}},
        {"t": "net.heartbeat", "v": 1, "b": [1]},
        {"t": "net.heartbeat", "v": 1},
        {"t": 7, "v": 1, "b": {}},
        {"t": "net.gossip_push", "v": 1, "b": {"items": "not a list", "solicited": False}},
        {"t": "net.gossip_push", "v": 1, "b": {"items": [{"item_id": "x"}], "solicited": False}},
        {"t": "net.gossip_digest", "v": 1, "b": {"subnet": SUBNET, "buckets": [b"x"] * 3}},
        {"t": "net.hello", "v": 1, "b": {"record": {**good_record, "node_id": "0xnot-a-node"}, "neighbour": False}},
        {"t": "net.hello", "v": 1, "b": {"record": {**good_record, "curve_key": "text"}, "neighbour": False}},
        {"t": "net.hello", "v": 1, "b": {"record": {**good_record, "addresses": ["udp://x"]}, "neighbour": False}},
        {"t": "net.peer_exchange", "v": 1, "b": {"peers": [{**good_record, "via": ["nobody"]}]}},
        [1, 2, 3],
    ]
    for body in bodies:
        attacker.send(attacker.seal(msgpack.packb(body, use_bin_type=True)))
    attacker.send(attacker.seal(b"\xc1"))  # a body that is not msgpack
    expect_rejections(victim, before, {"rejected.DecodeError": len(bodies) + 1})
    assert_still_serving(testnet, victim)


# -- 7. size caps ----------------------------------------------------------------------------


def test_oversized_frames_and_items_are_refused(testnet: Testnet, attackers, tmp_path: Path) -> None:
    assert load_settings(tmp_path / "defaults", environ={}).net.max_message_bytes == 1 << 20
    victim = testnet.add("victim", env={"LOAM_NET__MAX_MESSAGE_BYTES": "65536", "LOAM_NET__MAX_ITEM_BYTES": "1024"})
    big = attackers(victim, monitor=True)
    big.handshake()
    before = victim.counters()
    big.send(big.seal(b"\x00" * 200_000))
    assert big.wait_disconnected(5.0), "the node kept a connection that sent a 200 KB frame"
    # The frame never reached the node's logic: ZeroMQ dropped the connection first.
    assert _rejections(victim, before) == {}
    fresh = attackers(victim)
    fresh.handshake()
    before = victim.counters()
    too_large = item_of(fresh.identity, "sized", b"x" * 2000)
    fits = item_of(fresh.identity, "sized", b"y" * 1000)
    fresh.send(fresh.seal(GossipPush((too_large,), solicited=False)))
    fresh.send(fresh.seal(GossipPush((fits,), solicited=False)))
    wait_for("the item under the cap to be stored", lambda: fits.item_id in victim.item_ids("sized"), 5)
    expect_rejections(victim, before, {"rejected.gossip_too_large": 1})
    assert too_large.item_id not in victim.item_ids("sized")
    assert_still_serving(testnet, victim)


# -- 8. before the handshake -----------------------------------------------------------------


def test_messages_before_the_handshake_are_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    attacker = attackers(victim)
    before = victim.counters()
    item = item_of(attacker.identity, "early", b"no handshake yet")
    attacker.send(attacker.seal(GossipPush((item,), solicited=False)))
    attacker.send(attacker.seal(PeerExchange((record_of(attacker.identity),))))
    expect_rejections(victim, before, {"rejected.ProtocolError": 2})
    # A connection whose Hello failed is no better: its link never comes up.
    failed = attackers(victim)
    failed.send(failed.seal(Hello(record_of(Identity.generate()), neighbour=False)))  # someone else's record
    failed.send(failed.seal(GossipPush((item,), solicited=False)))
    expect_rejections(victim, before, {"rejected.ProtocolError": 4})
    assert not attacker.replies(0.2) and not failed.replies(0.1)
    assert item.item_id not in victim.item_ids("early")
    assert victim.status().neighbours == ()
    assert_still_serving(testnet, victim)


# -- 9. forged gossip ------------------------------------------------------------------------


def test_tampered_and_forged_gossip_items_are_rejected(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim")
    own = victim.publish("goods", b"the victim's own item")
    attacker = attackers(victim)
    attacker.handshake()
    before = victim.counters()
    me = attacker.identity
    honest = item_of(me, "goods", b"honest payload")
    tampered = dataclasses.replace(honest, payload=b"tampered payload")  # the id no longer matches
    claimed = item_of(me, "goods", b"pretends to be the victim's")
    forged_origin = dataclasses.replace(  # a consistent id for the victim as origin, but the attacker's signature
        claimed,
        origin=victim.node_id,
        item_id=GossipItem.content_id(
            claimed.topic, victim.node_id, claimed.subnet, claimed.slot, claimed.created_ms, claimed.expires_ms,
            claimed.payload,
        ),
    )
    # Withdrawals carry no payload, so their id cannot be checked against content: one that
    # names the victim's item but is signed by the attacker, and one whose id is no item id.
    withdraw_theirs = dataclasses.replace(honest, item_id=own.item_id).withdrawal(me)
    # Short-lived, so that a node which stored it meets it again when it expires.
    short = item_of(me, "goods", b"short-lived", ttl_ms=1500)
    withdraw_bogus = dataclasses.replace(short, item_id="zz").withdrawal(me)
    for bad in (tampered, forged_origin, withdraw_theirs, withdraw_bogus):
        attacker.send(attacker.seal(GossipPush((bad,), solicited=False)))
    attacker.send(attacker.seal(GossipPush((honest,), solicited=False)))
    wait_for("the honest item to be stored", lambda: honest.item_id in victim.item_ids("goods"), 5)
    expect_rejections(victim, before, {"rejected.gossip_bad_item": 4})
    assert victim.item_ids("goods") == {own.item_id, honest.item_id}
    time.sleep(max(0.0, (short.expires_ms - _now_ms()) / 1000 + 1.2))  # past the expiry sweep
    assert_still_serving(testnet, victim)


# -- 10. floods ------------------------------------------------------------------------------


def test_a_flood_from_one_peer_is_rate_limited(testnet: Testnet, attackers) -> None:
    victim = testnet.add("victim", env={"LOAM_NET__PEER_RATE_MSGS_PER_S": "100", "LOAM_NET__PEER_RATE_BURST": "200"})
    attacker = attackers(victim)
    frames = [attacker.seal(Heartbeat(i)).to_frame() for i in range(5000)]
    attacker.handshake()
    before = victim.counters()
    started = time.monotonic()
    for frame in frames:
        attacker.send(frame)
    wait_for(
        "the node to take in the flood",
        lambda: victim.counters().get("frames_in", 0) - before.get("frames_in", 0) >= len(frames),
        20,
    )
    took_s = time.monotonic() - started
    limited = _rejections(victim, before).get("rejected.rate_limited", 0)
    # At most the burst plus the refill over the flood's duration got through.
    assert limited >= len(frames) - 200 - 100 * (took_s + 1)
    assert set(_rejections(victim, before)) == {"rejected.rate_limited"}
    assert_still_serving(testnet, victim)
