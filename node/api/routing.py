"""What every REST route module shares: the route table entry and the context handlers call actors through."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from node.api.validation import parse_json

if TYPE_CHECKING:
    from node.appkeys import AppKey

__all__ = ["Route", "ApiContext", "json_response", "body_of", "no_content", "Handler", "APP_KEY", "OPENAPI", "app_key_of"]

_CHUNK_S = 1.0
# Typed keys for what the server keeps on the application and on each request.
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
APP_KEY: Any = web.RequestKey("app_key", object) if hasattr(web, "RequestKey") else "app_key"

Handler = Callable[["ApiContext", web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: method, full path (aiohttp syntax), handler, and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    operation_id: str
    tag: str
    body: dict[str, Any] | None = None  # JSON schema of the request body
    ok: tuple[int, dict[str, Any] | None] = (200, None)  # success status and its JSON schema
    query: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass
class ApiContext:
    """The node's actors as the REST layer sees them; every actor call runs in a worker thread."""

    node_id: str
    node_name: str
    ask_timeout_s: float
    market: Any
    activity: Any
    payment: Any = None
    vpn: Any = None  # VpnActor proxy (net-api)
    extra: dict[str, Any] = field(default_factory=dict)  # per-module state (scans, ...)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a proxy method and wait for its future with the ask timeout, off the event loop."""
        timeout = self.ask_timeout_s
        return await asyncio.to_thread(lambda: method(*args, **kwargs).get(timeout=timeout))

    async def poll(self, wait: Callable[[float], Any], timeout_s: float, done: Callable[[Any], bool] = bool) -> Any:
        """A long poll: wait(t) blocks up to t seconds for something; repeated until done(result) or the timeout.

        Each wait runs in a worker thread for at most a second, so no thread outlives a
        stopping node by more than that.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            result = await asyncio.to_thread(wait, max(0.0, min(left, _CHUNK_S)))
            if done(result) or left <= _CHUNK_S:
                return result


def json_response(value: Any, status: int = 200) -> web.Response:
    """value as a JSON body (a bare string becomes a JSON string)."""
    return web.Response(
        body=json.dumps(value, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)


async def body_of(request: web.Request, *, required: bool = True) -> Any:
    """The request's JSON body (None when optional and empty)."""
    return parse_json(await request.read(), required=required)


def app_key_of(request: web.Request) -> AppKey:
    """The app-key the request was authorised with."""
    return request[APP_KEY]
