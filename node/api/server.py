"""The REST server: aiohttp on its own thread and event loop, app-key auth, the error mapper, the route table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from node.api.activity import activity_routes
from node.api.errors import ApiError, error_body, status_of
from node.api.market import market_routes
from node.api.net import net_routes
from node.api.openapi import openapi_document
from node.api.routing import APP_KEY, OPENAPI, ApiContext, Route, app_key_of, json_response
from protocol.errors import NodeError

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["ApiServer", "all_routes", "build_app", "LOAM_VERSION"]

LOAM_VERSION = "0.1.0"
_MAX_BODY_BYTES = 4 * 1024 * 1024
_WORKERS = 128  # long polls each hold a worker thread for up to a second at a time
_SHUTDOWN_S = 2.0


def all_routes(with_payment: bool) -> list[Route]:
    """Every operation this node serves (payment-api only when the node runs the payment ledger)."""
    routes = [
        Route("GET", "/me", _me, "The identity requests act as", "getIdentity", "identity",
              ok=(200, {"$ref": "#/components/schemas/Identity"})),
        Route("GET", "/version/get", _version, "The node's version", "getVersion", "version", ok=(200, {"type": "object"})),
        Route("GET", "/openapi.json", _openapi, "This document", "getOpenApi", "meta", ok=(200, {"type": "object"})),
        *market_routes(),
        *activity_routes(),
        *net_routes(),
    ]
    if with_payment:
        from node.api.payment import payment_routes

        routes += payment_routes()
    return routes


async def _me(ctx: ApiContext, request: web.Request) -> web.Response:
    key = app_key_of(request)
    return json_response({"identity": ctx.node_id, "name": key.name, "role": "manager"})


async def _version(ctx: ApiContext, request: web.Request) -> web.Response:
    info = {"version": LOAM_VERSION, "name": f"loam {LOAM_VERSION}", "seen": True, "releaseTs": "2026-01-01T00:00:00"}
    return json_response({"current": info, "pending": None})


async def _openapi(ctx: ApiContext, request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


def build_app(ctx: ApiContext, find_key: Any, routes: list[Route]) -> web.Application:
    """The aiohttp application: auth, then the error mapper, then the routes.

    find_key(token) -> AppKey | None is called in a worker thread (it reads the database).
    """
    log = structlog.get_logger().bind(node_id=ctx.node_id, actor="api")

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # aiohttp's own answers (no such route, method not allowed, body too large) in the spec's shape.
            message = exc.reason
            if exc.status == 404:
                message = f"no such resource: {request.method} {request.path}"
            elif exc.status == 405:
                message = f"{request.method} is not allowed on {request.path}"
            return web.json_response(error_body(message), status=exc.status, headers=_allow(exc))
        except (NodeError, ValueError, TypeError) as exc:
            try:
                status = status_of(exc)
            except Exception:  # noqa: BLE001 - the mapper itself must never turn an answer into a crash
                log.error("api_error_mapper_failed", error=repr(exc), exc_info=True)
                status = None
            if status is not None:
                if status >= 500:
                    log.warning("api_request_failed", method=request.method, path=request.path, status=status, error=str(exc))
                return web.json_response(error_body(str(exc) or type(exc).__name__), status=status)
            log.error("api_request_crashed", method=request.method, path=request.path, error=repr(exc), exc_info=True)
            return web.json_response(error_body(f"internal error: {type(exc).__name__}: {exc}"), status=500)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every bug still gets an answer in the spec's shape
            log.error("api_request_crashed", method=request.method, path=request.path, error=repr(exc), exc_info=True)
            return web.json_response(error_body(f"internal error: {type(exc).__name__}: {exc}"), status=500)

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            token = request.query.get("authToken", "")
        if not token:
            return web.json_response(error_body("missing app-key: send Authorization: Bearer <app-key>"), status=401)
        key = await asyncio.to_thread(find_key, token)
        if key is None:
            return web.json_response(error_body("unknown app-key"), status=401)
        request[APP_KEY] = key
        return await handler(request)

    app = web.Application(middlewares=[errors, auth], client_max_size=_MAX_BODY_BYTES)
    for route in routes:
        app.router.add_route(route.method, route.path, _bind(ctx, route))
    app[OPENAPI] = openapi_document(routes, LOAM_VERSION)
    return app


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow") if exc.headers else None
    return {"Allow": allow} if allow else {}


def _bind(ctx: ApiContext, route: Route) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await route.handler(ctx, request)

    handle.__name__ = route.operation_id
    return handle


class ApiServer:
    """Runs the REST API on a thread of its own; `start` returns once it listens (or failed to)."""

    def __init__(self, settings: Settings, node_id: str, node: Any, db_path: Path) -> None:
        from node.appkeys import AppKeyStore
        from node.storage import open_database

        self._settings = settings
        self._log = structlog.get_logger().bind(node_id=node_id, actor="api")
        self._conn = open_database(db_path)
        self._keys = AppKeyStore(self._conn)
        self._keys_lock = threading.Lock()
        payment = getattr(node, "payment", None)
        self.ctx = ApiContext(
            node_id=node_id, node_name=settings.node.name, ask_timeout_s=settings.actors.ask_timeout_s,
            market=node.market, activity=node.activity, payment=payment, vpn=getattr(node, "vpn", None),
        )
        self._routes = all_routes(with_payment=payment is not None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="loam-api")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.address: tuple[str, int] | None = None

    @property
    def url(self) -> str | None:
        """http://host:port the API listens on (None before it does)."""
        if self.address is None:
            return None
        host, port = self.address[0], self.address[1]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def _find_key(self, token: str) -> Any:
        with self._keys_lock:
            return self._keys.find(token)

    def start(self, timeout_s: float = 10.0) -> bool:
        """Start listening; False (logged) when the address cannot be bound, so the node runs on without it."""
        self._thread = threading.Thread(target=self._run, name="loam-api", daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._error is not None or self.address is None:
            self._log.warning(
                "api_not_started", host=self._settings.api.host, port=self._settings.api.port, error=str(self._error)
            )
            self.stop()
            return False
        self._log.info("api_listening", host=self.address[0], port=self.address[1], payment=self.ctx.payment is not None)
        return True

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_default_executor(self._executor)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._cleanup())
        loop.close()

    async def _serve(self) -> None:
        app = build_app(self.ctx, self._find_key, self._routes)
        self._runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_S, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.api.host, self._settings.api.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - aiohttp has no public accessor
        self.address = sockets[0].getsockname()[:2] if sockets else (self._settings.api.host, self._settings.api.port)

    async def _cleanup(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, end open requests, and close the database connection."""
        loop = self._loop
        if loop is not None and loop.is_running():
            # End open requests (long polls, streams) inside the loop first, then stop it.
            try:
                asyncio.run_coroutine_threadsafe(self._cleanup(), loop).result(timeout_s)
            except Exception as exc:  # noqa: BLE001 - stopping goes on regardless
                self._log.warning("api_cleanup_failed", error=repr(exc))
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._keys_lock:
            self._conn.close()
