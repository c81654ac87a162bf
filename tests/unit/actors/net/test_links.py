"""The peer table: newest record per node, bounded size, dial back-off and address rotation."""

from __future__ import annotations

import random

import pytest

from actors.net.links import PeerTable, backoff_ms
from protocol.identity import Identity
from protocol.net import PeerRecord

__all__: list[str] = []

ME = Identity(bytes([1]) * 32)
PEERS = [Identity(bytes([k]) * 32) for k in range(2, 12)]
ALICE, BOB, CAROL, DAVE = PEERS[:4]
T0 = 1_000_000
ADDR = "tcp://127.0.0.1:1"


def record(
    identity: Identity,
    seq: int = 1,
    *,
    addresses: tuple[str, ...] = (ADDR,),
    subnets: tuple[str, ...] = ("public",),
) -> PeerRecord:
    return PeerRecord(identity.node_id, identity.curve_public, addresses, subnets, (), seq).signed(identity)


def table(max_peers: int = 100) -> PeerTable:
    return PeerTable(ME.node_id, max_peers)


def ids(entries: list) -> list[str]:
    return [getattr(e, "record", e).node_id for e in entries]


# -- learn ----------------------------------------------------------------------------------


def test_unknown_peer_is_learned() -> None:
    peers = table()
    rec = record(ALICE)
    assert peers.learn(rec, T0)
    entry = peers.get(ALICE.node_id)
    assert entry is not None and entry.record == rec and entry.last_seen_ms == T0
    assert len(peers) == 1


def test_only_a_newer_seq_replaces_a_record() -> None:
    peers = table()
    assert peers.learn(record(ALICE, seq=2), T0)
    assert not peers.learn(record(ALICE, seq=1), T0 + 1)
    assert not peers.learn(record(ALICE, seq=2, subnets=("gpu",)), T0 + 2)
    assert peers.get(ALICE.node_id).record.subnets == ("public",)
    newer = record(ALICE, seq=3, subnets=("gpu",))
    assert peers.learn(newer, T0 + 3)
    entry = peers.get(ALICE.node_id)
    assert entry.record == newer and entry.last_seen_ms == T0 + 3
    assert len(peers) == 1


def test_newer_record_learned_with_an_older_clock_keeps_last_seen() -> None:
    peers = table()
    peers.learn(record(ALICE, seq=1), T0)
    peers.learn(record(ALICE, seq=2), T0 - 500)
    assert peers.get(ALICE.node_id).last_seen_ms == T0


def test_own_record_is_ignored() -> None:
    peers = table()
    assert not peers.learn(record(ME), T0)
    assert len(peers) == 0 and peers.get(ME.node_id) is None


def test_full_table_drops_the_least_recently_seen_peer() -> None:
    peers = table(max_peers=3)
    peers.learn(record(ALICE), T0)
    peers.learn(record(BOB), T0 + 1)
    peers.learn(record(CAROL), T0 + 2)
    peers.seen(ALICE.node_id, T0 + 3)
    assert peers.learn(record(DAVE), T0 + 4)
    assert len(peers) == 3
    assert set(peers.entries) == {ALICE.node_id, CAROL.node_id, DAVE.node_id}


def test_table_never_grows_beyond_its_bound() -> None:
    peers = table(max_peers=4)
    for i, peer in enumerate(PEERS):
        peers.learn(record(peer), T0 + i)
    assert set(peers.entries) == {p.node_id for p in PEERS[-4:]}


# -- back-off --------------------------------------------------------------------------------


def test_backoff_doubles_per_failure_up_to_a_minute() -> None:
    assert [backoff_ms(n) for n in range(1, 9)] == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    assert backoff_ms(1_000) == 60_000


def test_repeated_failures_back_off_longer_up_to_a_minute() -> None:
    peers = table()
    peers.learn(record(ALICE), T0)
    waits = []
    for _ in range(10):
        peers.failed(ALICE.node_id, T0)
        waits.append(peers.get(ALICE.node_id).next_try_ms - T0)
    assert waits == sorted(waits)
    assert waits[0] > 0 and waits[1] > waits[0]
    assert max(waits) == waits[-1] == 60_000
    assert peers.get(ALICE.node_id).failures == 10


def test_failure_rotates_to_the_next_address() -> None:
    addrs = ("tcp://127.0.0.1:1", "tcp://10.0.0.1:2", "tcp://192.168.0.1:3")
    peers = table()
    peers.learn(record(ALICE, addresses=addrs), T0)
    entry = peers.get(ALICE.node_id)
    tried = [entry.endpoint()]
    for _ in range(3):
        peers.failed(ALICE.node_id, T0)
        tried.append(entry.endpoint())
    assert tried == [*addrs, addrs[0]]


def test_peer_without_addresses_has_no_endpoint() -> None:
    peers = table()
    peers.learn(record(ALICE, addresses=()), T0)
    peers.failed(ALICE.node_id, T0)
    assert peers.get(ALICE.node_id).endpoint() is None


def test_seen_clears_the_back_off() -> None:
    peers = table()
    peers.learn(record(ALICE), T0)
    peers.failed(ALICE.node_id, T0)
    peers.failed(ALICE.node_id, T0)
    peers.seen(ALICE.node_id, T0 + 10)
    entry = peers.get(ALICE.node_id)
    assert (entry.failures, entry.next_try_ms, entry.last_seen_ms) == (0, 0, T0 + 10)
    assert ids(peers.candidates(set(), (), T0 + 10, random.Random(1))) == [ALICE.node_id]


def test_unknown_node_failing_or_being_seen_changes_nothing() -> None:
    peers = table()
    peers.failed(ALICE.node_id, T0)
    peers.seen(BOB.node_id, T0)
    assert len(peers) == 0


# -- candidates and sample -------------------------------------------------------------------


def test_candidates_skip_excluded_undialable_and_backed_off_peers() -> None:
    peers = table()
    peers.learn(record(ALICE), T0)
    peers.learn(record(BOB), T0)
    peers.learn(record(CAROL, addresses=()), T0)
    peers.learn(record(DAVE), T0)
    peers.failed(DAVE.node_id, T0)
    retry_at = peers.get(DAVE.node_id).next_try_ms
    rng = random.Random(7)
    assert ids(peers.candidates({BOB.node_id}, (), T0, rng)) == [ALICE.node_id]
    assert ids(peers.candidates({BOB.node_id}, (), retry_at - 1, rng)) == [ALICE.node_id]
    assert sorted(ids(peers.candidates({BOB.node_id}, (), retry_at, rng))) == sorted([ALICE.node_id, DAVE.node_id])


@pytest.mark.parametrize("seed", range(5))
def test_candidates_sharing_a_subnet_come_first(seed: int) -> None:
    peers = table()
    gpu = {p.node_id for p in PEERS[:4]}
    for peer in PEERS[:4]:
        peers.learn(record(peer, subnets=("public", "gpu")), T0)
    for peer in PEERS[4:]:
        peers.learn(record(peer, subnets=("public",)), T0)
    ready = ids(peers.candidates(set(), ("gpu",), T0, random.Random(seed)))
    assert sorted(ready) == sorted(p.node_id for p in PEERS)
    assert set(ready[:4]) == gpu


def test_candidates_are_deterministic_for_a_seeded_rng() -> None:
    peers = table()
    for peer in PEERS:
        peers.learn(record(peer), T0)
    first = ids(peers.candidates(set(), (), T0, random.Random(3)))
    assert ids(peers.candidates(set(), (), T0, random.Random(3))) == first


def test_sample_returns_dialable_peers_without_failures() -> None:
    peers = table()
    for peer in PEERS[:6]:
        peers.learn(record(peer), T0)
    peers.learn(record(PEERS[6], addresses=()), T0)
    peers.failed(PEERS[0].node_id, T0)
    rng = random.Random(5)
    everyone = peers.sample(100, rng)
    assert sorted(ids(everyone)) == sorted(p.node_id for p in PEERS[1:6])
    some = peers.sample(3, rng)
    assert len(some) == 3 and set(ids(some)) <= set(ids(everyone))
    assert peers.sample(0, rng) == []
