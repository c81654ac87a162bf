"""What the VPN client scripts (yapapi_vpn.py, golem_core_vpn.py) serve in a vm service and fetch over net-api.

Imported by those scripts from their own folder, in the client libraries' venvs (aiohttp
comes with both libraries):

    script.run("/bin/sh", "-c", SERVE)          # a small page and a BIG one, busybox httpd on port 80
    out.update(await fetch_pages(uri, app_key))  # uri: ws://<api>/net-api/v1/net/<id>/tcp/<ip>/80
"""

import asyncio

import aiohttp

BIG = 200_000  # bytes of the second page: several tunnel chunks
SERVE = (
    f"mkdir -p /srv && echo hello over the vpn > /srv/index.html"
    f" && head -c {BIG} /dev/zero | tr '\\0' x > /srv/big.txt && httpd -p 80 -h /srv"
)


async def fetch(uri: str, path: str, app_key: str) -> bytes:
    """One HTTP/1.0 request over a WebSocket-carried TCP connection; the whole response."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(uri, headers={"Authorization": f"Bearer {app_key}"}) as ws:
            await ws.send_bytes(f"GET {path} HTTP/1.0\r\nHost: service\r\n\r\n".encode())
            got = b""
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got += msg.data
                else:
                    break
            return got


async def fetch_pages(uri: str, app_key: str) -> dict:
    """Both pages, on two connections: the small one's answer, the big one's status line, length and whether it is intact."""
    small = b""
    for _ in range(20):  # httpd starts a moment after the command that starts it returns
        small = await fetch(uri, "/index.html", app_key)
        if b"200" in small.split(b"\r\n", 1)[0]:
            break
        await asyncio.sleep(0.5)
    big = await fetch(uri, "/big.txt", app_key)
    head, _, body = big.partition(b"\r\n\r\n")
    return {
        "small": small.decode(errors="replace"),
        "big_status": head.split(b"\r\n", 1)[0].decode(errors="replace"),
        "big_len": len(body),
        "big_ok": body == b"x" * BIG,
    }
