"""Virtual networks in the requestor library: addresses, deploy arguments, argument checks, the tunnel's streams."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from protocol.constraints import Tri, parse
from requestor import ApiError, ConfigurationError, Golem, Network, RequestorError, Service, VmImage, WasmPackage
from requestor.network import VPN_CONSTRAINT, check_host, check_port, next_free_host
from requestor.payload import Resources, build_demand
from requestor.tunnel import TunnelWriter

PKG = "hash:sha3:" + "ab" * 28 + ":http://127.0.0.1:8000/image.gvmi"
REQUESTOR = "0x" + "11" * 20
PROVIDER = "0x" + "22" * 20


def _net(ip: str = "192.168.0.0", mask: str = "255.255.255.0", **kw: Any) -> Network:
    golem = SimpleNamespace(node_id=REQUESTOR)
    return Network(golem, "net-1", ip, mask, **kw)  # type: ignore[arg-type] - only node_id is read here


def test_the_requestor_takes_the_first_host_and_services_the_next_free_ones() -> None:
    net = _net()
    assert net.requestor_ip == "192.168.0.1" and net.ip == "192.168.0.0" and net.mask == "255.255.255.0"
    assert [net.reserve(), net.reserve()] == ["192.168.0.2", "192.168.0.3"]
    assert net.reserve("192.168.0.9") == "192.168.0.9"
    net.release("192.168.0.2")
    assert net.reserve() == "192.168.0.2"  # a released address is handed out again
    assert net.reserve() == "192.168.0.4"


def test_the_range_is_read_from_an_ip_with_a_prefix_or_from_the_mask() -> None:
    golem: Any = SimpleNamespace(node_id=REQUESTOR)
    for ip, mask in (("192.168.0.1/24", "255.255.255.0"), ("10.0.0.0", "255.255.0.0"), ("10.0.0.9/16", "255.255.0.0")):
        net = Network(golem, "n", ip, mask)
        assert net.mask == mask and net.ip == ("192.168.0.0" if ip.startswith("192") else "10.0.0.0")
    assert Network(golem, "n", "192.168.0.5/24", "255.255.255.0").requestor_ip == "192.168.0.1"  # the first host
    with pytest.raises(ConfigurationError, match="not an IPv4 network"):
        Network(golem, "n", "10.0.0.0", "255.0.255.0")


def test_a_given_requestor_address_moves_the_first_free_one() -> None:
    net = _net("10.1.0.0", "255.255.0.0", requestor_ip="10.1.0.7")
    assert net.requestor_ip == "10.1.0.7" and net.reserve() == "10.1.0.1"
    with pytest.raises(ConfigurationError, match="not inside"):
        _net(requestor_ip="10.0.0.1")


@pytest.mark.parametrize(
    ("ip", "match"),
    [("192.168.1.5", "not inside"), ("192.168.0.0", "network's own or broadcast"), ("192.168.0.255", "broadcast"),
     ("192.168.0.1", "already taken"), ("nope", "not an IPv4 address"), ("192.168.0.300", "not an IPv4 address")],
)  # fmt: skip
def test_a_bad_or_taken_service_address_is_refused(ip: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _net().reserve(ip)


def test_a_full_network_says_so() -> None:
    net = _net("10.0.0.0", "255.255.255.252")  # two hosts: the requestor's and one more
    assert net.reserve() == "10.0.0.2"
    with pytest.raises(ConfigurationError, match="no free address"):
        net.reserve()
    assert next_free_host(ipaddress.IPv4Network("10.0.0.0/29"), {"10.0.0.1", "10.0.0.2"}) == "10.0.0.3"


def test_check_host_and_check_port_take_only_what_they_should() -> None:
    lan = ipaddress.IPv4Network("172.16.0.0/24")
    assert check_host(lan, " 172.16.0.20 ", ()) == "172.16.0.20"
    with pytest.raises(ConfigurationError, match="string"):
        check_host(lan, 5, ())
    assert check_port(1) == 1 and check_port(65535) == 65535
    for bad in (0, 65536, -1, 80.0, "80", True, None):
        with pytest.raises(ConfigurationError, match="1..65535"):
            check_port(bad)


def test_deploy_args_carry_the_range_the_address_and_every_node() -> None:
    net = _net(gateway="192.168.0.254")
    ip = net.reserve()
    net.nodes[ip] = PROVIDER  # as add_node records it once the node accepted it
    assert net.deploy_args(ip) == {"net": [{
        "id": "net-1", "ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.2",
        "nodes": {"192.168.0.1": REQUESTOR, "192.168.0.2": PROVIDER}, "gateway": "192.168.0.254",
    }]}  # fmt: skip
    assert net.has_node(PROVIDER.upper().replace("0X", "0x")) and not net.has_node(REQUESTOR)
    assert "gateway" not in _net().deploy_args("192.168.0.2")["net"][0]


def test_a_removed_network_hands_out_no_addresses() -> None:
    net = _net()
    net.removed = True
    with pytest.raises(ConfigurationError, match="was removed"):
        net.reserve()


def test_a_network_demand_requires_the_vpn_capability() -> None:
    _, cons = build_demand(VmImage(PKG), Resources(), subnet="public", expiration_ms=1, extra_constraints=[VPN_CONSTRAINT])
    offer = {"golem.runtime.name": "vm", "golem.node.debug.subnet": "public", "golem.inf.cpu.threads": 2}
    assert parse(cons).evaluate({**offer, "golem.runtime.capabilities": ["vpn"]}) is Tri.TRUE
    assert parse(cons).evaluate({**offer, "golem.runtime.capabilities": ["inet"]}) is Tri.FALSE


def test_a_service_argument_mistake_is_a_configuration_error_before_any_call() -> None:
    golem: Any = SimpleNamespace()  # never used: every check comes first
    with pytest.raises(ConfigurationError, match="wasmtime has no virtual networks"):
        Service(golem, WasmPackage(PKG), network=_net())
    with pytest.raises(ConfigurationError, match="must be a Network"):
        Service(golem, VmImage(PKG), network="192.168.0.0/24")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="give network= too"):
        Service(golem, VmImage(PKG), ip="192.168.0.2")
    net = _net()
    with pytest.raises(ConfigurationError, match="already taken"):
        Service(golem, VmImage(PKG), network=net, ip="192.168.0.1")
    service = Service(golem, VmImage(PKG), network=net)
    assert service.ip == "192.168.0.2" and service.network is net


def test_connect_checks_the_port_the_network_and_that_the_service_runs() -> None:
    golem: Any = SimpleNamespace()
    service = Service(golem, VmImage(PKG), network=_net())

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="1..65535"):
            await service.connect(70000)
        with pytest.raises(RequestorError, match="192.168.0.2 is not running"):
            await service.connect(80)
        with pytest.raises(ConfigurationError, match="in no network"):
            await Service(golem, VmImage(PKG)).connect(80)

    asyncio.run(main())


def test_create_network_checks_its_arguments_and_needs_a_started_session() -> None:
    async def main() -> None:
        golem = Golem(budget=1, app_key="k", api_url="http://127.0.0.1:1", progress=False)
        with pytest.raises(ConfigurationError, match="not started"):
            await golem.create_network("192.168.0.0/24")
        golem.allocation_id = "a"  # as if started: the checks below come before any call
        for bad in (None, "", 24):
            with pytest.raises(ConfigurationError, match="ip must be"):
                await golem.create_network(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="mask must be"):
            await golem.create_network("10.0.0.0", mask=24)  # type: ignore[arg-type]

    asyncio.run(main())


class FakeGolem:
    """Just enough of a Golem session for a Service to start and stop: every call is recorded, in order."""

    def __init__(self, fail_first_deploy: bool = False) -> None:
        self.node_id = REQUESTOR
        self.calls: list[tuple[Any, ...]] = []
        self._fail = fail_first_deploy
        self._log = SimpleNamespace(warning=lambda *a, **k: None, info=lambda *a, **k: None)
        net_api = SimpleNamespace(add_node=self._rec("add_node"), remove_node=self._rec("remove_node"))
        self.rest = SimpleNamespace(net=net_api)
        self.providers = iter([PROVIDER, "0x" + "33" * 20])

    def _rec(self, name: str) -> Any:
        async def call(*args: Any) -> None:
            self.calls.append((name, *args))

        return call

    async def demand(self, payload: Any, resources: Any, *, constraints: list[str]) -> Any:
        self.calls.append(("demand", constraints))

        async def acquire(exclude: Any, timeout_s: float) -> Any:
            provider = next(self.providers)
            self.calls.append(("acquire", provider, exclude(provider)))
            return SimpleNamespace(provider_id=provider, offer=SimpleNamespace(name=provider[:6]))

        async def stop() -> None:
            self.calls.append(("demand_stopped",))

        return SimpleNamespace(acquire=acquire, stop=stop)

    async def start_activity(self, agreement: Any, *, deploy_args: Any = None) -> Any:
        self.calls.append(("deploy", agreement.provider_id, deploy_args))
        if self._fail:
            self._fail = False
            raise RequestorError("the image did not deploy")

        async def destroy() -> None:
            self.calls.append(("destroy",))

        return SimpleNamespace(destroy=destroy)

    async def terminate(self, agreement: Any, why: str, *, failed: bool = False) -> None:
        self.calls.append(("terminate", agreement.provider_id, failed))

    def demands_done(self, demand: Any) -> None:
        pass


def test_a_network_service_demands_vpn_adds_its_node_before_the_deploy_that_names_it() -> None:
    golem = FakeGolem()
    net = Network(golem, "net-1", "192.168.0.0/24", "255.255.255.0")  # type: ignore[arg-type]
    service = Service(golem, VmImage(PKG), network=net)  # type: ignore[arg-type]

    async def main() -> None:
        await service.start()
        assert net.has_node(PROVIDER)
        await service.stop()

    asyncio.run(main())
    args = {"net": [{"id": "net-1", "ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.2",
                     "nodes": {"192.168.0.1": REQUESTOR, "192.168.0.2": PROVIDER}}]}  # fmt: skip
    assert golem.calls == [
        ("demand", [VPN_CONSTRAINT]), ("acquire", PROVIDER, False), ("add_node", "net-1", PROVIDER, "192.168.0.2"),
        ("deploy", PROVIDER, args), ("remove_node", "net-1", PROVIDER), ("destroy",), ("terminate", PROVIDER, False),
        ("demand_stopped",),
    ]  # fmt: skip
    assert service.ip is None and net.taken() == {"192.168.0.1"}  # its address was given back


def test_a_failed_deploy_takes_the_node_out_and_the_next_provider_gets_the_same_address() -> None:
    golem = FakeGolem(fail_first_deploy=True)
    net = Network(golem, "net-1", "192.168.0.0", "255.255.255.0")  # type: ignore[arg-type]
    service = Service(golem, VmImage(PKG), network=net, ip="192.168.0.7")  # type: ignore[arg-type]
    other = "0x" + "33" * 20
    asyncio.run(service.start())
    steps = [c[:2] if c[0] != "add_node" else c for c in golem.calls]
    assert steps == [
        ("demand", [VPN_CONSTRAINT]), ("acquire", PROVIDER), ("add_node", "net-1", PROVIDER, "192.168.0.7"),
        ("deploy", PROVIDER), ("remove_node", "net-1"), ("terminate", PROVIDER), ("acquire", other),
        ("add_node", "net-1", other, "192.168.0.7"), ("deploy", other),
    ]  # fmt: skip
    assert ("terminate", PROVIDER, True) in golem.calls and net.nodes == {"192.168.0.7": other}
    assert service.ip == "192.168.0.7" and service.providers == [PROVIDER, other]


def test_a_node_the_network_refuses_ends_the_start_without_blaming_the_provider() -> None:
    golem = FakeGolem()

    async def refuse(*args: Any) -> None:
        raise ApiError("POST", "/net-api/v1/net/net-1/nodes", 409, "192.168.0.2 is already the address of 0x44…")

    golem.rest.net.add_node = refuse
    net = Network(golem, "net-1", "192.168.0.0/24", "255.255.255.0")  # type: ignore[arg-type]
    service = Service(golem, VmImage(PKG), network=net)  # type: ignore[arg-type]
    with pytest.raises(ApiError, match="409"):
        asyncio.run(service.start())
    assert golem.calls[-1] == ("terminate", PROVIDER, False) and not any(c[0] == "deploy" for c in golem.calls)


def test_a_wasm_service_without_a_network_demands_no_vpn() -> None:
    golem = FakeGolem()
    service = Service(golem, WasmPackage(PKG))  # type: ignore[arg-type]
    asyncio.run(service.start())
    assert golem.calls[0] == ("demand", []) and golem.calls[2] == ("deploy", PROVIDER, None) and service.ip is None


class FakeWs:
    """An in-memory stand-in for aiohttp's client WebSocket: what the node would send, and what was sent."""

    def __init__(self, incoming: list[bytes]) -> None:
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        for data in incoming:
            self.incoming.put_nowait(SimpleNamespace(type=aiohttp.WSMsgType.BINARY, data=data))
        self.sent: list[bytes] = []
        self.closed = False

    def end(self) -> None:
        self.incoming.put_nowait(SimpleNamespace(type=aiohttp.WSMsgType.CLOSE, data=1000))

    async def receive(self) -> Any:
        if self.closed:
            return SimpleNamespace(type=aiohttp.WSMsgType.CLOSED, data=None)
        msg = await self.incoming.get()
        if msg.type == aiohttp.WSMsgType.CLOSE:
            self.closed = True
        return msg

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent.append(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.incoming.put_nowait(SimpleNamespace(type=aiohttp.WSMsgType.CLOSED, data=None))


def test_the_tunnel_streams_read_to_eof_and_write_in_bounded_messages() -> None:
    async def main() -> None:
        ws = FakeWs([b"HTTP/1.0 200 OK\r\n", b"\r\n", b"x" * 1000])
        reader = asyncio.StreamReader()
        writer = TunnelWriter(ws, reader, "192.168.0.2:80")  # type: ignore[arg-type]
        assert writer.get_extra_info("peername") == ("192.168.0.2", 80) and not writer.can_write_eof()
        writer.write(b"a" * 200_000)
        writer.writelines([b"b", b"c"])
        await writer.drain()
        assert b"".join(ws.sent) == b"a" * 200_000 + b"bc" and max(map(len, ws.sent)) <= 64 * 1024
        ws.end()  # the service answered and closed
        assert await reader.readline() == b"HTTP/1.0 200 OK\r\n"
        assert await reader.readexactly(2) == b"\r\n"
        assert await reader.read() == b"x" * 1000 and reader.at_eof()
        await writer.wait_closed()
        with pytest.raises(ConnectionResetError):
            writer.write(b"late")  # the other end closed the connection

    asyncio.run(main())


def test_a_slow_reader_pauses_the_pump_and_close_ends_the_socket() -> None:
    async def main() -> None:
        ws = FakeWs([b"y" * 100_000 for _ in range(20)])
        reader = asyncio.StreamReader(limit=64 * 1024)
        writer = TunnelWriter(ws, reader, "192.168.0.2:80")  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert ws.incoming.qsize() > 10  # back-pressure: the pump stopped taking messages
        assert await reader.readexactly(1_000_000) == b"y" * 1_000_000  # and resumes as the reader reads
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        assert ws.closed
        rest = await reader.read()  # what was buffered, then EOF
        assert rest == b"y" * len(rest) and reader.at_eof()

    asyncio.run(main())
