"""A web server in a vm service on a virtual network, fetched over TCP through the requestor's node.

    export YAGNA_APPKEY=... YAGNA_API_URL=... YAGNA_PAYMENT_NETWORK=local
    python examples/service_vpn.py --repo http://127.0.0.1:8000 --tag busybox:latest
    python examples/service_vpn.py --package 'hash:sha3:...:http://host/busybox.gvmi'

The image needs busybox (its httpd). The service joins the network 192.168.0.0/24 (the
requestor is 192.168.0.1, the service the next free address), starts httpd on port 80, and
`service.connect(80)` carries an HTTP request to it and the page back.
"""

from __future__ import annotations

import argparse
import asyncio

from requestor import ApiError, Golem, Service, VmImage, WorkContext, resolve_image
from requestor.payload import Payload

PAGE = "hello from a service on a virtual network"


async def serve(ctx: WorkContext) -> None:
    """Write a page and start busybox httpd on port 80 (it goes to the background)."""
    script = ctx.script()
    script.run("/bin/sh", "-c", f"mkdir -p /srv && echo '{PAGE}' > /srv/index.html && httpd -p 80 -h /srv")
    await ctx.run(script)


async def fetch(service: Service, path: str) -> bytes:
    """An HTTP/1.0 GET through the network: the whole answer (httpd closes the connection after it)."""
    for attempt in range(10):
        try:
            reader, writer = await service.connect(80)
            break
        except ApiError as exc:  # 502: nothing listens yet, httpd may take a moment
            if exc.status != 502 or attempt == 9:
                raise
            await asyncio.sleep(0.5)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {service.ip}\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def main(payload: Payload | None, repo: str | None, tag: str, budget: str) -> None:
    if payload is None:
        payload = await resolve_image(repo or "", tag=tag)
    async with Golem(budget=budget) as golem:
        net = await golem.create_network("192.168.0.0/24")
        async with await golem.run_service(payload, network=net, start=serve) as service:
            name = service.agreement.offer.name if service.agreement else "?"
            print(f"service running on {name} at {service.ip} in {net.net} (the requestor is {net.requestor_ip})")
            answer = await fetch(service, "/index.html")
            head, _, body = answer.partition(b"\r\n\r\n")
            print(head.split(b"\r\n", 1)[0].decode())
            print(body.decode().strip())
        await net.remove()  # or left to the session's end
        print("service stopped")
    print(f"spent {golem.spent} GLM")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="a GVMI task package: hash:sha3:<sha3-224>:<url>")
    parser.add_argument("--repo", help="an image repository URL (with --tag)")
    parser.add_argument("--tag", default="busybox:latest")
    parser.add_argument("--budget", default="1")
    args = parser.parse_args()
    if not args.package and not args.repo:
        parser.error("give --package or --repo")
    asyncio.run(main(VmImage(args.package) if args.package else None, args.repo, args.tag, args.budget))
