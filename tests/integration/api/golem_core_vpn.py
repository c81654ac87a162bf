"""Run by test_rest_clients in a venv with golem-core 0.7: a web server in a vm activity on a VPN, reached over net-api.

As golem-core's `Network` documents it: `GolemNode.create_network` (the requestor gets an
address in it), the provider added as a node (`network.create_node(provider_id)`), and the
activity's deploy carrying `{"net": [network.deploy_args(ip)]}`. golem-core has no TCP helper
of its own (its network manager only builds the URI), so the service is fetched with aiohttp
through the WebSocket at `<net-api>/net/{network id}/tcp/{ip}/80`: two HTTP/1.0 requests on
two connections, one with a body larger than a tunnel chunk. Arguments: IMAGE_SHA3 IMAGE_URL.
The node is found through YAGNA_API_URL and YAGNA_APPKEY. Prints one JSON line.
"""

import asyncio
import json
import os
import sys
from urllib.parse import urlparse

from golem.node import GolemNode
from golem.payload import RepositoryVmPayload
from golem.resources import Deploy, Run, Start
from golem_core_task import accept_invoice, negotiate
from vpn_pages import SERVE, fetch_pages

async def main(image_hash: str, image_url: str) -> None:
    payload = RepositoryVmPayload(
        image_hash=image_hash, image_url=image_url, min_storage_gib=1.0, capabilities=["vpn"],
    )
    net_api = urlparse(os.environ["YAGNA_API_URL"].rstrip("/"))._replace(scheme="ws").geturl() + "/net-api/v1"
    async with GolemNode() as golem:
        network = await golem.create_network("192.168.0.1/24")
        allocation = await golem.create_allocation(1.0, network="local")
        demand = await golem.create_demand(payload, allocations=[allocation], subnet="public")
        agreement = await asyncio.wait_for(negotiate(demand), 120)
        await agreement.get_data()
        provider_id = agreement.data.offer.provider_id
        ip = await network.create_node(provider_id)
        activity = await agreement.create_activity()
        batch = await activity.execute_commands(
            Deploy({"net": [network.deploy_args(ip)]}),
            Start(),
            Run(SERVE),
        )
        results = await batch.wait(timeout=180)
        uri = f"{net_api}/net/{network.id}/tcp/{ip}/80"
        pages = await fetch_pages(uri, os.environ["YAGNA_APPKEY"])
        await activity.destroy()
        await network.remove()
        await agreement.terminate()
        await accept_invoice(agreement, allocation)
        print(json.dumps({
            "results": [r.result for r in results],
            "network": network.id,
            "ip": ip,
            "uri": uri,
            **pages,
        }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
