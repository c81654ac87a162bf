"""Messages of the overlay: peer records, link handshakes, heartbeats, routing and gossip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import msgpack

from protocol.codec import Message, register
from protocol.errors import DecodeError, SignatureError
from protocol.identity import Identity, is_node_id, keccak, recover_signer

__all__ = [
    "PeerRecord",
    "Hello",
    "HelloAck",
    "Heartbeat",
    "Goodbye",
    "PeerExchange",
    "Routed",
    "GossipItem",
    "GossipPush",
    "GossipDigest",
    "GossipIds",
    "GossipPull",
    "DIGEST_BUCKETS",
    "GLOBAL_SUBNET",
]

DIGEST_BUCKETS = 64
# Items of the empty subnet (peer records) are for every node whatever its subnet.
GLOBAL_SUBNET = ""
CURVE_KEY_BYTES = 40  # Z85 text of a 32-byte key
ITEM_ID_CHARS = 64  # a gossip item id: keccak-256 in lower-case hex
_HEX_DIGITS = frozenset("0123456789abcdef")


def _packed(*values: object) -> bytes:
    return msgpack.packb(list(values), use_bin_type=True)


@register
@dataclass(frozen=True, slots=True)
class PeerRecord(Message):
    """How to reach a node, signed by that node: its CURVE key, addresses and subnets.

    A node that only dials out lists no addresses and names in `via` the neighbours it
    keeps links to, through which others can forward messages to it.
    """

    TYPE: ClassVar[str] = "net.peer_record"
    node_id: str
    curve_key: bytes
    addresses: tuple[str, ...]
    subnets: tuple[str, ...]
    via: tuple[str, ...]
    seq: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id):
            raise ValueError("peer record node_id is not a node id")
        if len(self.curve_key) != CURVE_KEY_BYTES:
            raise ValueError(f"curve key must be {CURVE_KEY_BYTES} Z85 bytes")
        for addr in self.addresses:
            if not addr.startswith("tcp://") or len(addr) > 200:
                raise ValueError(f"bad peer address {addr!r}")
        if len(self.addresses) > 8 or len(self.subnets) > 16 or len(self.via) > 16:
            raise ValueError("peer record lists too many addresses, subnets or via nodes")
        if not all(is_node_id(v) for v in self.via):
            raise ValueError("via entries must be node ids")

    def digest(self) -> bytes:
        """What the node's signature covers."""
        return keccak(
            b"loam/peer/1\x00"
            + _packed(self.node_id, self.curve_key, list(self.addresses), list(self.subnets), list(self.via), self.seq)
        )

    def signed(self, identity: Identity) -> PeerRecord:
        """This record signed by identity (which must be the record's node)."""
        if identity.node_id != self.node_id:
            raise ValueError("a peer record is signed by its own node")
        return dataclasses.replace(self, signature=identity.sign(self.digest()))

    def verify(self) -> None:
        """Raises SignatureError unless the record was signed by its node."""
        if recover_signer(self.digest(), self.signature) != self.node_id:
            raise SignatureError(f"peer record of {self.node_id} is not signed by it")

    def accepts_connections(self) -> bool:
        """True when others can dial this node."""
        return bool(self.addresses)


@register
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message on a new link: who I am; `neighbour` asks to join the active view."""

    TYPE: ClassVar[str] = "net.hello"
    record: PeerRecord
    neighbour: bool


@register
@dataclass(frozen=True, slots=True)
class HelloAck(Message):
    """Answer to Hello: who I am, whether I took you as neighbour, and peers to try."""

    TYPE: ClassVar[str] = "net.hello_ack"
    record: PeerRecord
    neighbour: bool
    peers: tuple[PeerRecord, ...]


@register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Sent on an otherwise idle link so the other side knows it is alive."""

    TYPE: ClassVar[str] = "net.heartbeat"
    seq: int


@register
@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """The sender closes the link (shutdown, duplicate link, too many neighbours)."""

    TYPE: ClassVar[str] = "net.goodbye"
    reason: str


@register
@dataclass(frozen=True, slots=True)
class PeerExchange(Message):
    """A sample of known peer records, to fill the receiver's views."""

    TYPE: ClassVar[str] = "net.peer_exchange"
    peers: tuple[PeerRecord, ...]


@register
@dataclass(frozen=True, slots=True)
class Routed(Message):
    """A signed envelope for `target`, forwarded along live links (for nodes that cannot be dialled)."""

    TYPE: ClassVar[str] = "net.routed"
    target: str
    ttl: int
    frame: bytes


@register
@dataclass(frozen=True, slots=True)
class GossipItem(Message):
    """An item spread to every node of a subnet, signed by the node that published it.

    Its id is derived from its content (the payload through its hash), so a relay cannot
    alter it. A withdrawal is the same item with `withdrawn` set and the payload left out;
    its id is still checked against the header and payload hash, and the header names the
    origin, so only the origin can withdraw an item. With a non-empty `slot`, a newer item
    of the same origin, topic and slot replaces older ones.
    """

    TYPE: ClassVar[str] = "net.gossip_item"
    item_id: str
    topic: str
    origin: str
    subnet: str
    slot: str
    created_ms: int
    expires_ms: int
    payload_hash: bytes
    payload: bytes
    withdrawn: bool
    signature: bytes

    @staticmethod
    def content_id(topic: str, origin: str, subnet: str, slot: str, created_ms: int, expires_ms: int, payload: bytes) -> str:
        """The id of an item with this content (64 hex digits)."""
        return GossipItem._id_of(topic, origin, subnet, slot, created_ms, expires_ms, keccak(payload))

    @staticmethod
    def _id_of(topic: str, origin: str, subnet: str, slot: str, created_ms: int, expires_ms: int, payload_hash: bytes) -> str:
        return keccak(
            b"loam/gossip-id/2\x00" + _packed(topic, origin, subnet, slot, created_ms, expires_ms, payload_hash)
        ).hex()

    @staticmethod
    def _sig_digest(item_id: str, withdrawn: bool, topic: str, origin: str, subnet: str, slot: str, created_ms: int, expires_ms: int) -> bytes:
        return keccak(b"loam/gossip/1\x00" + _packed(item_id, withdrawn, topic, origin, subnet, slot, created_ms, expires_ms))

    @classmethod
    def create(
        cls, identity: Identity, topic: str, payload: bytes, *, subnet: str, created_ms: int, expires_ms: int, slot: str = ""
    ) -> GossipItem:
        """A new live item published by identity."""
        origin = identity.node_id
        payload_hash = keccak(payload)
        item_id = cls._id_of(topic, origin, subnet, slot, created_ms, expires_ms, payload_hash)
        sig = identity.sign(cls._sig_digest(item_id, False, topic, origin, subnet, slot, created_ms, expires_ms))
        return cls(item_id, topic, origin, subnet, slot, created_ms, expires_ms, payload_hash, payload, False, sig)

    def withdrawal(self, identity: Identity) -> GossipItem:
        """The tombstone that withdraws this item (only its origin can make one)."""
        if identity.node_id != self.origin:
            raise ValueError("only an item's origin can withdraw it")
        sig = identity.sign(
            self._sig_digest(self.item_id, True, self.topic, self.origin, self.subnet, self.slot, self.created_ms, self.expires_ms)
        )
        return dataclasses.replace(self, payload=b"", withdrawn=True, signature=sig)

    def verify(self) -> None:
        """Check the id against the content and the origin's signature.

        Raises:
            ProtocolError: the id does not match or the signature is not the origin's.
        """
        # A withdrawal's id cannot be checked against a payload, but it must still be an id
        # as content_id makes them: the store derives digest buckets from its hex digits.
        if len(self.item_id) != ITEM_ID_CHARS or not set(self.item_id) <= _HEX_DIGITS:
            raise DecodeError(f"gossip item id {self.item_id[:80]!r} is not {ITEM_ID_CHARS} hex digits")
        expected = self._id_of(
            self.topic, self.origin, self.subnet, self.slot, self.created_ms, self.expires_ms, self.payload_hash
        )
        if expected != self.item_id:
            raise DecodeError(f"gossip item id {self.item_id} does not match its content")
        if self.withdrawn:
            if self.payload:
                raise DecodeError("a withdrawn gossip item carries no payload")
        elif keccak(self.payload) != self.payload_hash:
            raise DecodeError(f"gossip item {self.item_id} payload does not match its content")
        digest = self._sig_digest(
            self.item_id, self.withdrawn, self.topic, self.origin, self.subnet, self.slot, self.created_ms, self.expires_ms
        )
        if recover_signer(digest, self.signature) != self.origin:
            raise SignatureError(f"gossip item {self.item_id} is not signed by its origin {self.origin}")


@register
@dataclass(frozen=True, slots=True)
class GossipPush(Message):
    """Items pushed to a neighbour; `solicited` when they answer a GossipPull."""

    TYPE: ClassVar[str] = "net.gossip_push"
    items: tuple[GossipItem, ...]
    solicited: bool


@register
@dataclass(frozen=True, slots=True)
class GossipDigest(Message):
    """A summary of the items of one subnet the sender holds, one hash per id bucket."""

    TYPE: ClassVar[str] = "net.gossip_digest"
    subnet: str
    buckets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.buckets) != DIGEST_BUCKETS:
            raise ValueError(f"a digest has {DIGEST_BUCKETS} buckets")


@register
@dataclass(frozen=True, slots=True)
class GossipIds(Message):
    """The sender's item ids (with withdrawn flags) in the buckets where digests differed."""

    TYPE: ClassVar[str] = "net.gossip_ids"
    subnet: str
    buckets: tuple[int, ...]
    entries: tuple[tuple[str, bool], ...]


@register
@dataclass(frozen=True, slots=True)
class GossipPull(Message):
    """Ask a neighbour for these items."""

    TYPE: ClassVar[str] = "net.gossip_pull"
    ids: tuple[str, ...]
