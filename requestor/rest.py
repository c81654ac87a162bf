"""A typed asyncio client of a node's Golem REST API (market-, activity-, payment- and net-api) over aiohttp.

    async with RestClient.from_env() as rest:
        me = await rest.me()
        allocation = await rest.payment.create_allocation("erc20-local-tglm", Decimal("5"))

Every error status becomes an `ApiError` naming the call, the status and the node's message.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp

from requestor.errors import ApiError, ConfigurationError

__all__ = ["RestClient", "MarketApi", "ActivityApi", "PaymentApi", "NetApi", "DEFAULT_API_URL", "rfc3339", "parse_time"]

DEFAULT_API_URL = "http://127.0.0.1:7465"
MARKET = "/market-api/v1"
ACTIVITY = "/activity-api/v1"
PAYMENT = "/payment-api/v1"
NET = "/net-api/v1"
_MARGIN_S = 10.0  # a long poll's HTTP timeout: the poll's own timeout plus this


def rfc3339(when: datetime) -> str:
    """A timestamp as the API takes it: RFC 3339 with an offset and microseconds."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp from the API ('Z' or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RestClient:
    """One aiohttp session to one node, authorised with an app-key; the three APIs as attributes."""

    def __init__(self, api_url: str, app_key: str, *, request_timeout_s: float = 30.0) -> None:
        if not isinstance(app_key, str) or not app_key.strip():
            raise ConfigurationError("an app-key is required: pass app_key or set YAGNA_APPKEY (`loam app-key create NAME`)")
        if not isinstance(api_url, str) or not api_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the API URL {api_url!r} must start with http:// or https://")
        self.api_url = api_url.rstrip("/")
        self._key = app_key.strip()
        self._timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.market = MarketApi(self)
        self.activity = ActivityApi(self)
        self.payment = PaymentApi(self)
        self.net = NetApi(self)

    @classmethod
    def from_env(cls, api_url: str | None = None, app_key: str | None = None) -> RestClient:
        """Arguments first, then YAGNA_API_URL / YAGNA_APPKEY, then the default URL."""
        url = api_url or os.environ.get("YAGNA_API_URL") or DEFAULT_API_URL
        key = app_key or os.environ.get("YAGNA_APPKEY") or ""
        return cls(url, key)

    async def __aenter__(self) -> RestClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the HTTP session (idempotent)."""
        if self._session is None:
            # Long polls hold connections: allow many at once.
            connector = aiohttp.TCPConnector(limit=200, force_close=False)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"Authorization": f"Bearer {self._key}"}, json_serialize=_dumps,
            )

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ConfigurationError("the REST client is not open: use `async with` or call open() first")
        return self._session

    async def call(
        self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
        timeout_s: float | None = None, expect_json: bool = True,
    ) -> Any:  # fmt: skip
        """One request; the decoded JSON answer (None for an empty body).

        Raises:
            ApiError: an error status (its message from the node), or no connection.
        """
        session = self._http()
        timeout = aiohttp.ClientTimeout(total=timeout_s if timeout_s is not None else self._timeout_s)
        data = None if body is None else _dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with session.request(
                method, self.api_url + path, data=data, params=_query(params), headers=headers, timeout=timeout
            ) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            raise ApiError(method, path, 0, f"cannot reach the node at {self.api_url}: {exc}") from exc
        except TimeoutError:
            raise ApiError(method, path, 0, f"no answer from {self.api_url} within {timeout.total} s") from None
        decoded: Any = None
        if raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw.decode(errors="replace")
        if status >= 400:
            message = decoded.get("message") if isinstance(decoded, dict) else decoded
            raise ApiError(method, path, status, str(message or "no message"))
        return decoded if expect_json else None

    async def events(self, path: str, *, last_event_id: int = 0, timeout_s: float = 3600.0) -> AsyncIterator[ServerEvent]:
        """Server-sent events of a GET (`Accept: text/event-stream`) until the server ends the stream."""
        session = self._http()
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-Id"] = str(last_event_id)
        try:
            async with session.get(
                self.api_url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s, sock_read=60.0)
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    try:
                        message = json.loads(raw).get("message")
                    except (ValueError, AttributeError):
                        message = raw.decode(errors="replace")
                    raise ApiError("GET", path, response.status, str(message or "no message"))
                name, data, event_id = "", [], 0
                async for line_bytes in response.content:
                    line = line_bytes.decode().rstrip("\r\n")
                    if not line:
                        if data:
                            yield ServerEvent(name or "message", json.loads("\n".join(data)), event_id)
                        name, data = "", []
                    elif line.startswith(":"):
                        continue  # a ping comment
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "event":
                            name = value
                        elif field == "data":
                            data.append(value)
                        elif field == "id" and value.isdigit():
                            event_id = int(value)
        except aiohttp.ClientError as exc:
            raise ApiError("GET", path, 0, f"the event stream from {self.api_url} broke: {exc}") from exc

    async def me(self) -> dict[str, Any]:
        """`GET /me`: the identity requests act as."""
        return await self.call("GET", "/me")


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One server-sent event: its name, its decoded JSON data, its id."""

    name: str
    data: Any
    event_id: int


class MarketApi:
    """market-api v1, the requestor's side."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def subscribe_demand(self, properties: dict[str, Any], constraints: str) -> str:
        return await self._rest.call("POST", f"{MARKET}/demands", {"properties": properties, "constraints": constraints})

    async def unsubscribe_demand(self, subscription_id: str) -> None:
        await self._rest.call("DELETE", f"{MARKET}/demands/{_p(subscription_id)}", expect_json=False)

    async def collect_offers(self, subscription_id: str, timeout_s: float = 5.0, max_events: int = 100) -> list[dict[str, Any]]:
        return await self._rest.call(
            "GET", f"{MARKET}/demands/{_p(subscription_id)}/events",
            params={"timeout": timeout_s, "maxEvents": max_events}, timeout_s=timeout_s + _MARGIN_S,
        )  # fmt: skip

    async def counter_proposal(self, subscription_id: str, proposal_id: str, properties: dict[str, Any], constraints: str) -> str:
        return await self._rest.call(
            "POST", f"{MARKET}/demands/{_p(subscription_id)}/proposals/{_p(proposal_id)}",
            {"properties": properties, "constraints": constraints},
        )  # fmt: skip

    async def reject_proposal(self, subscription_id: str, proposal_id: str, message: str) -> None:
        await self._rest.call(
            "POST", f"{MARKET}/demands/{_p(subscription_id)}/proposals/{_p(proposal_id)}/reject",
            {"message": message}, expect_json=False,
        )  # fmt: skip

    async def create_agreement(self, proposal_id: str, valid_to: datetime) -> str:
        return await self._rest.call("POST", f"{MARKET}/agreements", {"proposalId": proposal_id, "validTo": rfc3339(valid_to)})

    async def get_agreement(self, agreement_id: str) -> dict[str, Any]:
        return await self._rest.call("GET", f"{MARKET}/agreements/{_p(agreement_id)}")

    async def confirm_agreement(self, agreement_id: str, app_session_id: str = "") -> None:
        params = {"appSessionId": app_session_id} if app_session_id else None
        await self._rest.call("POST", f"{MARKET}/agreements/{_p(agreement_id)}/confirm", params=params, expect_json=False)

    async def wait_for_approval(self, agreement_id: str, timeout_s: float = 15.0) -> None:
        """Returns when Approved; ApiError 410 (rejected, cancelled…) or 408 (still pending)."""
        await self._rest.call(
            "POST", f"{MARKET}/agreements/{_p(agreement_id)}/wait", params={"timeout": timeout_s},
            timeout_s=timeout_s + _MARGIN_S, expect_json=False,
        )  # fmt: skip

    async def cancel_agreement(self, agreement_id: str, message: str) -> None:
        """Withdraw an agreement not yet approved (a repeat is a no-op)."""
        await self._rest.call(
            "POST", f"{MARKET}/agreements/{_p(agreement_id)}/cancel", {"message": message}, expect_json=False
        )

    async def terminate_agreement(self, agreement_id: str, message: str, code: str = "Success") -> None:
        await self._rest.call(
            "POST", f"{MARKET}/agreements/{_p(agreement_id)}/terminate",
            {"message": message, "golem.requestor.code": code}, expect_json=False,
        )  # fmt: skip


class ActivityApi:
    """activity-api v1, the requestor's side."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def create_activity(self, agreement_id: str, timeout_s: float = 30.0) -> str:
        return await self._rest.call(
            "POST", f"{ACTIVITY}/activity", agreement_id, params={"timeout": timeout_s}, timeout_s=timeout_s + _MARGIN_S
        )

    async def exec(self, activity_id: str, commands: list[dict[str, Any]]) -> str:
        return await self._rest.call("POST", f"{ACTIVITY}/activity/{_p(activity_id)}/exec", {"text": _dumps(commands)})

    async def results(self, activity_id: str, batch_id: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The batch's results so far, from index 0 (a long poll until it finishes or timeout_s)."""
        return await self._rest.call(
            "GET", f"{ACTIVITY}/activity/{_p(activity_id)}/exec/{_p(batch_id)}",
            params={"timeout": timeout_s}, timeout_s=timeout_s + _MARGIN_S,
        )  # fmt: skip

    def stream(self, activity_id: str, batch_id: str, timeout_s: float = 3600.0) -> AsyncIterator[ServerEvent]:
        """The batch's runtime events as they happen (server-sent events)."""
        return self._rest.events(f"{ACTIVITY}/activity/{_p(activity_id)}/exec/{_p(batch_id)}", timeout_s=timeout_s)

    async def state(self, activity_id: str) -> dict[str, Any]:
        return await self._rest.call("GET", f"{ACTIVITY}/activity/{_p(activity_id)}/state")

    async def usage(self, activity_id: str) -> dict[str, Any]:
        return await self._rest.call("GET", f"{ACTIVITY}/activity/{_p(activity_id)}/usage")

    async def destroy(self, activity_id: str, timeout_s: float = 10.0) -> None:
        await self._rest.call(
            "DELETE", f"{ACTIVITY}/activity/{_p(activity_id)}", params={"timeout": timeout_s},
            timeout_s=timeout_s + _MARGIN_S, expect_json=False,
        )  # fmt: skip


class PaymentApi:
    """payment-api v1, the requestor's side."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def requestor_accounts(self) -> list[dict[str, Any]]:
        return await self._rest.call("GET", f"{PAYMENT}/requestorAccounts")

    async def create_allocation(self, platform: str, total_glm: Decimal, timeout: datetime | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "totalAmount": _glm(total_glm), "spentAmount": "", "remainingAmount": "",
            "paymentPlatform": platform, "makeDeposit": False,
        }
        if timeout is not None:
            body["timeout"] = rfc3339(timeout)
        return await self._rest.call("POST", f"{PAYMENT}/allocations", body)

    async def get_allocation(self, allocation_id: str) -> dict[str, Any]:
        return await self._rest.call("GET", f"{PAYMENT}/allocations/{_p(allocation_id)}")

    async def release_allocation(self, allocation_id: str) -> None:
        await self._rest.call("DELETE", f"{PAYMENT}/allocations/{_p(allocation_id)}", expect_json=False)

    async def demand_decorations(self, allocation_ids: list[str]) -> dict[str, Any]:
        return await self._rest.call("GET", f"{PAYMENT}/demandDecorations", params={"allocationIds": ",".join(allocation_ids)})

    async def events(self, kind: str, after: datetime, timeout_s: float = 5.0, max_events: int = 100) -> list[dict[str, Any]]:
        """kind: "debitNote" or "invoice"."""
        return await self._rest.call(
            "GET", f"{PAYMENT}/{kind}Events", params={"afterTimestamp": rfc3339(after), "timeout": timeout_s, "maxEvents": max_events},
            timeout_s=timeout_s + _MARGIN_S,
        )  # fmt: skip

    async def document(self, kind: str, document_id: str) -> dict[str, Any]:
        return await self._rest.call("GET", f"{PAYMENT}/{kind}s/{_p(document_id)}")

    async def accept(self, kind: str, document_id: str, amount: str, allocation_id: str) -> None:
        await self._rest.call(
            "POST", f"{PAYMENT}/{kind}s/{_p(document_id)}/accept",
            {"totalAmountAccepted": amount, "allocationId": allocation_id}, expect_json=False,
        )  # fmt: skip

    async def reject(self, kind: str, document_id: str, reason: str, message: str) -> None:
        await self._rest.call(
            "POST", f"{PAYMENT}/{kind}s/{_p(document_id)}/reject",
            {"rejectionReason": reason, "totalAmountAccepted": "0", "message": message}, expect_json=False,
        )  # fmt: skip


class NetApi:
    """net-api v1: virtual networks for services, and TCP to them over WebSocket."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def create_network(self, ip: str, mask: str | None = None, gateway: str | None = None) -> dict[str, Any]:
        """The node's Network {id, ip, mask, gateway}; a bad range is a 400 ApiError with the node's reason."""
        body: dict[str, Any] = {"ip": ip}
        if mask is not None:
            body["mask"] = mask
        if gateway is not None:
            body["gateway"] = gateway
        return await self._rest.call("POST", f"{NET}/net", body)

    async def networks(self) -> list[dict[str, Any]]:
        return await self._rest.call("GET", f"{NET}/net")

    async def remove_network(self, network_id: str) -> None:
        await self._rest.call("DELETE", f"{NET}/net/{_p(network_id)}", expect_json=False)

    async def add_address(self, network_id: str, ip: str) -> None:
        await self._rest.call("POST", f"{NET}/net/{_p(network_id)}/addresses", {"ip": ip}, expect_json=False)

    async def nodes(self, network_id: str) -> list[dict[str, Any]]:
        return await self._rest.call("GET", f"{NET}/net/{_p(network_id)}/nodes")

    async def add_node(self, network_id: str, node_id: str, ip: str) -> None:
        await self._rest.call("POST", f"{NET}/net/{_p(network_id)}/nodes", {"id": node_id, "ip": ip}, expect_json=False)

    async def remove_node(self, network_id: str, node_id: str) -> None:
        await self._rest.call("DELETE", f"{NET}/net/{_p(network_id)}/nodes/{_p(node_id)}", expect_json=False)

    async def connections(self, network_id: str) -> list[dict[str, Any]]:
        """The open TCP connections: {protocol, localIp, localPort, remoteIp, remotePort}."""
        return await self._rest.call("GET", f"{NET}/net/{_p(network_id)}/tcp")

    async def connect_tcp(self, network_id: str, ip: str, port: int, *, timeout_s: float = 40.0) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket carrying a TCP connection to ip:port in the network (binary messages both ways).

        Raises:
            ApiError: the node refused the upgrade (404: no such network or no node at ip; 502: the
                provider refused, or nothing accepts connections on that port), or did not answer in time.
        """
        path = f"{NET}/net/{_p(network_id)}/tcp/{_p(ip)}/{int(port)}"
        try:
            async with asyncio.timeout(timeout_s):
                return await self._rest._http().ws_connect(
                    self._rest.api_url + path, autoping=True, max_msg_size=_WS_MAX_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
                )  # fmt: skip
        except aiohttp.WSServerHandshakeError as exc:
            # aiohttp drops the body of a refused upgrade, so the node's own message is not at hand here.
            raise ApiError("GET", path, exc.status, _WS_REFUSED.get(exc.status, exc.message)) from None
        except aiohttp.ClientError as exc:
            raise ApiError("GET", path, 0, f"cannot reach the node at {self._rest.api_url}: {exc}") from exc
        except TimeoutError:
            raise ApiError("GET", path, 0, f"no answer from {self._rest.api_url} within {timeout_s} s") from None


_WS_MAX_MESSAGE = 16 * 1024 * 1024
_WS_REFUSED = {
    400: "the node refused the address or port",
    401: "the app-key was not accepted",
    404: "no such network, or no node has that address in it",
    502: "the provider refused the tunnel, or nothing accepts connections on that port of the service",
    503: "the node has no virtual networks",
}


def _p(segment: str) -> str:
    return quote(str(segment), safe="")


def _glm(amount: Decimal) -> str:
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _query(params: dict[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: (format(v, "g") if isinstance(v, float) else str(v)) for k, v in params.items()}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
