"""A TCP connection to a service in a virtual network, as an asyncio (StreamReader, writer) pair over net-api's WebSocket.

    reader, writer = await service.connect(80)
    writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
    await writer.drain()
    page = await reader.read()           # up to EOF: the service closed the connection
    writer.close()
    await writer.wait_closed()

The reader is a real `asyncio.StreamReader` (read, readexactly, readline, readuntil, at_eof).
The writer has the StreamWriter methods that make sense over a WebSocket (write, writelines,
drain, close, is_closing, wait_closed, get_extra_info); a WebSocket cannot half-close, so
there is no write_eof: closing the writer ends the whole connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from requestor.rest import RestClient

__all__ = ["TunnelWriter", "open_tcp"]

_SEND_BYTES = 64 * 1024  # the node takes WebSocket messages up to 1 MiB; smaller ones interleave better
_READ_LIMIT = 256 * 1024  # the reader pauses taking from the WebSocket past twice this unread


async def open_tcp(
    rest: RestClient, network_id: str, ip: str, port: int, *, timeout_s: float = 40.0
) -> tuple[asyncio.StreamReader, TunnelWriter]:
    """Connect to ip:port in a network through the node; (reader, writer).

    Raises:
        ApiError: the node refused (see NetApi.connect_tcp).
    """
    ws = await rest.net.connect_tcp(network_id, ip, port, timeout_s=timeout_s)
    reader = asyncio.StreamReader(limit=_READ_LIMIT)
    writer = TunnelWriter(ws, reader, f"{ip}:{port}")
    return reader, writer


class _Pause:
    """What StreamReader calls to apply back-pressure: pauses the pump that feeds it."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.running.set()

    def pause_reading(self) -> None:
        self.running.clear()

    def resume_reading(self) -> None:
        self.running.set()


class TunnelWriter:
    """The writing end of a tunnelled TCP connection (and the owner of its WebSocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.StreamReader, peer: str) -> None:
        self._ws = ws
        self._reader = reader
        self._peer = peer
        self._pending = bytearray()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._sender: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._pause = _Pause()
        reader.set_transport(self._pause)  # type: ignore[arg-type] - StreamReader only calls pause/resume_reading
        self._pump = asyncio.create_task(self._receive(), name=f"tunnel-{peer}")
        self._closed = asyncio.create_task(self._wait_pump(), name=f"tunnel-close-{peer}")

    def __repr__(self) -> str:
        return f"TunnelWriter({self._peer}{', closing' if self._closing else ''})"

    # -- StreamWriter's interface -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the service; they go out in the background (drain() waits for them).

        Raises:
            ConnectionResetError: the connection is closed.
        """
        self._check_open()
        if not data:
            return
        self._pending += data
        self._flushed.clear()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name=f"tunnel-send-{self._peer}")

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def can_write_eof(self) -> bool:
        """False: a WebSocket cannot half-close; close() ends both directions."""
        return False

    async def drain(self) -> None:
        """Wait until what was written went out.

        Raises:
            ConnectionResetError: the connection closed first.
        """
        await self._flushed.wait()
        if self._error is not None:
            raise ConnectionResetError(f"the connection to {self._peer} is closed: {self._error}")

    def is_closing(self) -> bool:
        return self._closing or self._ws.closed

    def close(self) -> None:
        """End the connection (what was written still goes out first); see wait_closed()."""
        if self._closing:
            return
        self._closing = True
        self._closed = asyncio.create_task(self._close(), name=f"tunnel-close-{self._peer}")

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by close() or by the other end)."""
        await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """"peername": (ip, port) of the service in its network."""
        if name == "peername":
            ip, _, port = self._peer.rpartition(":")
            return (ip, int(port))
        return default

    # -- inside -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._error is not None or self._ws.closed:
            raise ConnectionResetError(f"the connection to {self._peer} is closed")

    async def _send(self) -> None:
        try:
            while self._pending:
                chunk = bytes(self._pending[:_SEND_BYTES])
                del self._pending[: len(chunk)]
                await self._ws.send_bytes(chunk)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            self._error = exc
            self._pending.clear()
        finally:
            self._flushed.set()

    async def _receive(self) -> None:
        """WebSocket → reader until the node closes the socket (the service or the tunnel ended)."""
        try:
            while True:
                await self._pause.running.wait()
                msg = await self._ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._reader.feed_data(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._reader.feed_data(msg.data.encode())
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise ConnectionResetError(f"the connection to {self._peer} failed: {msg.data}")
                else:  # CLOSE, CLOSING, CLOSED: the node ends the socket when the TCP connection ends
                    break
        except (ConnectionError, aiohttp.ClientError) as exc:
            self._error = exc
            self._reader.set_exception(exc if isinstance(exc, ConnectionError) else ConnectionResetError(str(exc)))
            return
        except asyncio.CancelledError:
            self._reader.feed_eof()
            raise
        self._error = self._error or ConnectionResetError("closed by the other end")
        self._reader.feed_eof()

    async def _wait_pump(self) -> None:
        try:
            await asyncio.shield(self._pump)
        except Exception:  # noqa: BLE001 - its error is the reader's
            pass

    async def _close(self) -> None:
        if self._sender is not None and not self._sender.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flushed.wait()), 10.0)
            except TimeoutError:
                pass
        await self._ws.close()
        self._pause.resume_reading()
        try:
            await asyncio.wait_for(self._pump, 5.0)
        except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
            self._pump.cancel()
