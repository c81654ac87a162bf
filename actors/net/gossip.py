"""The gossip store: items a node holds, their expiry, replacement slots, caps and digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

from protocol.net import DIGEST_BUCKETS, GossipItem

__all__ = ["GossipStore", "Accepted", "StoredItem", "bucket_of"]

_ZERO = bytes(8)


class Accepted(Enum):
    """What the store did with an offered item."""

    NEW = "new"  # a live item it did not have
    WITHDRAWN = "withdrawn"  # a withdrawal of an item it had live (or did not know)
    DUPLICATE = "duplicate"  # already held in this state or a stronger one
    EXPIRED = "expired"  # past its expiry, or its expiry is too far ahead
    SUPERSEDED = "superseded"  # a newer item holds its slot
    FULL = "full"  # the store or the origin's share of it is full
    FORGED = "forged"  # a withdrawal of an item held from another origin


@dataclass(slots=True)
class StoredItem:
    """An item and when this node first received it (ms, node clock)."""

    item: GossipItem
    received_ms: int


def bucket_of(item_id: str) -> int:
    """The digest bucket of an item id."""
    return int(item_id[:2], 16) % DIGEST_BUCKETS


def _entry_hash(item_id: str, withdrawn: bool) -> int:
    digest = hashlib.blake2b(item_id.encode() + (b"\x01" if withdrawn else b"\x00"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(slots=True)
class _Subnet:
    buckets: list[int] = field(default_factory=lambda: [0] * DIGEST_BUCKETS)


class GossipStore:
    """Holds gossip items by id, keeps per-subnet digests current, drops expired items.

    Pure logic: every method that depends on time takes now_ms.
    """

    def __init__(self, max_items: int, max_items_per_origin: int, max_ttl_ms: int, own_origin: str = "") -> None:
        self._max_items = max_items
        self._max_per_origin = max_items_per_origin
        self._max_ttl_ms = max_ttl_ms
        self._own_origin = own_origin
        self._items: dict[str, StoredItem] = {}
        self._per_origin: dict[str, int] = {}
        self._slots: dict[tuple[str, str, str], str] = {}  # (origin, topic, slot) -> item id
        self._subnets: dict[str, _Subnet] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> StoredItem | None:
        """The stored item with this id, live or withdrawn."""
        return self._items.get(item_id)

    def is_news(self, item_id: str, withdrawn: bool) -> bool:
        """Cheap pre-check before verifying a signature: would this id and state change anything?"""
        held = self._items.get(item_id)
        return held is None or (withdrawn and not held.item.withdrawn)

    def offer(self, item: GossipItem, now_ms: int) -> Accepted:
        """Store an item whose signature the caller has verified."""
        if item.expires_ms <= now_ms or item.expires_ms - now_ms > self._max_ttl_ms:
            return Accepted.EXPIRED
        held = self._items.get(item.item_id)
        if held is not None:
            if item.withdrawn and not held.item.withdrawn:
                # A withdrawal carries no payload, so only its origin vouches for its id:
                # anyone could sign one naming any item. Only the item's origin may.
                if item.origin != held.item.origin:
                    return Accepted.FORGED
                self._replace(held.item, item, now_ms)
                return Accepted.WITHDRAWN
            return Accepted.DUPLICATE
        replaced = None
        if item.slot and not item.withdrawn:
            key = (item.origin, item.topic, item.slot)
            current_id = self._slots.get(key)
            if current_id is not None:
                current = self._items[current_id].item
                if (current.created_ms, current.item_id) >= (item.created_ms, item.item_id):
                    return Accepted.SUPERSEDED
                replaced = current_id
        if replaced is not None:
            # Takes the place of an item of the same origin, so it cannot exceed a cap.
            self._remove(replaced)
        elif item.origin != self._own_origin:
            if len(self._items) >= self._max_items or self._per_origin.get(item.origin, 0) >= self._max_per_origin:
                return Accepted.FULL
        self._add(item, now_ms)
        return Accepted.WITHDRAWN if item.withdrawn else Accepted.NEW

    def expire(self, now_ms: int) -> list[GossipItem]:
        """Drop every item whose expiry has passed; return the dropped ones."""
        gone = [s.item for s in self._items.values() if s.item.expires_ms <= now_ms]
        for item in gone:
            self._remove(item.item_id)
        return gone

    def live(self, topic: str = "") -> list[StoredItem]:
        """Live (not withdrawn) items, of one topic or all."""
        return [s for s in self._items.values() if not s.item.withdrawn and (not topic or s.item.topic == topic)]

    def digest(self, subnet: str) -> tuple[bytes, ...]:
        """The per-bucket hashes of a subnet's items (ids with their withdrawn flags)."""
        sub = self._subnets.get(subnet)
        if sub is None:
            return (_ZERO,) * DIGEST_BUCKETS
        return tuple(b.to_bytes(8, "big") for b in sub.buckets)

    def differing_buckets(self, subnet: str, theirs: tuple[bytes, ...]) -> list[int]:
        """Indices of the buckets where another node's digest differs from ours."""
        ours = self.digest(subnet)
        return [i for i in range(DIGEST_BUCKETS) if ours[i] != theirs[i]]

    def entries(self, subnet: str, buckets: list[int] | tuple[int, ...]) -> list[tuple[str, bool]]:
        """(id, withdrawn) of our items of a subnet in the given buckets."""
        wanted = set(buckets)
        return [
            (s.item.item_id, s.item.withdrawn)
            for s in self._items.values()
            if s.item.subnet == subnet and bucket_of(s.item.item_id) in wanted
        ]

    def reconcile(
        self, subnet: str, buckets: tuple[int, ...], theirs: tuple[tuple[str, bool], ...]
    ) -> tuple[list[str], list[GossipItem]]:
        """Compare a peer's entries in some buckets with ours.

        Returns the ids to pull from the peer and the items to push to it.
        """
        their_state = dict(theirs)
        to_pull = [item_id for item_id, withdrawn in theirs if self.is_news(item_id, withdrawn)]
        to_push = []
        for item_id, _ in self.entries(subnet, buckets):
            mine = self._items[item_id].item
            their_withdrawn = their_state.get(item_id)
            if their_withdrawn is None or (mine.withdrawn and not their_withdrawn):
                to_push.append(mine)
        return to_pull, to_push

    def _add(self, item: GossipItem, now_ms: int) -> None:
        self._items[item.item_id] = StoredItem(item, now_ms)
        self._per_origin[item.origin] = self._per_origin.get(item.origin, 0) + 1
        if item.slot:
            # A withdrawal of an older item of the slot must not take the slot from a newer one.
            key = (item.origin, item.topic, item.slot)
            current_id = self._slots.get(key)
            current = self._items[current_id].item if current_id is not None else None
            if current is None or (current.created_ms, current.item_id) < (item.created_ms, item.item_id):
                self._slots[key] = item.item_id
        self._toggle(item)

    def _remove(self, item_id: str) -> None:
        stored = self._items.pop(item_id)
        item = stored.item
        left = self._per_origin[item.origin] - 1
        if left:
            self._per_origin[item.origin] = left
        else:
            del self._per_origin[item.origin]
        key = (item.origin, item.topic, item.slot)
        if item.slot and self._slots.get(key) == item_id:
            del self._slots[key]
        self._toggle(item)

    def _replace(self, old: GossipItem, new: GossipItem, now_ms: int) -> None:
        received_ms = self._items[old.item_id].received_ms
        self._remove(old.item_id)
        self._add(new, now_ms)
        self._items[new.item_id].received_ms = received_ms

    def _toggle(self, item: GossipItem) -> None:
        # XOR makes the bucket hash independent of insertion order and lets one
        # function both add and remove an entry.
        sub = self._subnets.get(item.subnet)
        if sub is None:
            sub = self._subnets[item.subnet] = _Subnet()
        sub.buckets[bucket_of(item.item_id)] ^= _entry_hash(item.item_id, item.withdrawn)
