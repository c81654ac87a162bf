"""net-api v1: a requestor's virtual networks, and TCP connections to services in them over WebSocket.

A client creates a network, gives itself an address, adds each provider node whose activity
it deploys into the network (the `deploy` command's `net` argument tells the provider the
same), then opens `GET /net/{id}/tcp/{ip}/{port}` as a WebSocket: binary messages carry the
TCP stream both ways, through a tunnel over Loam's network to the service in the provider's
container (the VpnActor). The app-key may come as `?authToken=` there, for tools that cannot
set headers on a WebSocket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from node.api.errors import ApiError
from node.api.routing import ApiContext, Route, body_of, json_response
from node.api.validation import require_object

__all__ = ["net_routes", "PREFIX"]

PREFIX = "/net-api/v1"
_WS_MAX_MESSAGE = 1024 * 1024
_OPEN_WAIT_S = 25.0
_MAX_QUEUED = 4 * 1024 * 1024  # bytes of a client's not yet sent before its WebSocket is read further


def _vpn(ctx: ApiContext) -> Any:
    if ctx.vpn is None:
        raise ApiError(503, "virtual networks are not available on this node")
    return ctx.vpn


def _network_id(request: web.Request) -> str:
    return request.match_info["networkId"]


async def get_networks(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(await ctx.call(_vpn(ctx).networks))


async def create_network(ctx: ApiContext, request: web.Request) -> web.Response:
    body = require_object(await body_of(request), "the network")
    if "ip" not in body:
        raise ApiError(400, "the network needs ip (its address, e.g. 192.168.0.0, or 192.168.0.0/24)")
    return json_response(await ctx.call(_vpn(ctx).create_network, body.get("ip"), body.get("mask"), body.get("gateway")))


async def get_network(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(await ctx.call(_vpn(ctx).network, _network_id(request)))


async def remove_network(ctx: ApiContext, request: web.Request) -> web.Response:
    await ctx.call(_vpn(ctx).remove_network, _network_id(request))
    return web.Response(status=200)


async def get_addresses(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(await ctx.call(_vpn(ctx).addresses, _network_id(request)))


async def add_address(ctx: ApiContext, request: web.Request) -> web.Response:
    body = require_object(await body_of(request), "the address")
    if "ip" not in body:
        raise ApiError(400, "the address needs ip")
    await ctx.call(_vpn(ctx).add_address, _network_id(request), body.get("ip"))
    return web.Response(status=200)


async def get_nodes(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(await ctx.call(_vpn(ctx).nodes, _network_id(request)))


async def add_node(ctx: ApiContext, request: web.Request) -> web.Response:
    body = require_object(await body_of(request), "the node")
    missing = [k for k in ("id", "ip") if k not in body]
    if missing:
        raise ApiError(400, f"the node needs {' and '.join(missing)}")
    await ctx.call(_vpn(ctx).add_node, _network_id(request), body.get("id"), body.get("ip"))
    return web.Response(status=200)


async def remove_node(ctx: ApiContext, request: web.Request) -> web.Response:
    await ctx.call(_vpn(ctx).remove_node, _network_id(request), request.match_info["nodeId"])
    return web.Response(status=200)


async def get_connections(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(await ctx.call(_vpn(ctx).connections, _network_id(request)))


async def connect_tcp(ctx: ApiContext, request: web.Request) -> web.StreamResponse:
    """WebSocket ⇄ a TCP connection to {ip}:{port} in the network."""
    vpn = _vpn(ctx)
    try:
        port = int(request.match_info["port"])
    except ValueError:
        raise ApiError(400, f"port must be a number, not {request.match_info['port'][:20]!r}") from None
    if not 1 <= port <= 65535:
        raise ApiError(400, f"port must be in 1..65535, not {port}")
    ip = request.match_info["ip"]
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def sink(event: str, payload: Any) -> None:  # called from the VpnActor's thread
        loop.call_soon_threadsafe(events.put_nowait, (event, payload))

    # Unknown network or address: a 404 before the upgrade, as the spec says.
    tunnel_id = await ctx.call(vpn.open_tcp, _network_id(request), ip, port, sink, manual_consume=True)
    try:
        event, payload = await asyncio.wait_for(events.get(), _OPEN_WAIT_S)
    except asyncio.TimeoutError:
        event, payload = "closed", "the provider did not answer in time"
    if event != "opened":
        vpn.close(tunnel_id)
        raise ApiError(502, f"cannot connect to {ip}:{port}: {payload}")
    ws = web.WebSocketResponse(max_msg_size=_WS_MAX_MESSAGE, heartbeat=30.0)
    await ws.prepare(request)

    async def to_client() -> None:
        while True:
            event, payload = await events.get()
            if event == "data":
                await ws.send_bytes(payload)
                vpn.consumed(tunnel_id, len(payload))  # told, not awaited: the provider may send further
            elif event == "closed":
                await ws.close(code=aiohttp.WSCloseCode.OK, message=str(payload)[:120].encode())
                return

    pump = asyncio.create_task(to_client())
    try:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                data = msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.data.encode()
            else:
                break
            if data:
                try:
                    queued = await ctx.call(vpn.write, tunnel_id, data)
                    # The provider takes no more than its service reads: read on from the client
                    # only once most of what is queued has gone.
                    while queued > _MAX_QUEUED and not pump.done():
                        await asyncio.sleep(0.02)
                        queued = await ctx.call(vpn.queued, tunnel_id)
                except Exception:  # noqa: BLE001 - the tunnel closed under us: the pump closes the socket
                    break
            if pump.done():
                break
    finally:
        vpn.close(tunnel_id)
        if not pump.done():
            try:
                await asyncio.wait_for(pump, 2.0)
            except (asyncio.TimeoutError, ConnectionError):
                pump.cancel()
        if not ws.closed:
            await ws.close()
    return ws


def net_routes() -> list[Route]:
    """The net-api operations."""
    p = PREFIX
    r = Route
    network = {
        "type": "object", "required": ["id", "ip", "mask"],
        "properties": {"id": {"type": "string"}, "ip": {"type": "string"}, "mask": {"type": "string"},
                       "gateway": {"type": "string", "nullable": True}},
    }  # fmt: skip
    new_network = {
        "type": "object", "required": ["ip"],
        "properties": {"ip": {"type": "string"}, "mask": {"type": "string"}, "gateway": {"type": "string"}},
    }  # fmt: skip
    address = {"type": "object", "required": ["ip"], "properties": {"ip": {"type": "string"}}}
    node = {"type": "object", "required": ["id", "ip"], "properties": {"id": {"type": "string"}, "ip": {"type": "string"}}}
    connection = {
        "type": "object",
        "properties": {k: {"type": "integer" if k in ("protocol", "localPort", "remotePort") else "string"}
                       for k in ("protocol", "localIp", "localPort", "remoteIp", "remotePort")},
    }  # fmt: skip

    def many(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": schema}

    n = f"{p}/net/{{networkId}}"
    return [
        r("GET", f"{p}/net", get_networks, "Networks this node created", "getNetworks", "net", ok=(200, many(network))),
        r("POST", f"{p}/net", create_network, "Create a network", "createNetwork", "net", new_network, (200, network)),
        r("GET", n, get_network, "A network", "getNetwork", "net", ok=(200, network)),
        r("DELETE", n, remove_network, "Remove a network (closes its connections)", "removeNetwork", "net", ok=(200, None)),
        r("GET", f"{n}/addresses", get_addresses, "The requestor's addresses", "getAddresses", "net", ok=(200, many(address))),
        r("POST", f"{n}/addresses", add_address, "Give the requestor an address", "addAddress", "net", address, (200, None)),
        r("GET", f"{n}/nodes", get_nodes, "Nodes in the network", "getNodes", "net", ok=(200, many(node))),
        r("POST", f"{n}/nodes", add_node, "Add a provider node at an address", "addNode", "net", node, (200, None)),
        r("DELETE", f"{n}/nodes/{{nodeId}}", remove_node, "Remove a node", "removeNode", "net", ok=(200, None)),
        r("GET", f"{n}/tcp", get_connections, "Open TCP connections", "getConnections", "net", ok=(200, many(connection))),
        r("GET", f"{n}/tcp/{{ip}}/{{port}}", connect_tcp, "A TCP connection to ip:port over WebSocket",
          "connectTcp", "net", ok=(101, None)),
    ]  # fmt: skip
