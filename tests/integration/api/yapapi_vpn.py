"""Run by test_rest_clients in a venv with yapapi 0.13: a web server in a vm service on a VPN, reached over net-api.

As yapapi's http-proxy and ssh examples do: a network (`Golem.create_network`), a service
started in it (its deploy carries the network), then a TCP connection to the service's port
through the WebSocket at `network_node.get_websocket_uri(port)`. Two requests, on two
connections, one with a body larger than a tunnel chunk. With "cluster", a second service
joins the network and fetches the page from the first at its VPN address (as yapapi's
webapp example's http server reaches its database). Arguments: REPOSITORY_URL IMAGE_SHA3
APP_KEY [cluster]. Prints one JSON line.
"""

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone

from vpn_pages import SERVE, fetch_pages
from yapapi import Golem
from yapapi.payload import vm
from yapapi.services import Service, ServiceState

REPOSITORY_URL, IMAGE_HASH, APP_KEY = sys.argv[1:4]
CLUSTER = sys.argv[4:5] == ["cluster"]
FETCHED: list = []


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
        script.run("/bin/sh", "-c", SERVE)
        yield script


class Fetcher(Service):
    """Fetches the web server's page at its address in the network, from its own container."""

    def __init__(self, server_ip: str):
        super().__init__()
        self.server_ip = server_ip

    @staticmethod
    async def get_payload():
        return await WebServer.get_payload()

    async def run(self):
        script = self._ctx.new_script()
        got = script.run("/bin/sh", "-c", f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {self.server_ip} 80")
        yield script
        FETCHED.append((await got).stdout)
        while True:
            await asyncio.sleep(1)


async def main() -> None:
    async with Golem(budget=1.0, subnet_tag="public", payment_driver="erc20", payment_network="local") as golem:
        network = await golem.create_network("192.168.0.1/24")
        cluster = await golem.run_service(
            WebServer, network=network, num_instances=1, expiration=datetime.now(timezone.utc) + timedelta(minutes=15),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120  # the whole script stays well inside the test's time limit
        while not all(s.state == ServiceState.running for s in cluster.instances) and loop.time() < deadline:
            await asyncio.sleep(0.5)
        states = [s.state.value for s in cluster.instances]
        [instance] = cluster.instances
        uri = instance.network_node.get_websocket_uri(80)
        out = {"states": states, "ip": instance.network_node.ip, "uri": uri, **await fetch_pages(uri, APP_KEY)}
        if CLUSTER:
            fetchers = await golem.run_service(
                Fetcher, network=network, instance_params=[{"server_ip": instance.network_node.ip}],
                expiration=datetime.now(timezone.utc) + timedelta(minutes=15),
            )
            while not FETCHED and loop.time() < deadline + 60:
                await asyncio.sleep(0.5)
            [fetcher] = fetchers.instances
            out["fetcher_ip"] = fetcher.network_node.ip if fetcher.network_node else None
            out["fetcher_provider"] = fetcher.provider_id
            out["server_provider"] = instance.provider_id
            out["fetched"] = FETCHED
            out["fetcher_state"] = fetcher.state.value
            fetchers.stop()
        cluster.stop()
        everyone = cluster.instances + (fetchers.instances if CLUSTER else [])
        while any(s.state != ServiceState.terminated for s in everyone) and loop.time() < deadline + 90:
            await asyncio.sleep(0.5)
        out["final"] = [s.state.value for s in everyone]
        await network.remove()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
