"""Run by test_rest_clients in a venv with yapapi 0.13: a web server in a vm service on a VPN, reached over net-api.

As yapapi's http-proxy and ssh examples do: a network (`Golem.create_network`), a service
started in it (its deploy carries the network), then a TCP connection to the service's port
through the WebSocket at `network_node.get_websocket_uri(port)`. Two requests, on two
connections, one with a body larger than a tunnel chunk. Arguments: REPOSITORY_URL
IMAGE_SHA3 APP_KEY. Prints one JSON line.
"""

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone

import aiohttp
from yapapi import Golem
from yapapi.payload import vm
from yapapi.services import Service, ServiceState

REPOSITORY_URL, IMAGE_HASH, APP_KEY = sys.argv[1:4]
BIG = 200_000  # bytes of the second page: several tunnel chunks


class WebServer(Service):
    @staticmethod
    async def get_payload():
        return await vm.repo(
            image_hash=IMAGE_HASH, repository_url=REPOSITORY_URL, min_mem_gib=0.5, min_storage_gib=1.0,
            capabilities=[vm.VM_CAPS_VPN],
        )

    async def start(self):
        async for script in super().start():  # deploy (with the network) and start
            yield script
        script = self._ctx.new_script()
        script.run("/bin/sh", "-c", f"mkdir -p /srv && echo hello over the vpn > /srv/index.html"
                   f" && head -c {BIG} /dev/zero | tr '\\0' x > /srv/big.txt && httpd -p 80 -h /srv")
        yield script


async def fetch(uri: str, path: str) -> bytes:
    """One HTTP/1.0 request over a WebSocket-carried TCP connection; the whole response."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(uri, headers={"Authorization": f"Bearer {APP_KEY}"}) as ws:
            await ws.send_bytes(f"GET {path} HTTP/1.0\r\nHost: service\r\n\r\n".encode())
            got = b""
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got += msg.data
                else:
                    break
            return got


async def main() -> None:
    async with Golem(budget=1.0, subnet_tag="public", payment_driver="erc20", payment_network="local") as golem:
        network = await golem.create_network("192.168.0.1/24")
        cluster = await golem.run_service(
            WebServer, network=network, num_instances=1, expiration=datetime.now(timezone.utc) + timedelta(minutes=15),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 240
        while not all(s.state == ServiceState.running for s in cluster.instances) and loop.time() < deadline:
            await asyncio.sleep(0.5)
        states = [s.state.value for s in cluster.instances]
        [instance] = cluster.instances
        uri = instance.network_node.get_websocket_uri(80)
        small = b""
        for _ in range(20):  # httpd starts a moment after the script returns
            small = await fetch(uri, "/index.html")
            if b"200" in small.split(b"\r\n", 1)[0]:
                break
            await asyncio.sleep(0.5)
        big = await fetch(uri, "/big.txt")
        head, _, body = big.partition(b"\r\n\r\n")
        out = {
            "states": states,
            "ip": instance.network_node.ip,
            "uri": uri,
            "small": small.decode(errors="replace"),
            "big_status": head.split(b"\r\n", 1)[0].decode(errors="replace"),
            "big_len": len(body),
            "big_ok": body == b"x" * BIG,
        }
        cluster.stop()
        while any(s.state != ServiceState.terminated for s in cluster.instances) and loop.time() < deadline + 60:
            await asyncio.sleep(0.5)
        out["final"] = [s.state.value for s in cluster.instances]
        await network.remove()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
