"""Virtual networks for services (net-api): the requestor and vm services at addresses, TCP between them.

    async with Golem(budget=1) as golem:
        net = await golem.create_network("192.168.0.0/24")        # the requestor is 192.168.0.1
        service = await golem.run_service(VmImage(pkg), network=net, start=serve)   # 192.168.0.2
        reader, writer = await service.connect(80)
        ...
        await net.remove()                                          # or left to the session's end

A service's address is the next free host unless given (`run_service(..., ip="192.168.0.9")`).
Its provider node is added to the network before the activity's `deploy` command, which
carries the network (`net`) so that the provider puts the container in it. Only runtimes with
the `vpn` capability (vm, not wasmtime) can join.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from requestor.errors import ApiError, ConfigurationError

if TYPE_CHECKING:
    from requestor.session import Golem

__all__ = ["Network", "VPN_CONSTRAINT", "next_free_host", "check_host", "check_port"]

VPN_CONSTRAINT = "(golem.runtime.capabilities=vpn)"


def next_free_host(net: ipaddress.IPv4Network, taken: Collection[str]) -> str:
    """The lowest host address of net that is not taken.

    Raises:
        ConfigurationError: every host address is taken.

    >>> next_free_host(ipaddress.IPv4Network("10.0.0.0/29"), {"10.0.0.1"})
    '10.0.0.2'
    """
    for host in net.hosts():
        text = str(host)
        if text not in taken:
            return text
    raise ConfigurationError(f"network {net} has no free address left ({len(taken)} taken)")


def check_host(net: ipaddress.IPv4Network, ip: Any, taken: Collection[str], what: str = "ip") -> str:
    """ip as a host address of net that is free, in its canonical text.

    Raises:
        ConfigurationError: not an IPv4 address, outside net, its network or broadcast address, or taken.
    """
    if not isinstance(ip, str):
        raise ConfigurationError(f"{what} must be an IPv4 address as a string, not {type(ip).__name__}")
    try:
        address = ipaddress.IPv4Address(ip.strip())
    except ValueError:
        raise ConfigurationError(f"{what} {ip[:60]!r} is not an IPv4 address") from None
    if address not in net:
        raise ConfigurationError(f"{what} {address} is not inside network {net}")
    if net.num_addresses > 2 and address in (net.network_address, net.broadcast_address):
        raise ConfigurationError(f"{what} {address} is the network's own or broadcast address, not a host of {net}")
    if str(address) in taken:
        raise ConfigurationError(f"{what} {address} is already taken in network {net}")
    return str(address)


def check_port(port: Any) -> int:
    """A TCP port number, 1..65535.

    Raises:
        ConfigurationError: anything else.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be a whole number in 1..65535, not {port!r}")
    return port


class Network:
    """A virtual network on the requestor's node: its range, the requestor's address, the services' addresses.

    Made by `Golem.create_network`; `remove()` ends it (repeats are no-ops), as does the session's end.
    """

    def __init__(
        self, golem: Golem | None, network_id: str, ip: str, mask: str, gateway: str | None = None,
        requestor_ip: str | None = None,
    ) -> None:  # fmt: skip
        # The node answers ip as it was asked for, with its prefix ("192.168.0.1/24", as Golem's does); a bare
        # network address takes the mask.
        spec = ip if "/" in ip else f"{ip}/{mask}"
        try:
            self.net = ipaddress.IPv4Network(spec, strict=False)
        except ValueError as exc:
            raise ConfigurationError(f"network {spec} is not an IPv4 network: {exc}") from None
        self._golem = golem
        self.network_id = network_id
        self.gateway = gateway
        self.requestor_ip = (
            next_free_host(self.net, ()) if requestor_ip is None else check_host(self.net, requestor_ip, (), "requestor_ip")
        )
        self.nodes: dict[str, str] = {}  # ip -> provider node id, of the nodes added at the node
        self._reserved: set[str] = set()  # the services' addresses, deployed or not yet
        self.removed = False

    @classmethod
    async def create(
        cls, golem: Golem, ip: str, *, mask: str | None = None, gateway: str | None = None, requestor_ip: str | None = None
    ) -> Network:
        """A new network at the node, with the requestor's address added (see Golem.create_network)."""
        if not isinstance(ip, str) or not ip.strip():
            raise ConfigurationError(f"ip must be the network's address as a string (e.g. 192.168.0.0/24), not {ip!r}")
        for name, value in (("mask", mask), ("gateway", gateway), ("requestor_ip", requestor_ip)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be an IPv4 address as a string, not {value!r}")
        # The node checks the range: a bad one is its 400, with its reason, as an ApiError.
        raw = await golem.rest.net.create_network(ip.strip(), mask, gateway)
        try:
            network = cls(golem, raw["id"], raw["ip"], raw["mask"], raw.get("gateway"), requestor_ip)
            await golem.rest.net.add_address(network.network_id, network.requestor_ip)
        except BaseException:
            try:
                await golem.rest.net.remove_network(raw["id"])
            except ApiError:
                pass  # the first error is the one to see
            raise
        golem._log.info("network_created", network_id=network.network_id, net=str(network.net), ip=network.requestor_ip)
        return network

    @property
    def ip(self) -> str:
        """The network's own address (e.g. 192.168.0.0)."""
        return str(self.net.network_address)

    @property
    def mask(self) -> str:
        return str(self.net.netmask)

    def taken(self) -> set[str]:
        """Every address in use or promised: the requestor's and the services'."""
        return {self.requestor_ip, *self._reserved, *self.nodes}

    def reserve(self, ip: str | None = None) -> str:
        """An address for a service: ip if given and free, else the next free one.

        Raises:
            ConfigurationError: ip is not a free host address of the network, or none is left.
        """
        self._check_live()
        host = next_free_host(self.net, self.taken()) if ip is None else check_host(self.net, ip, self.taken())
        self._reserved.add(host)
        return host

    def release(self, ip: str) -> None:
        """A service's address is free again (after its node was removed)."""
        self._reserved.discard(ip)

    def deploy_args(self, ip: str) -> dict[str, Any]:
        """The `deploy` command's arguments that put an activity at ip in this network (Golem's `net`)."""
        nodes = {self.requestor_ip: self._golem.node_id if self._golem is not None else ""}
        nodes.update(self.nodes)
        entry: dict[str, Any] = {"id": self.network_id, "ip": self.ip, "mask": self.mask, "nodeIp": ip, "nodes": nodes}
        if self.gateway:
            entry["gateway"] = self.gateway
        return {"net": [entry]}

    async def add_node(self, node_id: str, ip: str) -> None:
        """Put a provider node at ip in the network (at the node, before the activity is deployed).

        Raises:
            ApiError: the node refused (the address is someone else's, the node is in at another one).
        """
        self._check_live()
        assert self._golem is not None
        await self._golem.rest.net.add_node(self.network_id, node_id, ip)
        self.nodes[ip] = node_id

    async def remove_node(self, ip: str) -> None:
        """Take the node at ip out of the network (a node not in it is a no-op)."""
        node_id = self.nodes.pop(ip, None)
        if node_id is None or self.removed or self._golem is None:
            return
        try:
            await self._golem.rest.net.remove_node(self.network_id, node_id)
        except ApiError as exc:
            if exc.status != 404:
                self._golem._log.warning("network_node_not_removed", network_id=self.network_id, node=node_id, error=str(exc))

    def has_node(self, node_id: str) -> bool:
        """Whether a provider node is in the network (services put one address per node in a network)."""
        return node_id.lower() in (n.lower() for n in self.nodes.values())

    async def remove(self) -> None:
        """Remove the network at the node: its connections close (repeats are no-ops).

        Raises:
            ApiError: the node could not be asked (a network it no longer knows is fine).
        """
        if self.removed:
            return
        self.removed = True
        if self._golem is None:
            return
        self._golem._networks_done(self)
        try:
            await self._golem.rest.net.remove_network(self.network_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
        self._golem._log.info("network_removed", network_id=self.network_id)

    def _check_live(self) -> None:
        if self.removed:
            raise ConfigurationError(f"network {self.network_id} ({self.net}) was removed")

    def __repr__(self) -> str:
        return f"Network({self.net}, {len(self.nodes)} nodes{', removed' if self.removed else ''})"
