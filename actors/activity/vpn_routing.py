"""Where a provider's VPN packets go: the bookkeeping of its activities' networks (no I/O).

An activity joins a requestor's network when its `deploy` names it (address and the map of
who holds which address); the requestor announces newer maps as nodes join
(`ActivityVpnNodes`). Packets leaving an activity go to the node holding the destination
address; packets arriving from another node go to the activity holding the destination,
only if the sender is in that activity's network:

    router = VpnRouter(own_node_id)
    router.deploy(activity_id, requestor_id, script)           # from the exe-script
    remote, local = router.outgoing(activity_id, network_id, packets)
    for node, batch in remote.items(): net.send(node, ActivityPackets(network_id, batch))
    for activity, batch in router.incoming(sender, network_id, packets).items(): ...
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from protocol.identity import is_node_id

__all__ = ["VpnRouter", "node_map", "destination_of", "MAX_MAPS"]

MAX_MAPS = 1024  # announced maps kept for activities not deployed yet
_MAX_NETWORKS = 4
_MAX_NODES = 1024


def node_map(nodes: Any) -> dict[str, str]:
    """{ip: node id} of the entries that are an IPv4 address and a node id (at most 1024; the rest is ignored)."""
    out: dict[str, str] = {}
    if not isinstance(nodes, dict):
        return out
    for ip, node in list(nodes.items())[:_MAX_NODES]:
        if isinstance(ip, str) and isinstance(node, str) and is_node_id(node) and _is_ipv4(ip):
            out[ip] = node
    return out


def destination_of(packet: bytes) -> str | None:
    """The destination address of an IPv4 packet (None for anything else)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return socket.inet_ntoa(packet[16:20])


def _is_ipv4(text: str) -> bool:
    if text.count(".") != 3:
        return False
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


@dataclass
class _Member:
    requestor_id: str
    addresses: dict[str, str] = field(default_factory=dict)  # network id -> the activity's address
    maps: dict[str, dict[str, str]] = field(default_factory=dict)  # network id -> {ip: node id}


class VpnRouter:
    """The networks of a provider's activities, and the routing of their packets."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._members: dict[str, _Member] = {}  # activity id -> its networks
        self._announced: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()  # (requestor, network) -> map
        self.counters = {"packets_out": 0, "packets_in": 0, "packets_dropped": 0}

    def deploy(self, activity_id: str, requestor_id: str, script: Any) -> None:
        """Note the networks a `deploy` of the script puts the activity in (malformed entries are skipped:
        the exe-unit refuses them with a message)."""
        for command in script if isinstance(script, (list, tuple)) else ():
            params = command.get("deploy") if isinstance(command, dict) else None
            nets = params.get("net") if isinstance(params, dict) else None
            if not isinstance(nets, list):
                continue
            member = self._members.setdefault(activity_id, _Member(requestor_id))
            for entry in nets[:_MAX_NETWORKS]:
                if not isinstance(entry, dict):
                    continue
                network_id, address = entry.get("id"), entry.get("nodeIp")
                if not isinstance(network_id, str) or not 0 < len(network_id) <= 128 or not isinstance(address, str):
                    continue
                if not _is_ipv4(address):
                    continue
                member.addresses[network_id] = address
                known = node_map(entry.get("nodes"))
                known.update(self._announced.get((requestor_id, network_id), {}))
                member.maps[network_id] = known

    def announce(self, requestor_id: str, network_id: str, nodes: Any) -> None:
        """The requestor's newest map of a network (kept for activities deployed into it later)."""
        known = node_map(nodes)
        key = (requestor_id, network_id)
        self._announced[key] = known
        self._announced.move_to_end(key)
        while len(self._announced) > MAX_MAPS:
            self._announced.popitem(last=False)
        for member in self._members.values():
            if member.requestor_id == requestor_id and network_id in member.addresses:
                member.maps[network_id] = dict(known)

    def forget(self, activity_id: str) -> None:
        """The activity ended."""
        self._members.pop(activity_id, None)

    def address(self, activity_id: str, network_id: str) -> str | None:
        """The activity's address in a network, if it joined it."""
        member = self._members.get(activity_id)
        return member.addresses.get(network_id) if member else None

    def outgoing(
        self, activity_id: str, network_id: str, packets: tuple[bytes, ...] | list[bytes]
    ) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
        """Packets leaving an activity: ({node id: packets} to send, {activity id: packets} for activities here).

        Dropped: packets of a network the activity is not in, not IPv4, or for an address no
        member holds (the requestor's own addresses take TCP tunnels, not packets).
        """
        member = self._members.get(activity_id)
        remote: dict[str, list[bytes]] = {}
        local: dict[str, list[bytes]] = {}
        nodes = member.maps.get(network_id) if member else None
        for packet in packets:
            destination = destination_of(packet)
            node = nodes.get(destination) if nodes and destination else None
            if member is None or node is None or node == member.requestor_id:
                self.counters["packets_dropped"] += 1
                continue
            if node == self.node_id:
                target = self._holder(network_id, destination, requestor_id=member.requestor_id)  # type: ignore[arg-type]
                if target is None or target == activity_id:
                    self.counters["packets_dropped"] += 1
                    continue
                local.setdefault(target, []).append(packet)
            else:
                remote.setdefault(node, []).append(packet)
            self.counters["packets_out"] += 1
        return remote, local

    def incoming(self, sender: str, network_id: str, packets: tuple[bytes, ...] | list[bytes]) -> dict[str, list[bytes]]:
        """Packets from another node: {activity id: packets} for the activities holding their destinations.

        Only a node in that activity's network (by the requestor's map) may send to it; the rest is dropped.
        """
        out: dict[str, list[bytes]] = {}
        for packet in packets:
            destination = destination_of(packet)
            target = self._holder(network_id, destination, sender=sender) if destination else None
            if target is None:
                self.counters["packets_dropped"] += 1
                continue
            out.setdefault(target, []).append(packet)
            self.counters["packets_in"] += 1
        return out

    def _holder(self, network_id: str, address: str, *, requestor_id: str = "", sender: str = "") -> str | None:
        for activity_id, member in self._members.items():
            if member.addresses.get(network_id) != address:
                continue
            if requestor_id and member.requestor_id == requestor_id:
                return activity_id
            if sender and sender != member.requestor_id and sender in member.maps.get(network_id, {}).values():
                return activity_id
        return None
