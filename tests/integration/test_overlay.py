"""The overlay with real node processes: joining, gossip, late joiners, failures, direct messages."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import Testnet, connected, wait_for

pytestmark = pytest.mark.integration


def _start(testnet: Testnet, count: int) -> None:
    testnet.add("boot")
    for i in range(1, count):
        testnet.add(f"node-{i}", start=False).start(wait=False)
    for node in testnet.nodes[1:]:
        node.wait_ready()


def _everyone_has(nodes: list, topic: str, item_id: str) -> bool:
    return all(item_id in n.item_ids(topic) for n in nodes)


def test_ten_nodes_join_through_one_bootstrap_into_a_connected_overlay(testnet: Testnet) -> None:
    _start(testnet, 10)
    nodes = testnet.nodes
    wait_for("every node to have two neighbours", lambda: all(len(n.neighbour_ids()) >= 2 for n in nodes), 30)
    wait_for("a connected neighbour graph", lambda: connected(nodes), 30)
    # Peer exchange spread knowledge beyond the bootstrap node's direct links.
    assert all(n.status().known_peers >= 5 for n in nodes)
    # The bootstrap node is not a hub everyone hangs on: the views stay bounded.
    assert all(len(n.neighbour_ids()) <= 8 for n in nodes)


def test_an_item_gossiped_from_one_node_reaches_every_node(testnet: Testnet) -> None:
    _start(testnet, 8)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    published = nodes[5].publish("test", b"payload from node 5")
    wait_for("the item on every node", lambda: _everyone_has(nodes, "test", published.item_id), 10)
    entries = {e.item_id: e for e in nodes[0].items("test").entries}
    assert entries[published.item_id].payload == b"payload from node 5"
    assert entries[published.item_id].origin == nodes[5].node_id


def test_withdrawn_item_disappears_everywhere(testnet: Testnet) -> None:
    from protocol.control import GossipWithdrawRequest

    _start(testnet, 5)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    published = nodes[2].publish("offers", b"an offer")
    wait_for("the item everywhere", lambda: _everyone_has(nodes, "offers", published.item_id), 10)
    nodes[2].call(GossipWithdrawRequest(published.item_id))
    wait_for("the withdrawal everywhere", lambda: all(not n.item_ids("offers") for n in nodes), 10)


def test_items_expire_on_every_node(testnet: Testnet) -> None:
    _start(testnet, 3)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    published = nodes[1].publish("short", b"lives two seconds", ttl_s=2.0)
    wait_for("the item everywhere", lambda: _everyone_has(nodes, "short", published.item_id), 5)
    wait_for("expiry everywhere", lambda: all(not n.item_ids("short") for n in nodes), 10)


def test_a_node_started_late_receives_items_published_before_it_joined(testnet: Testnet) -> None:
    _start(testnet, 4)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    ids = {nodes[i % 4].publish("early", f"item {i}".encode()).item_id for i in range(20)}
    wait_for("the items everywhere", lambda: all(ids <= n.item_ids("early") for n in nodes), 30)
    late = testnet.add("late")
    wait_for("the late node to catch up", lambda: ids <= late.item_ids("early"), 30)


def test_a_killed_node_is_detected_and_the_overlay_stays_connected(testnet: Testnet) -> None:
    _start(testnet, 8)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    victim = nodes[3]
    had_victim = [n for n in nodes if victim.node_id in n.neighbour_ids()]
    assert had_victim
    victim.kill()
    survivors = [n for n in nodes if n is not victim]
    # Heartbeats stop; after dead_after_s (2.5 s in tests) every neighbour drops the link.
    wait_for(
        "the neighbours to drop the killed node",
        lambda: all(victim.node_id not in n.neighbour_ids() for n in survivors),
        15,
    )
    wait_for("survivors to refill their views", lambda: all(len(n.neighbour_ids()) >= 2 for n in survivors), 20)
    wait_for("a connected overlay without the victim", lambda: connected(survivors), 20)
    published = survivors[-1].publish("after", b"after the failure")
    wait_for("the item on every survivor", lambda: _everyone_has(survivors, "after", published.item_id), 10)


def test_a_direct_message_reaches_a_node_that_only_dials_out(testnet: Testnet) -> None:
    from protocol.control import DirectSendRequest

    _start(testnet, 5)
    nodes = testnet.nodes
    # Two neighbours at most, so that some nodes have no link to it.
    hidden = testnet.add(
        "behind-nat", listen=False, bootstrap=[nodes[0].contact],
        env={"LOAM_NET__TARGET_NEIGHBOURS": "2", "LOAM_NET__MAX_NEIGHBOURS": "2"},
    )
    assert hidden.contact is None
    wait_for("the hidden node to have neighbours", lambda: len(hidden.neighbour_ids()) == 2, 20)
    sender = next(n for n in nodes if n.node_id not in hidden.neighbour_ids())
    # The sender learns the hidden node's record (with its via list) by gossip.
    wait_for("the sender to know the hidden node", lambda: sender.status().known_peers >= 5, 10)
    time.sleep(1.0)
    reply = sender.call(DirectSendRequest(hidden.node_id, "through the overlay"))
    assert reply.path == "route"
    inbox = wait_for("the note in the hidden node's inbox", lambda: hidden.inbox().entries, 10)
    assert inbox[0].sender == sender.node_id and inbox[0].text == "through the overlay"
    # And back: the hidden node can dial the sender directly.
    hidden.call(DirectSendRequest(sender.node_id, "and back"))
    back = wait_for("the answer", lambda: sender.inbox().entries, 10)
    assert back[0].sender == hidden.node_id


def test_subnets_partition_gossip(testnet: Testnet) -> None:
    testnet.add("boot")
    a = [testnet.add(f"a-{i}", subnet="alpha") for i in range(3)]
    b = [testnet.add(f"b-{i}", subnet="beta") for i in range(3)]
    wait_for("a connected overlay", lambda: connected(testnet.nodes), 30)
    alpha_item = a[0].publish("offers", b"alpha offer").item_id
    beta_item = b[0].publish("offers", b"beta offer").item_id
    wait_for("alpha nodes to share the alpha item", lambda: _everyone_has(a, "offers", alpha_item), 10)
    wait_for("beta nodes to share the beta item", lambda: _everyone_has(b, "offers", beta_item), 10)
    time.sleep(2.5)  # a few anti-entropy rounds
    assert all(alpha_item not in n.item_ids("offers") for n in b + [testnet.nodes[0]])
    assert all(beta_item not in n.item_ids("offers") for n in a + [testnet.nodes[0]])


def test_sigterm_shuts_down_cleanly_and_a_restart_rejoins_from_saved_peers(testnet: Testnet) -> None:
    _start(testnet, 4)
    nodes = testnet.nodes
    wait_for("a connected overlay", lambda: connected(nodes), 30)
    node = nodes[2]
    time.sleep(1.0)
    assert node.stop() == 0
    assert not (node.data_dir / "node.json").exists()
    # Restart without any bootstrap address: the peers it saved bring it back.
    node.bootstrap = []
    node.start()
    assert node.status().node_id == node.node_id
    wait_for("the restarted node to rejoin", lambda: len(node.neighbour_ids()) >= 2, 20)
