"""Overlay messages that carry their own signatures: peer records and gossip items, plus digest checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocol.codec import decode, encode
from protocol.errors import DecodeError, SignatureError
from protocol.identity import keccak
from protocol.net import DIGEST_BUCKETS, GossipDigest, GossipItem, PeerRecord
from tests.unit.protocol.samples import ALICE, BOB, CAROL, MALLORY, T0_MS, dial_out_record, gossip_item, peer_record

# ---- peer records -----------------------------------------------------------------------------


def test_signed_peer_record_verifies() -> None:
    record = peer_record()
    record.verify()
    assert record.signature
    assert record.accepts_connections()


def test_dial_out_record_verifies_and_accepts_no_connections() -> None:
    record = dial_out_record()
    record.verify()
    assert not record.accepts_connections()


def test_peer_record_still_verifies_after_the_wire() -> None:
    decode(encode(peer_record()), expect=PeerRecord).verify()


def test_unsigned_peer_record_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        dataclasses.replace(peer_record(), signature=b"").verify()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_id", BOB.node_id),
        ("curve_key", BOB.curve_public),
        ("addresses", ("tcp://203.0.113.66:7464",)),
        ("addresses", ()),
        ("subnets", ("public",)),
        ("subnets", ("public", "devnet", "extra")),
        ("via", ()),
        ("via", (MALLORY.node_id,)),
        ("seq", 8),
    ],
)
def test_peer_record_does_not_verify_after_a_field_changes(field: str, value: Any) -> None:
    record = peer_record()
    assert getattr(record, field) != value
    with pytest.raises(SignatureError):
        dataclasses.replace(record, **{field: value}).verify()


def test_peer_record_signature_of_another_record_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        dataclasses.replace(peer_record(BOB), signature=peer_record(ALICE).signature).verify()


def test_peer_record_signed_by_another_node_does_not_verify() -> None:
    record = peer_record()
    with pytest.raises(SignatureError, match=ALICE.node_id):
        dataclasses.replace(record, signature=MALLORY.sign(record.digest())).verify()


def test_peer_record_refuses_to_be_signed_by_another_identity() -> None:
    unsigned = dataclasses.replace(peer_record(), signature=b"")
    with pytest.raises(ValueError):
        unsigned.signed(MALLORY)


def test_peer_record_digest_covers_the_content_only() -> None:
    record = peer_record()
    assert record.digest() == dataclasses.replace(record, signature=b"").digest()
    assert record.digest() != dataclasses.replace(record, seq=record.seq + 1).digest()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"node_id": ALICE.node_id.lower()}, id="lowercase_node_id"),
        pytest.param({"node_id": "alice"}, id="garbage_node_id"),
        pytest.param({"curve_key": bytes(32)}, id="raw_curve_key"),
        pytest.param({"curve_key": b""}, id="empty_curve_key"),
        pytest.param({"addresses": ("198.51.100.7:7464",)}, id="address_without_scheme"),
        pytest.param({"addresses": ("tcp://" + "a" * 195,)}, id="address_too_long"),
        pytest.param({"addresses": tuple(f"tcp://198.51.100.7:{p}" for p in range(9))}, id="nine_addresses"),
        pytest.param({"subnets": tuple(str(i) for i in range(17))}, id="seventeen_subnets"),
        pytest.param({"via": tuple([CAROL.node_id] * 17)}, id="seventeen_via"),
        pytest.param({"via": ("tcp://198.51.100.7:7464",)}, id="via_not_node_id"),
    ],
)
def test_invalid_peer_record_cannot_be_built(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(peer_record(), **changes)


def test_peer_record_limits_are_inclusive() -> None:
    dataclasses.replace(
        peer_record(),
        addresses=tuple(f"tcp://198.51.100.7:{p}" for p in range(8)),
        subnets=tuple(str(i) for i in range(16)),
        via=tuple([CAROL.node_id] * 16),
    )
    dataclasses.replace(peer_record(), addresses=("tcp://" + "a" * 194,))


# ---- gossip items -----------------------------------------------------------------------------


def test_created_item_verifies() -> None:
    item = gossip_item()
    item.verify()
    assert item.origin == ALICE.node_id
    assert not item.withdrawn
    assert len(item.item_id) == 64 and int(item.item_id, 16) >= 0


def test_item_id_is_derived_from_content() -> None:
    item = gossip_item()
    assert item.item_id == GossipItem.content_id(
        item.topic, item.origin, item.subnet, item.slot, item.created_ms, item.expires_ms, item.payload
    )
    assert gossip_item(payload=b"other").item_id != item.item_id
    assert gossip_item(BOB).item_id != item.item_id


def test_item_still_verifies_after_the_wire() -> None:
    decode(encode(gossip_item()), expect=GossipItem).verify()
    decode(encode(gossip_item().withdrawal(ALICE)), expect=GossipItem).verify()


def test_withdrawal_verifies() -> None:
    item = gossip_item()
    tomb = item.withdrawal(ALICE)
    tomb.verify()
    assert tomb.withdrawn
    assert tomb.payload == b""
    assert tomb.item_id == item.item_id
    assert (tomb.topic, tomb.origin, tomb.slot) == (item.topic, item.origin, item.slot)
    assert tomb.signature != item.signature


def test_item_with_forged_origin_does_not_verify() -> None:
    """Mallory publishes in Alice's name: the id matches the content but the signature is Mallory's."""
    mine = gossip_item(MALLORY)
    forged_id = GossipItem.content_id(
        mine.topic, ALICE.node_id, mine.subnet, mine.slot, mine.created_ms, mine.expires_ms, mine.payload
    )
    forged = dataclasses.replace(mine, origin=ALICE.node_id, item_id=forged_id)
    with pytest.raises(SignatureError):
        forged.verify()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", b"tampered"),
        ("topic", "market.demand"),
        ("subnet", "devnet"),
        ("slot", "other"),
        ("created_ms", T0_MS + 1),
        ("expires_ms", T0_MS + 10**9),
        ("origin", BOB.node_id),
    ],
)
def test_item_content_change_breaks_its_id(field: str, value: Any) -> None:
    with pytest.raises(DecodeError, match="does not match its content"):
        dataclasses.replace(gossip_item(), **{field: value}).verify()


def test_item_with_recomputed_id_does_not_verify() -> None:
    """A relay that changes the payload and fixes up the id still lacks the origin's signature."""
    item = gossip_item()
    payload = b"tampered"
    new_id = GossipItem.content_id(
        item.topic, item.origin, item.subnet, item.slot, item.created_ms, item.expires_ms, payload
    )
    with pytest.raises(SignatureError):
        dataclasses.replace(item, payload=payload, payload_hash=keccak(payload), item_id=new_id).verify()


def test_item_signature_moved_to_another_item_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        dataclasses.replace(gossip_item(payload=b"b"), signature=gossip_item(payload=b"a").signature).verify()


def test_withdrawal_by_non_origin_is_refused() -> None:
    with pytest.raises(ValueError):
        gossip_item().withdrawal(MALLORY)


def test_withdrawal_forged_from_a_live_item_does_not_verify() -> None:
    """Flipping `withdrawn` on a live item, keeping its signature, does not make a tombstone."""
    item = gossip_item()
    with pytest.raises(SignatureError):
        dataclasses.replace(item, withdrawn=True, payload=b"").verify()


def test_withdrawal_signed_by_another_node_does_not_verify() -> None:
    item = gossip_item()
    forged = dataclasses.replace(gossip_item(MALLORY).withdrawal(MALLORY), item_id=item.item_id, origin=item.origin)
    with pytest.raises(SignatureError):
        forged.verify()


def test_withdrawal_turned_back_into_a_live_item_does_not_verify() -> None:
    item = gossip_item()
    revived = dataclasses.replace(item.withdrawal(ALICE), withdrawn=False, payload=item.payload)
    with pytest.raises(SignatureError):
        revived.verify()


def test_withdrawn_item_with_a_payload_is_refused() -> None:
    tomb = gossip_item().withdrawal(ALICE)
    with pytest.raises(DecodeError, match="no payload"):
        dataclasses.replace(tomb, payload=b"x").verify()


def test_item_with_malformed_signature_is_a_signature_error() -> None:
    with pytest.raises(SignatureError):
        dataclasses.replace(gossip_item(), signature=b"\x00" * 10).verify()


# ---- gossip digests ---------------------------------------------------------------------------


def test_digest_has_exactly_64_buckets() -> None:
    assert DIGEST_BUCKETS == 64
    GossipDigest(subnet="public", buckets=(b"",) * DIGEST_BUCKETS)


@pytest.mark.parametrize("count", [0, 1, DIGEST_BUCKETS - 1, DIGEST_BUCKETS + 1, 128])
def test_digest_with_another_bucket_count_cannot_be_built(count: int) -> None:
    with pytest.raises(ValueError):
        GossipDigest(subnet="public", buckets=(b"",) * count)


def test_a_withdrawal_naming_another_origins_item_does_not_verify() -> None:
    """Mallory cannot withdraw Alice's item, not even at a node that has not seen the item yet."""
    alices = gossip_item(ALICE)
    # Mallory's own tombstone, relabelled with Alice's item id: the id no longer matches the header.
    forged = dataclasses.replace(gossip_item(MALLORY).withdrawal(MALLORY), item_id=alices.item_id)
    with pytest.raises(DecodeError, match="does not match its content"):
        forged.verify()
    # Alice's header with Mallory's signature.
    forged = dataclasses.replace(alices.withdrawal(ALICE), signature=gossip_item(MALLORY).withdrawal(MALLORY).signature)
    with pytest.raises(SignatureError):
        forged.verify()
