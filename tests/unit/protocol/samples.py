"""Deterministic sample instances of every wire message, and the writer of their golden fixtures.

Every message registered by a module of the `protocol` package needs a builder in SAMPLES;
test_codec fails for any that has none. After an intended wire change, regenerate the
fixtures and review the diff:

    .venv/bin/python -m tests.unit.protocol.samples --write-golden
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Callable

import protocol
from protocol import control, net
from protocol.codec import Message, encode, registered
from protocol.identity import Identity

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "MALLORY",
    "SAMPLES",
    "GOLDEN_DIR",
    "REGENERATE_CMD",
    "protocol_messages",
    "sample",
    "golden_path",
    "write_golden",
]

GOLDEN_DIR = Path(__file__).with_name("golden")
REGENERATE_CMD = ".venv/bin/python -m tests.unit.protocol.samples --write-golden"

# Fixed keys: signatures are deterministic (RFC 6979), so the encoded samples are too.
ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
CAROL = Identity(bytes([3]) * 32)
MALLORY = Identity(bytes([0x66]) * 32)

T0_MS = 1_700_000_000_000


def protocol_messages() -> dict[str, type[Message]]:
    """Every message registered by a module of the protocol package (all of them imported)."""
    for mod in pkgutil.walk_packages(protocol.__path__, "protocol."):
        importlib.import_module(mod.name)
    return {
        tag: cls
        for tag, cls in registered().items()
        if cls.__module__ == "protocol" or cls.__module__.startswith("protocol.")
    }


def peer_record(identity: Identity = ALICE, seq: int = 7) -> net.PeerRecord:
    """A signed record that lists an address, subnets and a via node."""
    return net.PeerRecord(
        node_id=identity.node_id,
        curve_key=identity.curve_public,
        addresses=("tcp://198.51.100.7:7464", "tcp://[2001:db8::7]:7464"),
        subnets=("public", "devnet"),
        via=(CAROL.node_id,),
        seq=seq,
    ).signed(identity)


def dial_out_record(identity: Identity = BOB) -> net.PeerRecord:
    """A signed record of a node that only dials out (no addresses, reachable via others)."""
    return net.PeerRecord(
        node_id=identity.node_id,
        curve_key=identity.curve_public,
        addresses=(),
        subnets=("public",),
        via=(ALICE.node_id, CAROL.node_id),
        seq=1,
    ).signed(identity)


def gossip_item(identity: Identity = ALICE, payload: bytes = b"offer:\x00\x01\x02", slot: str = "offers") -> net.GossipItem:
    """A live gossip item on the market topic."""
    return net.GossipItem.create(
        identity, "market.offer", payload, subnet="public", created_ms=T0_MS, expires_ms=T0_MS + 3_600_000, slot=slot
    )


def _hello() -> net.Hello:
    return net.Hello(record=peer_record(), neighbour=True)


def _hello_ack() -> net.HelloAck:
    return net.HelloAck(record=peer_record(BOB, seq=3), neighbour=False, peers=(peer_record(), dial_out_record()))


def _gossip_push() -> net.GossipPush:
    live = gossip_item()
    withdrawn = gossip_item(BOB, payload=b"old", slot="").withdrawal(BOB)
    return net.GossipPush(items=(live, withdrawn), solicited=True)


def _gossip_digest() -> net.GossipDigest:
    return net.GossipDigest(subnet="public", buckets=tuple(bytes([i]) * 8 for i in range(net.DIGEST_BUCKETS)))


def _gossip_ids() -> net.GossipIds:
    return net.GossipIds(
        subnet="public",
        buckets=(0, 17, 63),
        entries=((gossip_item().item_id, False), ("ab" * 32, True)),
    )


def _net_status() -> control.NetStatus:
    neighbour = control.NeighbourInfo(
        node_id=BOB.node_id,
        role="neighbour",
        outbound=True,
        address="tcp://198.51.100.8:7464",
        subnets=("public",),
        age_s=12.5,
        idle_s=0.25,
    )
    return control.NetStatus(
        node_id=ALICE.node_id,
        name="alpha",
        subnets=("public", "devnet"),
        listen="tcp://0.0.0.0:7464",
        addresses=("tcp://198.51.100.7:7464",),
        contact=f"{ALICE.node_id}@tcp://198.51.100.7:7464",
        neighbours=(neighbour,),
        known_peers=42,
        gossip_items=1234,
        uptime_s=3600.75,
    )


def _gossip_entry() -> control.GossipEntry:
    item = gossip_item()
    return control.GossipEntry(
        item_id=item.item_id,
        topic=item.topic,
        origin=item.origin,
        subnet=item.subnet,
        created_ms=item.created_ms,
        expires_ms=item.expires_ms,
        received_ms=T0_MS + 250,
        payload=item.payload,
    )


def _inbox_entry() -> control.InboxEntry:
    return control.InboxEntry(sender=BOB.node_id, text="héllo ✓", received_ms=T0_MS + 99)


SAMPLES: dict[str, Callable[[], Message]] = {
    # protocol.net
    net.PeerRecord.TYPE: peer_record,
    net.Hello.TYPE: _hello,
    net.HelloAck.TYPE: _hello_ack,
    net.Heartbeat.TYPE: lambda: net.Heartbeat(seq=2**40 + 3),
    net.Goodbye.TYPE: lambda: net.Goodbye(reason="shutting down"),
    net.PeerExchange.TYPE: lambda: net.PeerExchange(peers=(peer_record(), dial_out_record())),
    net.Routed.TYPE: lambda: net.Routed(target=BOB.node_id, ttl=6, frame=b"\x97\x01frame-bytes\xff"),
    net.GossipItem.TYPE: gossip_item,
    net.GossipPush.TYPE: _gossip_push,
    net.GossipDigest.TYPE: _gossip_digest,
    net.GossipIds.TYPE: _gossip_ids,
    net.GossipPull.TYPE: lambda: net.GossipPull(ids=(gossip_item().item_id, "cd" * 32)),
    # protocol.control
    control.ControlFailed.TYPE: lambda: control.ControlFailed(error="PeerUnreachableError", message="no route"),
    control.NetStatusRequest.TYPE: control.NetStatusRequest,
    control.NeighbourInfo.TYPE: lambda: _net_status().neighbours[0],
    control.NetStatus.TYPE: _net_status,
    control.GossipPublishRequest.TYPE: lambda: control.GossipPublishRequest(
        topic="market.offer", payload=b"\x00payload", ttl_s=30.5, subnet=""
    ),
    control.GossipPublished.TYPE: lambda: control.GossipPublished(item_id=gossip_item().item_id, created_ms=T0_MS),
    control.GossipWithdrawRequest.TYPE: lambda: control.GossipWithdrawRequest(item_id=gossip_item().item_id),
    control.GossipListRequest.TYPE: lambda: control.GossipListRequest(topic="market.offer"),
    control.GossipEntry.TYPE: _gossip_entry,
    control.GossipList.TYPE: lambda: control.GossipList(entries=(_gossip_entry(),)),
    control.TextNote.TYPE: lambda: control.TextNote(text="hi there"),
    control.DirectSendRequest.TYPE: lambda: control.DirectSendRequest(recipient=BOB.node_id, text="hi there"),
    control.DirectSent.TYPE: lambda: control.DirectSent(path="route"),
    control.InboxRequest.TYPE: control.InboxRequest,
    control.InboxEntry.TYPE: _inbox_entry,
    control.Inbox.TYPE: lambda: control.Inbox(entries=(_inbox_entry(),)),
    control.NetCountersRequest.TYPE: control.NetCountersRequest,
    control.NetCounters.TYPE: lambda: control.NetCounters(
        counters={"frames_in": 1024, "frames_out": 998, "rejected.signature": 3, "gossip.items": 0}
    ),
}


def sample(tag: str) -> Message:
    """The sample instance of the message registered under tag."""
    return SAMPLES[tag]()


def golden_path(tag: str) -> Path:
    """Where the golden hex of a message's sample lives."""
    return GOLDEN_DIR / f"{tag}.hex"


def write_golden() -> list[str]:
    """(Re)write the fixture of every message, remove fixtures of unknown tags; returns the tags written."""
    tags = sorted(protocol_messages())
    missing = [t for t in tags if t not in SAMPLES]
    if missing:
        raise SystemExit(f"no sample for {', '.join(missing)}: add one to SAMPLES in {Path(__file__).name}")
    GOLDEN_DIR.mkdir(exist_ok=True)
    for stale in GOLDEN_DIR.glob("*.hex"):
        if stale.name[: -len(".hex")] not in tags:
            stale.unlink()
    for tag in tags:
        golden_path(tag).write_text(encode(sample(tag)).hex() + "\n")
    return tags


def main(argv: list[str] | None = None) -> int:
    """Command line: --write-golden rewrites the fixtures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-golden", action="store_true", help="rewrite tests/unit/protocol/golden/*.hex")
    args = parser.parse_args(argv)
    if not args.write_golden:
        parser.print_help()
        return 2
    tags = write_golden()
    print(f"wrote {len(tags)} golden fixtures to {GOLDEN_DIR.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
