"""net-api v1: virtual private networks for services — not supported yet, said so in the spec's error shape."""

from __future__ import annotations

from aiohttp import web

from node.api.errors import ApiError
from node.api.routing import ApiContext, Route

__all__ = ["net_routes", "PREFIX"]

PREFIX = "/net-api/v1"


async def not_supported(ctx: ApiContext, request: web.Request) -> web.Response:
    """Every net-api operation: 501, virtual networks are not supported yet."""
    raise ApiError(
        501,
        f"{request.method} {request.path}: virtual networks between activities (net-api) are not supported "
        "by this node yet; services that need a VPN cannot run on it",
    )


def net_routes() -> list[Route]:
    """The net-api operations; each answers 501 for now."""
    p = PREFIX
    obj = {"type": "object"}
    r = Route
    ok = (501, None)
    return [
        r("GET", f"{p}/net", not_supported, "Networks (501: not supported yet)", "getNetworks", "net", ok=ok),
        r("POST", f"{p}/net", not_supported, "Create a network (501: not supported yet)", "createNetwork", "net", obj, ok),
        r("GET", f"{p}/net/{{networkId}}", not_supported, "A network (501)", "getNetwork", "net", ok=ok),
        r("DELETE", f"{p}/net/{{networkId}}", not_supported, "Remove a network (501)", "removeNetwork", "net", ok=ok),
        r("GET", f"{p}/net/{{networkId}}/addresses", not_supported, "Addresses (501)", "getAddresses", "net", ok=ok),
        r("POST", f"{p}/net/{{networkId}}/addresses", not_supported, "Add an address (501)", "addAddress", "net", obj, ok),
        r("GET", f"{p}/net/{{networkId}}/nodes", not_supported, "Nodes (501)", "getNodes", "net", ok=ok),
        r("POST", f"{p}/net/{{networkId}}/nodes", not_supported, "Add a node (501)", "addNode", "net", obj, ok),
        r("DELETE", f"{p}/net/{{networkId}}/nodes/{{nodeId}}", not_supported, "Remove a node (501)", "removeNode", "net", ok=ok),
        r("GET", f"{p}/net/{{networkId}}/tcp", not_supported, "TCP connections (501)", "getConnections", "net", ok=ok),
        r("GET", f"{p}/net/{{networkId}}/tcp/{{ip}}/{{port}}", not_supported, "A TCP connection (501)", "connectTcp", "net", ok=ok),
    ]
