"""Links and known peers: the plain state the NetActor keeps about other nodes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from actors.net.ratelimit import TokenBucket
from protocol.net import PeerRecord

__all__ = ["Link", "PeerEntry", "PeerTable", "Contact"]


@dataclass(slots=True)
class Link:
    """One ZeroMQ connection to another node, dialled by us (outbound) or by it."""

    key: str
    outbound: bool
    endpoint: str
    curve_key: bytes
    created_ms: int
    msg_bucket: TokenBucket
    item_bucket: TokenBucket
    want_neighbour: bool = False
    node_id: str | None = None
    record: PeerRecord | None = None
    up: bool = False
    neighbour: bool = False
    last_in_ms: int = 0
    last_out_ms: int = 0
    last_app_ms: int = 0  # last traffic that was not a heartbeat
    heartbeat_seq: int = 0
    pending: list[bytes] = field(default_factory=list)  # frames waiting for the handshake
    out_items: list = field(default_factory=list)  # gossip items waiting to be pushed
    pulled: set[str] = field(default_factory=set)  # item ids we asked this peer for
    expected_node: str | None = None

    def initiator(self, me: str) -> str:
        """Node id of the side that dialled this link."""
        assert self.node_id is not None
        return me if self.outbound else self.node_id


@dataclass(slots=True)
class Contact:
    """A bootstrap address: a CURVE key and an endpoint, node id unknown until dialled."""

    curve_key: bytes
    endpoint: str
    failures: int = 0
    next_try_ms: int = 0


@dataclass(slots=True)
class PeerEntry:
    """A node we know of (the passive view), with dial back-off."""

    record: PeerRecord
    last_seen_ms: int
    failures: int = 0
    next_try_ms: int = 0
    address_index: int = 0

    def endpoint(self) -> str | None:
        """The address to try next (rotating through the record's addresses on failures)."""
        addrs = self.record.addresses
        return addrs[self.address_index % len(addrs)] if addrs else None


def backoff_ms(failures: int) -> int:
    """How long to wait before dialling a peer again after `failures` failures in a row."""
    return min(60_000, 500 * (2 ** min(failures, 7)))


class PeerTable:
    """Known peer records, newest per node, bounded to `max_peers` (oldest-seen dropped)."""

    def __init__(self, me: str, max_peers: int) -> None:
        self._me = me
        self._max = max_peers
        self.entries: dict[str, PeerEntry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, node_id: str) -> PeerEntry | None:
        """The entry of a node, if known."""
        return self.entries.get(node_id)

    def learn(self, record: PeerRecord, now_ms: int) -> bool:
        """Keep a verified record if it is newer than what we hold; True if it was."""
        if record.node_id == self._me:
            return False
        entry = self.entries.get(record.node_id)
        if entry is not None:
            if record.seq <= entry.record.seq:
                return False
            entry.record = record
            entry.last_seen_ms = max(entry.last_seen_ms, now_ms)
            return True
        self.entries[record.node_id] = PeerEntry(record, now_ms)
        if len(self.entries) > self._max:
            oldest = min(self.entries.values(), key=lambda e: e.last_seen_ms)
            del self.entries[oldest.record.node_id]
        return True

    def seen(self, node_id: str, now_ms: int) -> None:
        """Note that a node was alive now (a link to it is up); clears its back-off."""
        entry = self.entries.get(node_id)
        if entry is not None:
            entry.last_seen_ms = now_ms
            entry.failures = 0
            entry.next_try_ms = 0

    def failed(self, node_id: str, now_ms: int) -> None:
        """Note a failed dial or a dead link: back off and try its next address later."""
        entry = self.entries.get(node_id)
        if entry is not None:
            entry.failures += 1
            entry.address_index += 1
            entry.next_try_ms = now_ms + backoff_ms(entry.failures)

    def candidates(self, exclude: set[str], subnets: tuple[str, ...], now_ms: int, rng: random.Random) -> list[PeerEntry]:
        """Dialable peers not in exclude, those sharing a subnet first, shuffled within."""
        ready = [
            e for e in self.entries.values()
            if e.record.addresses and e.record.node_id not in exclude and e.next_try_ms <= now_ms
        ]
        rng.shuffle(ready)
        ready.sort(key=lambda e: not set(e.record.subnets) & set(subnets))
        return ready

    def sample(self, count: int, rng: random.Random) -> list[PeerRecord]:
        """Up to count records, dialable ones first, for peer exchange."""
        dialable = [e.record for e in self.entries.values() if e.record.addresses and e.failures == 0]
        rng.shuffle(dialable)
        return dialable[:count]
