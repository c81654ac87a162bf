"""VmExeUnit's VPN deploy against the real Docker engine: an internal network the host reaches, its clean-up, validation."""

from __future__ import annotations

import argparse
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from exeunits.child import _CommandFailed
from exeunits.vm.unit import (
    ACTIVITY_LABEL, HOST_GUARD_RULE, ROOT_LABEL, VPN_BRIDGE_PREFIX, VPN_NETWORK_PREFIX, VmExeUnit, container_address,
    guard_host, sweep,
)
from protocol.activity import ChildPackets
from protocol.errors import ExeUnitError
from tests.images.support import GVMI_NAME, FileServer
from tests.unit.exeunits.test_vm_unit import Recorder

__all__: list[str] = []

REQUESTOR_ID = "0x" + "a1" * 20
PROVIDER_ID = "0x" + "b2" * 20


def _net(**overrides: Any) -> dict[str, Any]:
    """One VPN description as yapapi sends it in deploy."""
    net = {
        "id": "c0ffee0123456789abcdef",
        "ip": "192.168.0.0",
        "mask": "255.255.255.0",
        "gateway": "192.168.0.1",
        "nodeIp": "192.168.0.2",
        "nodes": {"192.168.0.1": REQUESTOR_ID, "192.168.0.2": PROVIDER_ID},
    }
    net.update(overrides)
    return net


@pytest.fixture
def root(tmp_path: Path, client: docker.DockerClient) -> Iterator[Path]:
    """The activities' folder of one test; whatever the test leaves labelled with it is swept afterwards."""
    folder = tmp_path / "activities"
    yield folder
    sweep(client, f"{ROOT_LABEL}={folder}")


def _new_unit(root: Path, server: FileServer, client: docker.DockerClient, **overrides: Any) -> VmExeUnit:
    workdir = root / f"act-{os.urandom(6).hex()}"
    values: dict[str, Any] = {
        "workdir": str(workdir),
        "cache_dir": str(root.parent / "cache"),
        "package": server.package(GVMI_NAME),
        "memory_bytes": 64 * 1024 * 1024,
        "wall_s": 60.0,
        "max_package_bytes": 64 * 1024 * 1024,
        "cpus": 0.5,
        "allow_network": False,
    }
    values.update(overrides)
    return VmExeUnit(argparse.Namespace(**values), Recorder(), client=client)  # type: ignore[arg-type]


def _networks(client: docker.DockerClient, label: str) -> list[dict[str, Any]]:
    return client.api.networks(filters={"label": label})


def _sh(unit: VmExeUnit, script: str) -> str:
    return unit.run("b", 0, {"entry_point": "/bin/sh", "args": ["-c", script]})[0] or ""


def test_vpn_container_is_reachable_from_the_host_but_cannot_reach_out(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    try:
        unit.deploy({"net": [_net()]})
        unit.start({})
        network = client.api.inspect_network(unit.network_id)
        assert network["Name"] == VPN_NETWORK_PREFIX + unit.workdir.name
        assert network["Internal"] is True and network["Driver"] == "bridge"
        assert network["Labels"] == {ACTIVITY_LABEL: unit.workdir.name, ROOT_LABEL: str(unit.workdir.parent)}
        assert client.api.inspect_container(unit.container_id)["HostConfig"]["NetworkMode"] == network["Name"]
        # busybox httpd daemonizes (no -f): the command returns and the server stays.
        _sh(unit, "echo hello-from-the-vpn > /tmp/index.html && httpd -p 8080 -h /tmp")
        address = container_address(client, unit.workdir.name, str(unit.workdir.parent))
        assert address is not None
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=10) as response:
            assert response.read() == b"hello-from-the-vpn\n"
        with pytest.raises(_CommandFailed):
            _sh(unit, "nc -w 2 1.1.1.1 80 < /dev/null")
    finally:
        unit.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the host guard is an iptables rule: root only")
def test_a_vpn_container_cannot_open_connections_to_the_host(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    import socket

    import threading

    listener = socket.create_server(("0.0.0.0", 0))  # a port the host listens on, on every interface
    port = listener.getsockname()[1]
    accepted: list[str] = []

    def accept() -> None:  # says hello and hangs up, so nc ends at once
        while True:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            accepted.append(peer[0])
            with conn:
                conn.sendall(b"hello\n")

    threading.Thread(target=accept, daemon=True).start()
    unit = _new_unit(root, server, client)
    try:
        unit.deploy({"net": [_net()]})
        unit.start({})
        network = client.api.inspect_network(unit.network_id)
        assert network["Options"]["com.docker.network.bridge.name"] == VPN_BRIDGE_PREFIX + unit.workdir.name[:10]
        gateway = network["IPAM"]["Config"][0]["Gateway"]
        # Without the guard rule the container reaches the host's port (the test is not blind) ...
        subprocess.run(["iptables", "-w", "5", "-D", *HOST_GUARD_RULE], check=True, capture_output=True)
        try:
            _sh(unit, f"nc -w 2 {gateway} {port} < /dev/null")
        finally:
            assert guard_host()  # put back
        assert len(accepted) == 1
        # ... with it, the port is closed to the container ...
        with pytest.raises(_CommandFailed):
            _sh(unit, f"nc -w 2 {gateway} {port} < /dev/null")
        assert len(accepted) == 1
        # ... while the host still reaches the container (the relay's direction).
        _sh(unit, "echo up > /tmp/index.html && httpd -p 8080 -h /tmp")
        address = container_address(client, unit.workdir.name, str(unit.workdir.parent))
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=10) as response:
            assert response.read() == b"up\n"
    finally:
        unit.close()
        listener.close()


def test_close_removes_the_vpn_network(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    unit.deploy({"net": [_net()]})
    label = f"{ACTIVITY_LABEL}={unit.workdir.name}"
    assert [n["Id"] for n in _networks(client, label)] == [unit.network_id]
    unit.close()
    assert _networks(client, label) == []
    assert unit.network_id is None
    unit.close()  # idempotent


def test_sweep_removes_networks_a_killed_node_left(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    unit.deploy({"net": [_net()]})
    unit.start({})
    # A network without its container, as when a child was killed between the two (the
    # root fixture sweeps it should this test fail).
    labels = {ACTIVITY_LABEL: "act-orphan", ROOT_LABEL: str(root)}
    client.api.create_network(VPN_NETWORK_PREFIX + f"orphan-{os.urandom(4).hex()}", internal=True, labels=labels)
    assert len(_networks(client, f"{ROOT_LABEL}={root}")) == 2
    assert sweep(client, f"{ROOT_LABEL}={root}") == [unit.container_id]
    assert _networks(client, f"{ROOT_LABEL}={root}") == []
    unit.close()  # both already gone: no error


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"net": {"id": "x"}}, "deploy net must be a list"),
        ({"net": [_net() for _ in range(5)]}, "5 networks, at most 4"),
        ({"net": ["192.168.0.0/24"]}, r"net\[0\] must be a map"),
        ({"net": [_net(id="")]}, r"net\[0\]\.id"),
        ({"net": [_net(id="a b/c")]}, r"net\[0\]\.id"),
        ({"net": [_net(id="x" * 129)]}, r"net\[0\]\.id"),
        ({"net": [_net(ip="192.168.0.300")]}, r"net\[0\]\.ip"),
        ({"net": [_net(mask="255.0.255.0")]}, r"net\[0\]\.mask 255\.0\.255\.0 is not a netmask"),
        ({"net": [_net(mask="24")]}, r"net\[0\]\.mask"),
        ({"net": [{k: v for k, v in _net().items() if k != "nodeIp"}]}, r"net\[0\]\.nodeIp is missing"),
        ({"net": [_net(nodeIp="10.0.0.5")]}, r"net\[0\]\.nodeIp 10\.0\.0\.5 is not inside 192\.168\.0\.0/255\.255\.255\.0"),
        ({"net": [_net(), _net(gateway="gw")]}, r"net\[1\]\.gateway"),
        ({"net": [_net(nodes={"192.168.1.7": PROVIDER_ID})]}, r"net\[0\]\.nodes address 192\.168\.1\.7 is not inside"),
        ({"net": [_net(nodes={"192.168.0.7": 7})]}, r"net\[0\]\.nodes\[192\.168\.0\.7\]"),
        ({"net": [_net(nodes=["192.168.0.7"])]}, r"net\[0\]\.nodes must be a map"),
        ({"net": [_net()], "hosts": ["db"]}, "deploy hosts must be a map"),
        ({"net": [_net()], "hosts": {"db": "not-an-ip"}}, r"deploy hosts\[db\] 'not-an-ip' is not an IPv4 address"),
        ({"net": [_net()], "hosts": {"db": "::1"}}, r"hosts\[db\]"),
        ({"net": [_net()], "hosts": {"bad name": "192.168.0.1"}}, "is not a host name"),
        ({"net": [_net()], "hosts": {"db:1": "192.168.0.1"}}, "is not a host name"),
    ],
)
def test_bad_vpn_parameters_are_refused_and_nothing_is_created(
    root: Path, server: FileServer, client: docker.DockerClient, params: dict[str, Any], message: str
) -> None:
    unit = _new_unit(root, server, client)
    with pytest.raises(ExeUnitError, match=message):
        unit.deploy(params)
    assert unit.state == "Initialized" and unit.network_id is None and unit.container_id is None
    label = f"{ACTIVITY_LABEL}={unit.workdir.name}"
    assert _networks(client, label) == []
    assert client.api.containers(all=True, filters={"label": label}) == []
    unit.close()


@pytest.mark.parametrize("with_vpn", [True, False], ids=["vpn", "no-network"])
def test_hosts_are_written_to_the_containers_etc_hosts(root: Path, server: FileServer, client: docker.DockerClient, with_vpn: bool) -> None:
    unit = _new_unit(root, server, client)
    try:
        unit.deploy({"net": [_net()] if with_vpn else [], "hosts": {"requestor": "192.168.0.1", "db.vpn": "192.168.0.9"}})
        unit.start({})
        lines = {tuple(line.split()) for line in _sh(unit, "cat /etc/hosts").splitlines()}
        assert {("192.168.0.1", "requestor"), ("192.168.0.9", "db.vpn")} <= lines
        assert (unit.network_id is not None) == with_vpn
        if not with_vpn:
            assert _sh(unit, "ls /sys/class/net").split() == ["lo"], "hosts must not give the container a network"
    finally:
        unit.close()


def test_a_vpn_missing_mask_is_a_slash_24_and_a_null_gateway_is_accepted(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    try:
        net = {k: v for k, v in _net(gateway=None).items() if k != "mask"}
        unit.deploy({"net": [net]})
        assert unit.network_id is not None
    finally:
        unit.close()
    bad = {k: v for k, v in _net(nodeIp="192.168.1.2", nodes={}).items() if k != "mask"}
    with pytest.raises(ExeUnitError, match="not inside"):
        _new_unit(root, server, client).deploy({"net": [bad]})


def test_with_network_allowed_the_vpn_keeps_the_bridge(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client, allow_network=True)
    try:
        unit.deploy({"net": [_net()]})
        unit.start({})
        assert unit.network_id is None
        assert client.api.inspect_container(unit.container_id)["HostConfig"]["NetworkMode"] == "bridge"
        assert container_address(client, unit.workdir.name, str(unit.workdir.parent))
    finally:
        unit.close()


def test_container_address_is_none_without_a_running_networked_container(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    activity, parent = unit.workdir.name, str(unit.workdir.parent)
    assert container_address(client, activity, parent) is None
    unit.deploy({"net": [_net()]})
    assert container_address(client, activity, parent) is None  # created, not running
    unit.start({})
    assert container_address(client, activity, parent) is not None
    assert container_address(client, activity, parent + "-other-node") is None
    unit.close()
    assert container_address(client, activity, parent) is None
    isolated = _new_unit(root, server, client)
    try:
        isolated.deploy({})
        isolated.start({})
        assert container_address(client, isolated.workdir.name, parent) is None  # network "none"
    finally:
        isolated.close()


def test_container_address_fails_when_the_engine_does_not_answer() -> None:
    absent = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41", timeout=2)
    with pytest.raises(ExeUnitError, match="cannot list the containers"):
        container_address(absent, "act-x", "/tmp")


class Wire:
    """Stands in for two children's FrameWriters and the nodes between them: packets out of one go into the other."""

    def __init__(self) -> None:
        self.units: dict[str, VmExeUnit] = {}  # VPN address -> unit
        self.carried = 0

    def writer(self) -> Any:
        wire = self

        class Out:
            def write(self, msg: Any) -> None:
                if isinstance(msg, ChildPackets):
                    for packet in msg.packets:
                        target = wire.units.get(".".join(str(b) for b in packet[16:20]))
                        if target is not None:
                            wire.carried += 1
                            target.vpn_send(msg.network_id, (packet,))

        return Out()


def test_two_containers_on_one_vpn_talk_to_each_other_at_their_vpn_addresses(
    root: Path, server: FileServer, client: docker.DockerClient
) -> None:
    wire = Wire()
    nodes = {"192.168.0.1": REQUESTOR_ID, "192.168.0.2": PROVIDER_ID, "192.168.0.3": PROVIDER_ID}
    units = []
    try:
        for ip in ("192.168.0.2", "192.168.0.3"):
            unit = _new_unit(root, server, client)
            unit._out = wire.writer()  # noqa: SLF001 - the packets' way out, as the child's FrameWriter is
            unit.deploy({"net": [_net(nodeIp=ip, nodes=nodes)]})
            started = unit.start({})
            assert f"vpn: {ip}/255.255.255.0 on vpn0" in started, started
            wire.units[ip] = unit
            units.append(unit)
        a, b = units
        _sh(b, "echo served-over-the-vpn > /tmp/index.html && httpd -p 8080 -h /tmp")
        got = _sh(a, "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 192.168.0.3 8080")
        assert got.startswith("HTTP/1.") and got.rstrip().endswith("served-over-the-vpn"), got
        assert "2 packets received" in _sh(b, "ping -c 2 -W 2 192.168.0.2")
        assert wire.carried > 10
        # The device is the activity's address in the network; an address outside it is not routed there.
        assert "inet 192.168.0.2/24" in _sh(a, "ip addr show vpn0")
    finally:
        for unit in units:
            unit.close()


def test_packets_for_a_network_the_container_is_not_in_are_dropped(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    unit = _new_unit(root, server, client)
    try:
        unit.deploy({"net": [_net()]})
        unit.start({})
        unit.vpn_send("another-network", (b"\x45" + b"\x00" * 19,))  # nothing to deliver it to: no error
        unit.vpn_send(_net()["id"], (b"\x00" * 20,))  # not an IP packet: the kernel drops it, the relay goes on
        assert "1 packets received" in _sh(unit, "ping -c 1 -W 2 192.168.0.2")  # its own address still answers
    finally:
        unit.close()


def test_the_container_network_stays_clear_of_the_vpn_range(root: Path, server: FileServer, client: docker.DockerClient) -> None:
    import ipaddress

    from exeunits.vm.unit import _docker_subnets

    # The engine's own pools would in time hand out 192.168.0.0/20 and shadow a VPN address.
    vpn = ipaddress.IPv4Network("172.16.0.0/12")
    assert all(not s.overlaps(vpn) for s in _docker_subnets([vpn]))
    assert all(not s.overlaps(ipaddress.IPv4Network("192.168.0.0/16")) for s in _docker_subnets([vpn]))
    unit = _new_unit(root, server, client)
    try:
        unit.deploy({"net": [_net(ip="172.16.0.0", mask="255.240.0.0", nodeIp="172.16.0.2", nodes={})]})
        subnet = ipaddress.IPv4Network(client.api.inspect_network(unit.network_id)["IPAM"]["Config"][0]["Subnet"])
        assert subnet.prefixlen == 28 and not subnet.overlaps(vpn)
    finally:
        unit.close()
