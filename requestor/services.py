"""Long-lived services: one activity kept running on a provider, commands run on demand, stopped on request.

    async with await golem.run_service(WasmPackage(pkg)) as service:
        out = await service.exec("hello", "world")
        print(out.stdout)

A vm service in a virtual network (requestor.network) takes TCP connections from the requestor:

    net = await golem.create_network("192.168.0.0/24")
    async with await golem.run_service(VmImage(pkg), network=net, start=serve) as service:
        reader, writer = await service.connect(80)       # to port 80 of the service, at service.ip
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from requestor.activity import Activity, RuntimeEvent
from requestor.errors import ConfigurationError, RequestorError
from requestor.executor import WorkContext
from requestor.network import VPN_CONSTRAINT, Network, check_port
from requestor.payload import Payload, Resources
from requestor.script import Command, CommandResult, Script
from requestor.tunnel import TunnelWriter, open_tcp

if TYPE_CHECKING:
    from requestor.session import Agreement, Demand, Golem

__all__ = ["Service"]


class Service:
    """A service on one provider. `restart()` moves it to another provider (the failed one is avoided).

    With a network, it is at `ip` in it, its provider node added to the network before the deploy
    (which carries the network), and `connect(port)` opens TCP connections to it. Services in one
    network run on different providers.
    """

    def __init__(
        self, golem: Golem, payload: Payload, *, resources: Resources | None = None,
        on_start: Callable[[WorkContext], Awaitable[None]] | None = None, provider_timeout_s: float = 120.0,
        network: Network | None = None, ip: str | None = None,
    ) -> None:  # fmt: skip
        if not isinstance(payload, Payload):
            raise ConfigurationError(f"payload must be a Payload (WasmPackage(...) or VmImage(...)), not {type(payload).__name__}")
        if on_start is not None and not callable(on_start):
            raise ConfigurationError("on_start must be an async function (ctx) -> None")
        if network is not None and not isinstance(network, Network):
            raise ConfigurationError(f"network must be a Network (golem.create_network(...)), not {type(network).__name__}")
        if network is None and ip is not None:
            raise ConfigurationError("ip is the service's address in a network: give network= too")
        if network is not None and payload.runtime == "wasmtime":
            raise ConfigurationError(
                "a WasmPackage cannot join a network: wasmtime has no virtual networks (use a VmImage)"
            )
        self._network = network
        self._ip_given = ip
        self._ip: str | None = network.reserve(ip) if network is not None else None
        self._connections: set[TunnelWriter] = set()
        self._golem = golem
        self._payload = payload
        self._resources = resources
        self._on_start = on_start
        self._provider_timeout_s = provider_timeout_s
        self._demand: Demand | None = None
        self.agreement: Agreement | None = None
        self.activity: Activity | None = None
        self.providers: list[str] = []  # every provider it ran on, in order

    @property
    def running(self) -> bool:
        return self.activity is not None

    @property
    def network(self) -> Network | None:
        return self._network

    @property
    def ip(self) -> str | None:
        """The service's address in its network (None without one)."""
        return self._ip

    @property
    def provider_id(self) -> str:
        if self.agreement is None:
            raise RequestorError("the service is not running")
        return self.agreement.provider_id

    async def __aenter__(self) -> Service:
        if not self.running:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Agree with a provider, start an activity and run on_start.

        Raises:
            NoProviderError, ActivityError, CommandError, ApiError.
        """
        network = self._network
        if network is not None and self._ip is None:  # stopped before: its address was given back
            self._ip = network.reserve(self._ip_given)
        if self._demand is None:
            constraints = [VPN_CONSTRAINT] if network is not None else []
            self._demand = await self._golem.demand(self._payload, self._resources, constraints=constraints)
        while True:
            # One service per provider in a network: removing a node (DELETE .../nodes/{id}) takes out all of its
            # addresses, so a service stopping on a shared provider would cut the other one off.
            agreement = await self._demand.acquire(self._passed_over, self._provider_timeout_s)
            self.providers.append(agreement.provider_id)
            deploy_args = None
            if network is not None and self._ip is not None:
                try:
                    await network.add_node(agreement.provider_id, self._ip)  # before the deploy that names it
                except RequestorError:
                    # The network's fault (removed, the address taken), not the provider's: no point trying others.
                    await self._golem.terminate(agreement, "the service could not join its network")
                    raise
                deploy_args = network.deploy_args(self._ip)
            try:
                activity = await self._golem.start_activity(agreement, deploy_args=deploy_args)
                if self._on_start is not None:
                    await self._on_start(WorkContext(activity, None, 300.0))
            except RequestorError as exc:
                self._golem._log.warning("service_start_failed", provider=agreement.offer.name, error=str(exc))
                if network is not None and self._ip is not None:
                    await network.remove_node(self._ip)
                await self._golem.terminate(agreement, f"the service did not start: {exc}", failed=True)
                continue
            self.agreement, self.activity = agreement, activity
            return

    def _passed_over(self, provider_id: str) -> bool:
        return provider_id in self.providers or (self._network is not None and self._network.has_node(provider_id))

    async def connect(self, port: int, *, timeout_s: float = 40.0) -> tuple[asyncio.StreamReader, TunnelWriter]:
        """A TCP connection to port of the service, through its network; (reader, writer) as in asyncio.

            reader, writer = await service.connect(80)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            reply = await reader.read()       # to EOF: the service closed the connection

        The reader is an asyncio.StreamReader; the writer a TunnelWriter (see requestor.tunnel).
        Stopping the service or removing the network closes its connections.

        Raises:
            ConfigurationError: the service has no network, or port is not in 1..65535.
            RequestorError: the service is not running, or its network was removed.
            ApiError: the node refused: 502 when nothing takes connections on that port (or the provider refused).
        """
        check_port(port)
        if self._network is None:
            raise ConfigurationError("the service is in no network: run it with run_service(..., network=net)")
        if self.activity is None or self._ip is None:
            where = f" at {self._ip}" if self._ip else ""
            raise RequestorError(f"the service{where} is not running: start() it first")
        if self._network.removed:
            raise RequestorError(f"the service's network {self._network.net} was removed")
        reader, writer = await open_tcp(self._golem.rest, self._network.network_id, self._ip, port, timeout_s=timeout_s)
        self._connections = {w for w in self._connections if not w.is_closing()}
        self._connections.add(writer)
        return reader, writer

    async def run(
        self, script: Script, *, timeout_s: float = 300.0, on_event: Callable[[RuntimeEvent], None] | None = None
    ) -> list[CommandResult]:
        """Run a script in the service's activity."""
        if self.activity is None:
            raise RequestorError("the service is not running: start() it first")
        return await self.activity.run(script, timeout_s=timeout_s, on_event=on_event)

    async def exec(self, entry_point: str, *args: str, stream: bool = False, timeout_s: float = 300.0,
                   on_event: Callable[[RuntimeEvent], None] | None = None) -> Command:
        """Run one command; the command, with its output."""
        script = Script()
        command = script.run(entry_point, *args, stream=stream)
        await self.run(script, timeout_s=timeout_s, on_event=on_event)
        return command

    async def restart(self) -> None:
        """Move to another provider: the current agreement ends as failed."""
        await self._end(failed=True)
        await self.start()

    async def stop(self) -> None:
        """End the activity and the agreement, and withdraw the demand (repeats are no-ops).

        Its connections close and its address in the network is given back.
        """
        await self._end(failed=False)
        if self._demand is not None:
            await self._demand.stop()
            self._golem.demands_done(self._demand)
            self._demand = None
        if self._network is not None and self._ip is not None:
            self._network.release(self._ip)
            self._ip = None

    async def _end(self, *, failed: bool) -> None:
        activity, agreement = self.activity, self.agreement
        self.activity = self.agreement = None
        connections, self._connections = self._connections, set()
        for writer in connections:
            writer.close()
        for writer in connections:
            await writer.wait_closed()
        if self._network is not None and self._ip is not None:
            await self._network.remove_node(self._ip)
        if activity is not None:
            await activity.destroy()
        if agreement is not None:
            await self._golem.terminate(agreement, "the service failed" if failed else "the service stopped", failed=failed)

    def __repr__(self) -> str:
        where = self.agreement.offer.name if self.agreement else "nowhere"
        return f"Service({'running' if self.running else 'stopped'} on {where})"


