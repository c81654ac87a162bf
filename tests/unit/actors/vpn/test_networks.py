"""A requestor's virtual networks: ranges, its addresses and nodes, and every bad request refused clearly."""

from __future__ import annotations

import pytest

from actors.vpn.networks import Networks
from protocol.errors import VpnConflictError, VpnError, VpnNotFoundError

P1, P2 = "0x" + "1" * 40, "0x" + "2" * 40


def test_a_network_from_a_prefix_or_a_mask() -> None:
    nets = Networks()
    a = nets.create("192.168.0.1/24")
    # As Golem's node answers: the address asked for, with the prefix (clients take the range from it).
    assert a.to_json() == {"id": a.id, "ip": "192.168.0.1/24", "mask": "255.255.255.0", "gateway": None}
    assert str(a.net) == "192.168.0.0/24"
    b = nets.create("10.1.0.0", "255.255.0.0", "10.1.0.1")
    assert b.to_json()["mask"] == "255.255.0.0" and b.to_json()["gateway"] == "10.1.0.1"
    c = nets.create("172.16.5.0")  # no size: a /24
    assert str(c.net) == "172.16.5.0/24" and c.to_json()["ip"] == "172.16.5.0/24"
    assert [n.id for n in nets.all()] == [a.id, b.id, c.id] and len({a.id, b.id, c.id}) == 3
    nets.remove(b.id)
    with pytest.raises(VpnNotFoundError):
        nets.get(b.id)


@pytest.mark.parametrize(
    ("ip", "mask", "gateway", "message"),
    [
        ("", None, None, "network's address"),
        (7, None, None, "network's address"),
        ("300.1.1.1", None, None, "not an IPv4 network"),
        ("10.0.0.0", "255.0.255.0", None, "not an IPv4 network"),
        ("10.0.0.0/8", "255.0.0.0", None, "not both"),
        ("10.0.0.0/31", None, None, "too small"),
        ("10.0.0.0/24", None, "10.0.1.1", "not inside"),
        ("10.0.0.0/24", None, "nope", "not an IPv4 address"),
        ("10.0.0.0", 24, None, "dotted netmask"),
    ],
)
def test_bad_networks_are_refused(ip: object, mask: object, gateway: object, message: str) -> None:
    with pytest.raises(VpnError, match=message):
        Networks().create(ip, mask, gateway)


def test_addresses_and_nodes_are_unique_and_repeats_are_no_ops() -> None:
    nets = Networks()
    net = nets.create("192.168.0.0/24")
    assert nets.add_address(net.id, "192.168.0.1") == "192.168.0.1"
    nets.add_address(net.id, "192.168.0.1")  # again: fine
    nets.add_node(net.id, P1, "192.168.0.2")
    nets.add_node(net.id, P1.upper().replace("0X", "0x"), "192.168.0.2")  # same node, same address (any case): fine
    with pytest.raises(VpnConflictError, match="already the address"):
        nets.add_node(net.id, P2, "192.168.0.2")
    with pytest.raises(VpnConflictError, match="already the address"):
        nets.add_node(net.id, P2, "192.168.0.1")  # the requestor's
    with pytest.raises(VpnConflictError, match="already the address"):
        nets.add_address(net.id, "192.168.0.2")  # a node's
    nets.add_node(net.id, P1, "192.168.0.3")  # a second activity of the same node: a second address
    assert nets.node_at(net.id, "192.168.0.3") == P1
    with pytest.raises(VpnError, match="not inside"):
        nets.add_node(net.id, P2, "10.0.0.3")
    with pytest.raises(VpnError, match="broadcast"):
        nets.add_node(net.id, P2, "192.168.0.255")
    with pytest.raises(VpnError, match="not a node id"):
        nets.add_node(net.id, "provider-2", "192.168.0.3")
    assert nets.node_at(net.id, "192.168.0.2") == P1
    with pytest.raises(VpnNotFoundError):
        nets.node_at(net.id, "192.168.0.9")
    assert nets.remove_node(net.id, P1) == ["192.168.0.2", "192.168.0.3"]
    with pytest.raises(VpnNotFoundError):
        nets.remove_node(net.id, P1)
    nets.add_node(net.id, P2, "192.168.0.2")  # the address is free again
    with pytest.raises(VpnNotFoundError):
        nets.add_node("nope", P1, "192.168.0.5")


def test_the_requestor_added_as_a_node_is_one_of_its_own_addresses() -> None:
    """yapapi refreshes every node of its network, the requestor's own entry among them."""
    me = "0x" + "3" * 40
    nets = Networks(owner=me)
    net = nets.create("192.168.0.0/24")
    nets.add_address(net.id, "192.168.0.1")
    assert nets.add_node(net.id, me, "192.168.0.1") == "192.168.0.1"  # its own address: a no-op
    assert net.addresses == ["192.168.0.1"] and net.nodes == {}
    nets.add_node(net.id, me, "192.168.0.5")  # another one: an address of its own
    assert net.addresses == ["192.168.0.1", "192.168.0.5"]
    nets.add_node(net.id, P1, "192.168.0.2")
    with pytest.raises(VpnConflictError, match="already the address"):
        nets.add_node(net.id, me, "192.168.0.2")  # a provider's
