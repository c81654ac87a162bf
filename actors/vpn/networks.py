"""A requestor's virtual networks: address ranges, its own addresses and the provider nodes in each.

What Golem's net-api manages (no I/O here; the VpnActor keeps one `Networks`):

    nets = Networks(owner="0xReq…")
    net = nets.create("192.168.0.1/24")          # 192.168.0.0/24: ip "192.168.0.1/24", mask 255.255.255.0
    nets.add_address(net.id, "192.168.0.1")       # the requestor's own address
    nets.add_node(net.id, "0xProv…", "192.168.0.2")
    nets.node_at(net.id, "192.168.0.2")           # -> "0xProv…"
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import VpnConflictError, VpnError, VpnNotFoundError
from protocol.identity import to_checksum_address

__all__ = ["Network", "Networks", "MAX_NETWORKS", "MAX_NODES"]

MAX_NETWORKS = 256
MAX_NODES = 1024


@dataclass
class Network:
    """One virtual network: its range, the requestor's addresses and the nodes' (ip -> node id; a node may hold several)."""

    id: str
    net: ipaddress.IPv4Network
    gateway: str | None
    address: str = ""  # the address the network was asked for (may have host bits: 192.168.0.1 of 192.168.0.0/24)
    addresses: list[str] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The spec's Network; ip with its prefix, as asked for (as Golem's node answers: clients read the range from it)."""
        ip = f"{self.address or self.net.network_address}/{self.net.prefixlen}"
        return {"id": self.id, "ip": ip, "mask": str(self.net.netmask), "gateway": self.gateway}

    def taken(self) -> dict[str, str]:
        """Every address in use -> who holds it (a node id, or "requestor")."""
        out = dict(self.nodes)
        out.update({ip: "requestor" for ip in self.addresses})
        return out


def _address(value: Any, what: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise VpnError(f"{what} must be an IPv4 address as a string, not {type(value).__name__}")
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise VpnError(f"{what} {value[:60]!r} is not an IPv4 address") from None


def _node_id(value: Any) -> str:
    """A node id in its checksummed form, whatever the case it came in."""
    if isinstance(value, str) and len(value) == 42 and value[:2] in ("0x", "0X"):
        try:
            return to_checksum_address(bytes.fromhex(value[2:]))
        except ValueError:
            pass
    raise VpnError(f"id {str(value)[:60]!r} is not a node id (0x and 40 hex digits)")


class Networks:
    """The networks one requestor node created."""

    def __init__(self, owner: str = "") -> None:
        self._owner = owner  # the requestor's node id: clients may add it as a node at its own addresses
        self._nets: dict[str, Network] = {}

    def create(self, ip: Any, mask: Any = None, gateway: Any = None) -> Network:
        """A new network from `ip` ("192.168.0.0", or with a prefix "192.168.0.1/24") and an optional mask.

        Without a mask or prefix the range is a /24. Raises VpnError for bad addresses.
        """
        if not isinstance(ip, str) or not ip.strip():
            raise VpnError("ip must be the network's address, e.g. 192.168.0.0 or 192.168.0.0/24")
        if mask is not None and not isinstance(mask, str):
            raise VpnError("mask must be a dotted netmask such as 255.255.255.0")
        text = ip.strip()
        if "/" in text and mask:
            raise VpnError("give the network's size either as a prefix in ip or as mask, not both")
        spec = text if "/" in text else f"{text}/{mask.strip() if mask else '24'}"
        try:
            net = ipaddress.IPv4Network(spec, strict=False)
        except ValueError as exc:
            raise VpnError(f"{spec[:80]!r} is not an IPv4 network: {exc}") from None
        if net.num_addresses < 4:
            raise VpnError(f"network {net} is too small: it needs room for the requestor and a node")
        gw: str | None = None
        if gateway not in (None, ""):
            address = _address(gateway, "gateway")
            if address not in net:
                raise VpnError(f"gateway {address} is not inside {net}")
            gw = str(address)
        if len(self._nets) >= MAX_NETWORKS:
            raise VpnError(f"at most {MAX_NETWORKS} networks at a time; remove some first")
        network = Network(secrets.token_hex(16), net, gw, str(ipaddress.IPv4Interface(spec).ip))
        self._nets[network.id] = network
        return network

    def get(self, network_id: str) -> Network:
        """The network; VpnNotFoundError when there is none with that id."""
        network = self._nets.get(network_id)
        if network is None:
            raise VpnNotFoundError(f"network {network_id[:80]!r} not found")
        return network

    def all(self) -> list[Network]:
        """Every network, oldest first."""
        return list(self._nets.values())

    def remove(self, network_id: str) -> Network:
        """Remove a network; returns it. VpnNotFoundError when there is none."""
        network = self.get(network_id)
        del self._nets[network_id]
        return network

    def _host(self, network: Network, ip: Any, what: str) -> str:
        address = _address(ip, what)
        if address not in network.net:
            raise VpnError(f"{what} {address} is not inside network {network.net}")
        if address in (network.net.network_address, network.net.broadcast_address):
            raise VpnError(f"{what} {address} is the network's own or broadcast address")
        return str(address)

    def add_address(self, network_id: str, ip: Any) -> str:
        """Give the requestor an address in the network (a repeat is a no-op); VpnConflictError when a node holds it."""
        network = self.get(network_id)
        host = self._host(network, ip, "ip")
        holder = network.taken().get(host)
        if holder == "requestor":
            return host
        if holder is not None:
            raise VpnConflictError(f"{host} is already the address of node {holder} in network {network_id}")
        network.addresses.append(host)
        return host

    def add_node(self, network_id: str, node_id: Any, ip: Any) -> str:
        """Add a node at an address; a node may hold several (one per activity), a repeat is a no-op.

        Raises:
            VpnError: not a node id, or an address outside the network.
            VpnConflictError: the address is another node's or the requestor's.
        """
        network = self.get(network_id)
        node_id = _node_id(node_id)
        host = self._host(network, ip, "ip")
        holder = network.taken().get(host)
        if holder == node_id:
            return host
        if node_id == self._owner:
            # The requestor itself (yapapi re-adds every node of its network, its own among them):
            # an address of its own.
            if holder is None:
                network.addresses.append(host)
            elif holder != "requestor":
                raise VpnConflictError(f"{host} is already the address of {holder} in network {network_id}")
            return host
        if holder is not None:
            raise VpnConflictError(f"{host} is already the address of {holder} in network {network_id}")
        if len(network.nodes) >= MAX_NODES:
            raise VpnError(f"at most {MAX_NODES} node addresses in a network")
        network.nodes[host] = node_id
        return host

    def remove_node(self, network_id: str, node_id: str) -> list[str]:
        """Take a node out (all its addresses); returns them. VpnNotFoundError when it is not in the network."""
        network = self.get(network_id)
        hosts = [ip for ip, node in network.nodes.items() if node.lower() == node_id.lower()]
        if not hosts:
            raise VpnNotFoundError(f"node {node_id[:60]} is not in network {network_id}")
        for ip in hosts:
            del network.nodes[ip]
        return hosts

    def node_at(self, network_id: str, ip: str) -> str:
        """The node id holding `ip` in the network; VpnNotFoundError when none does."""
        network = self.get(network_id)
        node = network.nodes.get(ip)
        if node is not None:
            return node
        raise VpnNotFoundError(f"no node has address {ip[:60]} in network {network_id}")
