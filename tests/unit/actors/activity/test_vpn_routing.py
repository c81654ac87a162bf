"""A provider's VPN routing: packets go to the node holding their destination; strangers' packets go nowhere."""

from __future__ import annotations

import socket
import struct
from typing import Any

from actors.activity.vpn_routing import VpnRouter, destination_of, node_map
from protocol.identity import to_checksum_address

ME, REQ, OTHER_PROV, STRANGER, REQ2 = (to_checksum_address(bytes([b]) * 20) for b in (1, 2, 3, 4, 5))
NET = "net-1"


def packet(src: str, dst: str, payload: bytes = b"hi") -> bytes:
    """A minimal IPv4 packet (UDP protocol number, no checksum: the router reads addresses only)."""
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header + payload


def deploy(ip: str, nodes: dict[str, str], network: str = NET) -> list[dict[str, Any]]:
    return [{"deploy": {"net": [{"id": network, "ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": ip, "nodes": nodes}]}},
            {"start": {}}]  # fmt: skip


MAP = {"192.168.0.1": REQ, "192.168.0.2": ME, "192.168.0.3": OTHER_PROV}


def test_packets_leave_for_the_node_holding_their_destination() -> None:
    router = VpnRouter(ME)
    router.deploy("a1", REQ, deploy("192.168.0.2", MAP))
    remote, local = router.outgoing("a1", NET, [packet("192.168.0.2", "192.168.0.3"), packet("192.168.0.2", "192.168.0.3", b"x")])
    assert list(remote) == [OTHER_PROV] and len(remote[OTHER_PROV]) == 2 and local == {}
    # To the requestor's address (it takes TCP tunnels), to an unknown address, not IPv4, another network: dropped.
    remote, local = router.outgoing("a1", NET, [
        packet("192.168.0.2", "192.168.0.1"), packet("192.168.0.2", "192.168.0.77"), b"\x60" + b"\x00" * 39,
    ])  # fmt: skip
    assert remote == {} and local == {}
    assert router.outgoing("a1", "other-net", [packet("192.168.0.2", "192.168.0.3")]) == ({}, {})
    assert router.outgoing("nobody", NET, [packet("192.168.0.2", "192.168.0.3")]) == ({}, {})
    assert router.counters == {"packets_out": 2, "packets_in": 0, "packets_dropped": 5}


def test_packets_arrive_only_from_members_of_the_activitys_network() -> None:
    router = VpnRouter(ME)
    router.deploy("a1", REQ, deploy("192.168.0.2", MAP))
    assert router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.2")]) == {"a1": [packet("192.168.0.3", "192.168.0.2")]}
    assert router.incoming(STRANGER, NET, [packet("192.168.0.9", "192.168.0.2")]) == {}  # not in the map
    assert router.incoming(REQ, NET, [packet("192.168.0.1", "192.168.0.2")]) == {}  # the requestor sends no packets
    assert router.incoming(OTHER_PROV, "other-net", [packet("192.168.0.3", "192.168.0.2")]) == {}
    assert router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.4")]) == {}  # nobody here holds .4
    assert router.incoming(OTHER_PROV, NET, [b"garbage"]) == {}


def test_a_newer_map_from_the_requestor_lets_a_later_member_in_and_reaches_later_activities() -> None:
    router = VpnRouter(ME)
    router.deploy("a1", REQ, deploy("192.168.0.2", {"192.168.0.1": REQ, "192.168.0.2": ME}))
    assert router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.2")]) == {}
    router.announce(REQ, NET, MAP)
    assert list(router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.2")])) == ["a1"]
    # Another requestor announcing a map for the same network id changes nothing of ours.
    router.announce(REQ2, NET, {"192.168.0.2": STRANGER})
    assert list(router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.2")])) == ["a1"]
    # An activity deployed after the announcement gets the newer map even if its deploy's is older.
    router.announce(REQ, "net-2", {"10.0.0.1": REQ, "10.0.0.2": ME, "10.0.0.3": OTHER_PROV})
    router.deploy("a2", REQ, deploy("10.0.0.2", {"10.0.0.1": REQ, "10.0.0.2": ME}, network="net-2"))
    assert list(router.outgoing("a2", "net-2", [packet("10.0.0.2", "10.0.0.3")])[0]) == [OTHER_PROV]
    router.forget("a1")
    assert router.incoming(OTHER_PROV, NET, [packet("192.168.0.3", "192.168.0.2")]) == {}


def test_two_activities_of_one_requestor_on_this_node_reach_each_other_locally() -> None:
    router = VpnRouter(ME)
    nodes = {"192.168.0.1": REQ, "192.168.0.2": ME, "192.168.0.3": ME}
    router.deploy("a1", REQ, deploy("192.168.0.2", nodes))
    router.deploy("a2", REQ, deploy("192.168.0.3", nodes))
    remote, local = router.outgoing("a1", NET, [packet("192.168.0.2", "192.168.0.3")])
    assert remote == {} and list(local) == ["a2"]
    # Another requestor's activity with the same network id and address is not reached.
    router.deploy("b1", REQ2, deploy("192.168.0.4", {"192.168.0.4": ME, "192.168.0.2": ME}))
    assert router.outgoing("b1", NET, [packet("192.168.0.4", "192.168.0.2")]) == ({}, {})


def test_maps_and_deploys_of_the_wrong_shape_are_ignored() -> None:
    assert node_map({"192.168.0.1": REQ, "nope": REQ, "10.0.0.1": "not-a-node", 5: REQ}) == {"192.168.0.1": REQ}
    assert node_map(["192.168.0.1"]) == {}
    assert destination_of(packet("1.2.3.4", "5.6.7.8")) == "5.6.7.8" and destination_of(b"\x45") is None
    router = VpnRouter(ME)
    for script in (None, "deploy", [{"deploy": {"net": "x"}}], [{"deploy": {"net": [{"id": 5, "nodeIp": "1.2.3.4"}]}}],
                   [{"deploy": {"net": [{"id": "n", "nodeIp": "not-an-ip"}]}}], [{"deploy": {"net": [None, 3]}}]):  # fmt: skip
        router.deploy("a1", REQ, script)
    assert router.address("a1", "n") is None
