"""The gossip store: acceptance, withdrawal, expiry, slots, caps, digests and anti-entropy."""

from __future__ import annotations

import pytest

from actors.net.gossip import Accepted, GossipStore, bucket_of
from protocol.identity import Identity
from protocol.net import DIGEST_BUCKETS, GossipItem

__all__: list[str] = []

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
CAROL = Identity(bytes([3]) * 32)
T0 = 1_000_000
TTL = 60_000
MAX_TTL = 3_600_000
SUBNET = "public"
ALL_BUCKETS = tuple(range(DIGEST_BUCKETS))
EMPTY_DIGEST = (bytes(8),) * DIGEST_BUCKETS


def item(
    payload: bytes = b"x",
    *,
    by: Identity = ALICE,
    topic: str = "offers",
    subnet: str = SUBNET,
    created_ms: int = T0,
    expires_ms: int = T0 + TTL,
    slot: str = "",
) -> GossipItem:
    return GossipItem.create(
        by, topic, payload, subnet=subnet, created_ms=created_ms, expires_ms=expires_ms, slot=slot
    )


def withdrawn(live: GossipItem) -> GossipItem:
    owner = next(i for i in (ALICE, BOB, CAROL) if i.node_id == live.origin)
    return live.withdrawal(owner)


def store(max_items: int = 1_000, per_origin: int = 1_000, own_origin: str = "") -> GossipStore:
    return GossipStore(max_items, per_origin, MAX_TTL, own_origin=own_origin)


def filled(*items: GossipItem, now_ms: int = T0) -> GossipStore:
    s = store()
    for it in items:
        assert s.offer(it, now_ms) in (Accepted.NEW, Accepted.WITHDRAWN)
    return s


def live_ids(s: GossipStore, topic: str = "") -> set[str]:
    return {stored.item.item_id for stored in s.live(topic)}


# -- offer -----------------------------------------------------------------------------------


def test_new_item_is_accepted_and_held_live() -> None:
    s = store()
    it = item()
    assert s.is_news(it.item_id, False)
    assert s.offer(it, T0) is Accepted.NEW
    assert it.item_id in s and len(s) == 1
    assert s.get(it.item_id).item == it and s.get(it.item_id).received_ms == T0
    assert live_ids(s) == {it.item_id}
    assert not s.is_news(it.item_id, False)


def test_same_item_again_is_a_duplicate() -> None:
    s = store()
    it = item()
    s.offer(it, T0)
    assert s.offer(it, T0 + 5) is Accepted.DUPLICATE
    assert len(s) == 1 and s.get(it.item_id).received_ms == T0


def test_withdrawal_of_held_item_replaces_it_and_keeps_first_receipt_time() -> None:
    s = store()
    it = item()
    s.offer(it, T0)
    assert s.is_news(it.item_id, True)
    assert s.offer(withdrawn(it), T0 + 500) is Accepted.WITHDRAWN
    held = s.get(it.item_id)
    assert held.item.withdrawn and held.item.payload == b"" and held.received_ms == T0
    assert len(s) == 1 and s.live() == []
    assert not s.is_news(it.item_id, True)
    assert s.offer(withdrawn(it), T0 + 600) is Accepted.DUPLICATE
    assert s.offer(it, T0 + 700) is Accepted.DUPLICATE


def test_withdrawal_of_unknown_item_is_kept_so_the_item_is_not_resurrected() -> None:
    s = store()
    it = item()
    assert s.offer(withdrawn(it), T0) is Accepted.WITHDRAWN
    assert s.get(it.item_id).item.withdrawn and len(s) == 1
    assert not s.is_news(it.item_id, False)
    assert s.offer(it, T0 + 1) is Accepted.DUPLICATE
    assert s.live() == []


@pytest.mark.parametrize("expires_ms", [T0 - 1, T0])
def test_item_at_or_past_its_expiry_is_rejected(expires_ms: int) -> None:
    s = store()
    it = item(created_ms=T0 - TTL, expires_ms=expires_ms)
    assert s.offer(it, T0) is Accepted.EXPIRED
    assert s.offer(withdrawn(it), T0) is Accepted.EXPIRED
    assert len(s) == 0


def test_item_expiring_beyond_the_max_ttl_is_rejected() -> None:
    s = store()
    assert s.offer(item(b"far", expires_ms=T0 + MAX_TTL + 1), T0) is Accepted.EXPIRED
    assert s.offer(item(b"edge", expires_ms=T0 + MAX_TTL), T0) is Accepted.NEW
    assert len(s) == 1


def test_expire_drops_due_items_and_returns_them() -> None:
    soon = item(b"soon", expires_ms=T0 + 10)
    gone = item(b"gone", expires_ms=T0 + 20)
    later = item(b"later", expires_ms=T0 + 30)
    s = filled(soon, withdrawn(gone), later)
    assert s.expire(T0 + 9) == []
    dropped = s.expire(T0 + 20)
    assert {d.item_id for d in dropped} == {soon.item_id, gone.item_id}
    assert soon.item_id not in s and gone.item_id not in s
    assert live_ids(s) == {later.item_id} and len(s) == 1
    assert [d.item_id for d in s.expire(T0 + 30)] == [later.item_id]
    assert len(s) == 0 and s.digest(SUBNET) == EMPTY_DIGEST


def test_live_lists_items_of_one_topic_or_all() -> None:
    offer = item(b"1", topic="offers")
    demand = item(b"2", topic="demands")
    retracted = item(b"3", topic="offers")
    s = filled(offer, demand, retracted, withdrawn(retracted))
    assert live_ids(s, "offers") == {offer.item_id}
    assert live_ids(s, "demands") == {demand.item_id}
    assert live_ids(s) == {offer.item_id, demand.item_id}
    assert s.live("nothing") == []


# -- slots -----------------------------------------------------------------------------------


def test_newer_item_replaces_the_older_one_in_its_slot() -> None:
    old = item(b"v1", created_ms=T0, slot="status")
    new = item(b"v2", created_ms=T0 + 1, slot="status")
    s = store()
    assert s.offer(old, T0) is Accepted.NEW
    assert s.offer(new, T0 + 1) is Accepted.NEW
    assert old.item_id not in s and len(s) == 1
    assert live_ids(s) == {new.item_id}
    assert s.offer(old, T0 + 2) is Accepted.SUPERSEDED
    assert live_ids(s) == {new.item_id}


def test_older_item_arriving_after_a_newer_one_is_superseded() -> None:
    old = item(b"v1", created_ms=T0, slot="status")
    new = item(b"v2", created_ms=T0 + 1, slot="status")
    s = filled(new)
    assert s.offer(old, T0) is Accepted.SUPERSEDED
    assert old.item_id not in s and live_ids(s) == {new.item_id}


def test_slots_are_separate_per_origin_and_topic() -> None:
    a = item(b"a", by=ALICE, slot="status")
    b = item(b"b", by=BOB, created_ms=T0 + 1, slot="status")
    c = item(b"c", by=ALICE, topic="other", created_ms=T0 + 1, slot="status")
    unslotted = item(b"d", by=ALICE, created_ms=T0 + 1)
    s = filled(a, b, c, unslotted)
    assert live_ids(s) == {a.item_id, b.item_id, c.item_id, unslotted.item_id}


def test_withdrawn_slot_item_still_holds_its_slot_against_older_items() -> None:
    held = item(b"v2", created_ms=T0 + 2, slot="status")
    s = filled(held, withdrawn(held))
    assert s.offer(item(b"v1", created_ms=T0 + 1, slot="status"), T0) is Accepted.SUPERSEDED
    newer = item(b"v3", created_ms=T0 + 3, slot="status")
    assert s.offer(newer, T0) is Accepted.NEW
    assert live_ids(s) == {newer.item_id}


def test_withdrawal_of_an_older_slot_item_does_not_free_the_slot() -> None:
    # A tombstone of an old version must not let a version older than the held one in.
    older = item(b"v1", created_ms=T0 + 1, slot="status")
    middle = item(b"v2", created_ms=T0 + 2, slot="status")
    newest = item(b"v3", created_ms=T0 + 3, slot="status")
    s = filled(newest)
    assert s.offer(withdrawn(older), T0) is Accepted.WITHDRAWN
    assert s.offer(middle, T0) is Accepted.SUPERSEDED
    assert live_ids(s) == {newest.item_id}


# -- caps ------------------------------------------------------------------------------------


def test_origin_beyond_its_share_is_refused() -> None:
    s = store(per_origin=2)
    assert s.offer(item(b"1", by=ALICE), T0) is Accepted.NEW
    assert s.offer(item(b"2", by=ALICE), T0) is Accepted.NEW
    third = item(b"3", by=ALICE)
    assert s.offer(third, T0) is Accepted.FULL
    assert s.offer(withdrawn(third), T0) is Accepted.FULL
    assert third.item_id not in s
    assert s.offer(item(b"1", by=BOB), T0) is Accepted.NEW


def test_full_store_refuses_more_items() -> None:
    s = store(max_items=2)
    assert s.offer(item(by=ALICE), T0) is Accepted.NEW
    assert s.offer(item(by=BOB), T0) is Accepted.NEW
    assert s.offer(item(by=CAROL), T0) is Accepted.FULL
    assert len(s) == 2


def test_own_items_are_exempt_from_the_caps() -> None:
    s = store(max_items=1, per_origin=1, own_origin=ALICE.node_id)
    assert s.offer(item(by=BOB), T0) is Accepted.NEW
    for n in range(3):
        assert s.offer(item(bytes([n]), by=ALICE), T0) is Accepted.NEW
    assert len(s) == 4
    assert s.offer(item(by=CAROL), T0) is Accepted.FULL


def test_withdrawal_of_a_held_item_is_accepted_in_a_full_store() -> None:
    it = item(by=BOB)
    s = store(max_items=1, per_origin=1)
    s.offer(it, T0)
    assert s.offer(withdrawn(it), T0) is Accepted.WITHDRAWN


def test_slot_replacement_is_accepted_when_the_origin_share_is_full() -> None:
    s = store(per_origin=1)
    old = item(b"v1", by=BOB, slot="status")
    new = item(b"v2", by=BOB, created_ms=T0 + 1, slot="status")
    s.offer(old, T0)
    assert s.offer(new, T0) is Accepted.NEW
    assert live_ids(s) == {new.item_id}
    assert s.offer(item(b"other", by=BOB), T0) is Accepted.FULL


def test_slot_replacement_in_a_store_overfilled_by_own_items_keeps_the_slot() -> None:
    # Own items may push the store beyond max_items; a foreign slot update then must not
    # drop the held version without storing the new one.
    s = store(max_items=2, own_origin=ALICE.node_id)
    old = item(b"v1", by=BOB, slot="status")
    new = item(b"v2", by=BOB, created_ms=T0 + 1, slot="status")
    s.offer(old, T0)
    for n in range(3):
        s.offer(item(bytes([n]), by=ALICE), T0)
    assert s.offer(new, T0) is Accepted.NEW
    assert live_ids(s, "offers") >= {new.item_id} and old.item_id not in s
    assert len(s) == 4


# -- digests ---------------------------------------------------------------------------------


def some_items(count: int = 12) -> list[GossipItem]:
    return [item(bytes([n]), by=(ALICE, BOB, CAROL)[n % 3]) for n in range(count)]


def test_digest_of_an_empty_subnet_is_all_zero() -> None:
    assert store().digest(SUBNET) == EMPTY_DIGEST
    assert len(filled(*some_items()).digest("unknown")) == DIGEST_BUCKETS


def test_digest_does_not_depend_on_insertion_order() -> None:
    items = some_items()
    a = filled(*items)
    b = filled(*reversed(items))
    assert a.digest(SUBNET) == b.digest(SUBNET) != EMPTY_DIGEST
    assert a.differing_buckets(SUBNET, b.digest(SUBNET)) == []


def test_digest_differs_exactly_in_the_bucket_of_a_differing_item() -> None:
    common = some_items()
    extra = item(b"extra", by=BOB)
    a = filled(*common)
    b = filled(*common, extra)
    assert a.digest(SUBNET) != b.digest(SUBNET)
    assert a.differing_buckets(SUBNET, b.digest(SUBNET)) == [bucket_of(extra.item_id)]
    assert b.differing_buckets(SUBNET, a.digest(SUBNET)) == [bucket_of(extra.item_id)]


def test_digest_differs_where_two_stores_hold_different_items() -> None:
    common = some_items()
    mine, theirs = item(b"mine", by=ALICE), item(b"theirs", by=BOB)
    a = filled(*common, mine)
    b = filled(*common, theirs)
    expected = sorted({bucket_of(mine.item_id), bucket_of(theirs.item_id)})
    assert a.differing_buckets(SUBNET, b.digest(SUBNET)) == expected


def test_digest_differs_when_an_item_is_withdrawn_in_one_store() -> None:
    items = some_items()
    a = filled(*items)
    b = filled(*items, withdrawn(items[4]))
    assert b.differing_buckets(SUBNET, a.digest(SUBNET)) == [bucket_of(items[4].item_id)]
    a.offer(withdrawn(items[4]), T0)
    assert a.digest(SUBNET) == b.digest(SUBNET)


def test_digest_covers_only_its_subnet() -> None:
    items = some_items()
    a = filled(*items)
    b = filled(*items, item(subnet="gpu"))
    assert a.digest(SUBNET) == b.digest(SUBNET)
    assert a.digest("gpu") != b.digest("gpu")


def test_bucket_of_is_within_range_and_follows_the_id_prefix() -> None:
    for it in some_items(40):
        assert 0 <= bucket_of(it.item_id) < DIGEST_BUCKETS
    assert bucket_of("00" + "f" * 62) == 0
    assert bucket_of("ff" + "0" * 62) == 255 % DIGEST_BUCKETS


def test_entries_list_a_subnets_items_in_the_given_buckets() -> None:
    items = some_items()
    gone = items[0]
    s = filled(*items, withdrawn(gone), item(subnet="gpu"))
    everything = dict(s.entries(SUBNET, ALL_BUCKETS))
    assert everything == {it.item_id: it is gone for it in items}
    one = bucket_of(items[1].item_id)
    assert {i for i, _ in s.entries(SUBNET, [one])} == {
        it.item_id for it in items if bucket_of(it.item_id) == one
    }


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_pulls_what_the_peer_has_that_we_lack_and_its_withdrawals() -> None:
    ours, theirs = item(b"ours", by=ALICE), item(b"theirs", by=BOB)
    retracted = item(b"retracted", by=CAROL)
    s = filled(ours, retracted)
    to_pull, _ = s.reconcile(
        SUBNET, ALL_BUCKETS, ((ours.item_id, False), (theirs.item_id, False), (retracted.item_id, True))
    )
    assert sorted(to_pull) == sorted([theirs.item_id, retracted.item_id])


def test_reconcile_pushes_what_the_peer_lacks_and_our_withdrawals_it_holds_live() -> None:
    shared, ours_only = item(b"shared", by=ALICE), item(b"ours", by=BOB)
    retracted = item(b"retracted", by=CAROL)
    s = filled(shared, ours_only, retracted, withdrawn(retracted))
    to_pull, to_push = s.reconcile(SUBNET, ALL_BUCKETS, ((shared.item_id, False), (retracted.item_id, False)))
    assert to_pull == []
    assert {it.item_id: it.withdrawn for it in to_push} == {ours_only.item_id: False, retracted.item_id: True}


def test_reconcile_of_equal_states_exchanges_nothing() -> None:
    items = some_items()
    s = filled(*items, withdrawn(items[0]))
    assert s.reconcile(SUBNET, ALL_BUCKETS, tuple(s.entries(SUBNET, ALL_BUCKETS))) == ([], [])


def test_reconcile_pushes_only_items_of_the_given_buckets() -> None:
    items = some_items(30)
    s = filled(*items)
    bucket = bucket_of(items[0].item_id)
    _, to_push = s.reconcile(SUBNET, (bucket,), ())
    assert {it.item_id for it in to_push} == {it.item_id for it in items if bucket_of(it.item_id) == bucket}


def anti_entropy(initiator: GossipStore, responder: GossipStore, now_ms: int) -> None:
    """One exchange as two linked nodes run it, the messages replaced by calls."""
    # initiator -> GossipDigest -> responder
    buckets = responder.differing_buckets(SUBNET, initiator.digest(SUBNET))
    if not buckets:
        return
    # responder -> GossipIds -> initiator
    entries = tuple(responder.entries(SUBNET, buckets))
    to_pull, to_push = initiator.reconcile(SUBNET, tuple(buckets), entries)
    # initiator -> GossipPull -> responder -> GossipPush(solicited) -> initiator
    for item_id in to_pull:
        stored = responder.get(item_id)
        assert stored is not None
        initiator.offer(stored.item, now_ms)
    # initiator -> GossipPush -> responder
    for pushed in to_push:
        responder.offer(pushed, now_ms)


def two_diverged_stores() -> tuple[GossipStore, GossipStore, set[str]]:
    """Disjoint, shared, withdrawn and slot-conflicting items; the live ids both should end with."""
    shared = [item(bytes([n]), by=ALICE, topic="shared") for n in range(6)]
    only_a = [item(bytes([n]), by=BOB, topic="a") for n in range(5)]
    only_b = [item(bytes([n]), by=CAROL, topic="b") for n in range(5)]
    withdrawn_in_a, withdrawn_in_b = shared[0], shared[1]
    tombstone_in_a = item(b"never seen by b", by=BOB)
    a_status = item(b"v1", by=ALICE, created_ms=T0 + 1, slot="status")
    b_status = item(b"v2", by=ALICE, created_ms=T0 + 2, slot="status")
    a_load = item(b"load v2", by=BOB, created_ms=T0 + 2, slot="load")
    b_load = item(b"load v1", by=BOB, created_ms=T0 + 1, slot="load")
    a = filled(*shared, *only_a, withdrawn(withdrawn_in_a), withdrawn(tombstone_in_a), a_status, a_load)
    b = filled(*reversed(shared), *only_b, withdrawn(withdrawn_in_b), b_status, b_load)
    expected = {it.item_id for it in shared[2:] + only_a + only_b} | {b_status.item_id, a_load.item_id}
    return a, b, expected


@pytest.mark.parametrize("a_starts", [True, False])
def test_one_anti_entropy_exchange_makes_two_stores_equal(a_starts: bool) -> None:
    a, b, expected = two_diverged_stores()
    assert a.digest(SUBNET) != b.digest(SUBNET)
    if a_starts:
        anti_entropy(a, b, T0 + 10)
    else:
        anti_entropy(b, a, T0 + 10)
    assert a.digest(SUBNET) == b.digest(SUBNET)
    assert live_ids(a) == live_ids(b) == expected
    assert a.differing_buckets(SUBNET, b.digest(SUBNET)) == []
    # a second exchange, either way round, finds nothing to do
    for first, second in ((a, b), (b, a)):
        entries = tuple(second.entries(SUBNET, ALL_BUCKETS))
        assert first.reconcile(SUBNET, ALL_BUCKETS, entries) == ([], [])


def test_anti_entropy_spreads_items_along_a_chain() -> None:
    a = filled(*[item(bytes([n]), by=ALICE) for n in range(4)])
    b = store()
    c = filled(*[item(bytes([n]), by=CAROL) for n in range(4)])
    anti_entropy(a, b, T0)
    anti_entropy(b, c, T0)
    anti_entropy(a, b, T0)
    assert a.digest(SUBNET) == b.digest(SUBNET) == c.digest(SUBNET)
    assert len(live_ids(a)) == 8
