"""The requestor library's virtual networks end to end: a vm service in a network, reached over TCP through the node.

A requestor node paying on anvil and a vm provider (Docker) that runs the busybox test image
from Loam's image repository. The service runs busybox httpd and an `nc` that hashes what it
is sent; the test talks to both through `service.connect(port)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from requestor import ApiError, ConfigurationError, Golem, RequestorError, Service, WasmPackage, WorkContext
from requestor.network import VPN_CONSTRAINT
from requestor.payload import Payload, resolve_image
from requestor.rest import RestClient
from tests.integration.harness import REPO, NodeProcess, Testnet, free_port, wait_for
from tests.integration.payment_support import local_chain, payment_call, payment_env, provider_env
from tests.integration.test_requestor import app_key
from tests.integration.test_rest_clients import image_repository  # noqa: F401 - a fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIG = 300_000  # bytes each way: many tunnel chunks and WebSocket messages
WASM = "hash:sha3:" + "ab" * 28 + ":http://127.0.0.1:1/never.zip"


@dataclass
class VmNet:
    """A funded requestor serving its REST API, a vm provider, and the image as a payload."""

    requestor: NodeProcess
    api_url: str
    key: str
    payload: Payload

    def golem(self) -> Golem:
        return Golem(
            budget="5", app_key=self.key, api_url=self.api_url, payment_network="local", data_dir=self.requestor.data_dir,
            progress=False, invoice_wait_s=60.0,
        )  # fmt: skip


@pytest.fixture
def vm_net(testnet: Testnet, tmp_path: Path, image_repository: tuple[str, str, str]) -> Iterator[VmNet]:  # noqa: F811
    repo_url, image_hash, _ = image_repository
    with local_chain(tmp_path) as local:
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
        testnet.add("vm-provider", env=provider_env(local, runtime="vm", LOAM_API__ENABLED="false"))
        payment_call(requestor, "fund", amount="100", timeout_s=120)
        wait_for("the vm offer", lambda: requestor.market("known_offers"), 60)
        api_url = json.loads((requestor.data_dir / "node.json").read_text())["api"]
        payload = asyncio.run(resolve_image(repo_url, image_hash=image_hash))
        yield VmNet(requestor, api_url, app_key(requestor), payload)


async def serve(ctx: WorkContext) -> None:
    """Pages for httpd on port 80 (one of random bytes), and on port 7000 the sha-256 of the first BIG bytes sent."""
    script = ctx.script()
    script.run("/bin/sh", "-c", (
        f"mkdir -p /srv && echo hello over the vpn > /srv/index.html && head -c {BIG} /dev/urandom > /srv/big.bin"
        f" && httpd -p 80 -h /srv && (nc -ll -p 7000 -e /bin/sh -c 'head -c {BIG} | sha256sum' >/dev/null 2>&1 &)"
    ))  # fmt: skip
    await ctx.run(script)


async def http_get(service: Service, path: str) -> tuple[str, bytes]:
    """(status line, body) of an HTTP/1.0 GET over a tunnelled connection (retried while httpd starts)."""
    for attempt in range(20):
        try:
            reader, writer = await service.connect(80)
        except ApiError as exc:
            if exc.status != 502 or attempt == 19:
                raise
            await asyncio.sleep(0.5)
            continue
        writer.write(f"GET {path} HTTP/1.0\r\nHost: service\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()  # httpd closes the connection after the answer
        writer.close()
        await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(errors="replace"), body
    raise AssertionError("unreachable")


async def upload_hash(service: Service, data: bytes) -> str:
    """What nc on port 7000 answers to data: its sha-256 as sha256sum prints it."""
    reader, writer = await service.connect(7000)
    for i in range(0, len(data), 50_000):  # in several writes, drained as a protocol would
        writer.write(data[i : i + 50_000])
        await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer.decode().split(" ", 1)[0]


def networks_at(vm: VmNet) -> list[dict[str, Any]]:
    async def ask() -> list[dict[str, Any]]:
        async with RestClient(vm.api_url, vm.key) as rest:
            return await rest.net.networks()

    return asyncio.run(ask())


def test_a_vm_service_in_a_network_serves_http_and_bulk_tcp_through_service_connect(vm_net: VmNet) -> None:
    async def main() -> tuple[Golem, dict[str, Any]]:
        out: dict[str, Any] = {}
        async with vm_net.golem() as golem:
            net = await golem.create_network("192.168.0.0/24")
            assert net.requestor_ip == "192.168.0.1"
            service = await golem.run_service(vm_net.payload, network=net, start=serve)
            assert service.ip == "192.168.0.2" and service.network is net
            assert VPN_CONSTRAINT in golem._demands[0].constraints
            # The provider node was added at the service's address (before the deploy that named it).
            out["nodes"] = await golem.rest.net.nodes(net.network_id)
            out["provider"] = service.provider_id
            out["small"] = await http_get(service, "/index.html")
            sums = await service.exec("/bin/sh", "-c", "sha256sum /srv/big.bin")
            out["big_sha"] = sums.stdout.split()[0]
            out["big"] = await http_get(service, "/big.bin")
            # Two connections at once, the big page coming down on one while a big body goes up on the other.
            upload = os.urandom(BIG)
            out["both"] = await asyncio.gather(http_get(service, "/big.bin"), upload_hash(service, upload))
            out["upload_sha"] = hashlib.sha256(upload).hexdigest()
            reader_a, writer_a = await service.connect(80)
            reader_b, writer_b = await service.connect(7000)
            out["open"] = sorted(c["remotePort"] for c in await golem.rest.net.connections(net.network_id))
            writer_a.close()
            writer_b.close()
            await writer_a.wait_closed()
            await writer_b.wait_closed()
            await service.stop()
            out["nodes_after_stop"] = await golem.rest.net.nodes(net.network_id)
            with pytest.raises(RequestorError, match="not running"):
                await service.connect(80)
            out["networks_in_session"] = await golem.rest.net.networks()
        return golem, out

    golem, out = asyncio.run(main())
    assert [n["ip"] for n in out["nodes"]] == ["192.168.0.2"]
    assert out["nodes"][0]["id"].lower() == out["provider"].lower()
    status, body = out["small"]
    assert " 200 " in status and body == b"hello over the vpn\n", out["small"]
    status, body = out["big"]
    assert " 200 " in status and len(body) == BIG and hashlib.sha256(body).hexdigest() == out["big_sha"]
    (status, body), uploaded = out["both"]
    assert " 200 " in status and hashlib.sha256(body).hexdigest() == out["big_sha"]
    assert uploaded == out["upload_sha"]
    assert out["open"] == [80, 7000]
    assert out["nodes_after_stop"] == []
    assert len(out["networks_in_session"]) == 1
    # The session's end removed the network, and the work was paid for.
    assert networks_at(vm_net) == []
    assert golem.spent > 0 and not golem.rejected


def test_network_mistakes_and_a_closed_port_are_clear_errors(vm_net: VmNet) -> None:
    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with vm_net.golem() as golem:
            # Ranges the node refuses: its 400 and its reason.
            for bad, reason in (("192.168.0.300/24", "not an IPv4 network"), ("10.0.0.0/31", "too small")):
                with pytest.raises(ApiError, match=reason) as caught:
                    await golem.create_network(bad)
                assert caught.value.status == 400
            with pytest.raises(ConfigurationError, match="not inside"):
                await golem.create_network("10.0.0.0/24", requestor_ip="10.0.1.1")
            assert await golem.rest.net.networks() == []  # nothing left behind by the refused ones
            net = await golem.create_network("10.7.0.0", mask="255.255.255.0", requestor_ip="10.7.0.10")
            assert (net.ip, net.mask, net.requestor_ip) == ("10.7.0.0", "255.255.255.0", "10.7.0.10")
            with pytest.raises(ConfigurationError, match="wasmtime has no virtual networks"):
                await golem.run_service(WasmPackage(WASM), network=net)
            with pytest.raises(ConfigurationError, match="not inside"):
                await golem.run_service(vm_net.payload, network=net, ip="10.8.0.2")
            idle = Service(golem, vm_net.payload, network=net)
            with pytest.raises(RequestorError, match="not running"):
                await idle.connect(80)
            await idle.stop()
            # A service that listens on nothing.
            service = await golem.run_service(vm_net.payload, network=net, ip="10.7.0.20")
            assert service.ip == "10.7.0.20"
            with pytest.raises(ApiError, match="nothing accepts connections") as refused:
                await service.connect(80)
            out["refused_status"] = refused.value.status
            for port in (0, 65536, "80"):
                with pytest.raises(ConfigurationError, match="1..65535"):
                    await service.connect(port)  # type: ignore[arg-type]
            await net.remove()
            await net.remove()  # a repeat is a no-op
            with pytest.raises(RequestorError, match="was removed"):
                await service.connect(80)
            out["after_remove"] = await golem.rest.net.networks()
            await golem.create_network("172.20.0.0/16")  # left for the session's end to remove
            await service.stop()
        return out

    out = asyncio.run(main())
    assert out["refused_status"] == 502
    assert out["after_remove"] == []
    assert networks_at(vm_net) == []


def test_the_vpn_example_fetches_a_page_from_its_service(vm_net: VmNet, tmp_path: Path) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "YAGNA_APPKEY": vm_net.key,
        "YAGNA_API_URL": vm_net.api_url, "YAGNA_PAYMENT_NETWORK": "local", "LOAM_DATA_DIR": str(vm_net.requestor.data_dir),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "service_vpn.py"), "--package", vm_net.payload.task_package],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, f"exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "at 192.168.0.2 in 192.168.0.0/24 (the requestor is 192.168.0.1)" in done.stdout, done.stdout
    assert " 200 " in done.stdout and "hello from a service on a virtual network" in done.stdout, done.stdout
    assert "service stopped" in done.stdout and networks_at(vm_net) == []
