"""The network I/O thread: owns every ZeroMQ socket, authenticates CURVE peers, only moves frames.

ZeroMQ sockets are not thread-safe, so one thread owns them all. It polls the listening
ROUTER socket, one DEALER per link this node dialled, the ZAP authentication socket and a
command pipe from the NetActor. Frames it receives are told to the actor as `FrameIn`; the
actor decides everything and sends commands back through the pipe.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka
import structlog
import zmq
from zmq.utils import z85

from protocol.errors import NetError

__all__ = ["NetIO", "FrameIn", "LinkDown", "Tick"]

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_pipe_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class FrameIn:
    """A frame that arrived on a link; `curve_key` is the peer's CURVE-authenticated key (Z85)."""

    link: str
    frame: bytes
    curve_key: bytes


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The transport says a link is gone (the peer disconnected)."""

    link: str
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic wake-up for timers (heartbeats, anti-entropy, expiry)."""


class NetIO:
    """Socket owner. Construct and call the command methods from the actor's thread only."""

    def __init__(
        self,
        *,
        curve_secret: bytes,
        curve_public: bytes,
        listen: str | None,
        max_message_bytes: int,
        deliver: Any,  # a pykka ActorRef (its .tell is thread-safe)
        tick_s: float,
    ) -> None:
        # A context of its own: the ZAP endpoint is per context, and tests run several
        # nodes in one process.
        self._ctx = zmq.Context()
        self._curve_secret = curve_secret
        self._curve_public = curve_public
        self._listen = listen
        self._max_bytes = max_message_bytes
        self._deliver = deliver
        self._tick_ms = int(tick_s * 1000)
        self._log = structlog.get_logger().bind(actor="net-io")
        pipe = f"inproc://loam-net-pipe-{next(_pipe_ids)}"
        self._pipe_in = self._ctx.socket(zmq.PAIR)
        self._pipe_in.bind(pipe)
        self._cmd = self._ctx.socket(zmq.PAIR)  # used by the actor thread only
        self._cmd.setsockopt(zmq.LINGER, 0)
        self._cmd.connect(pipe)
        self._zap = self._ctx.socket(zmq.REP)
        self._zap.bind(_ZAP_ENDPOINT)
        self._router: zmq.Socket | None = None
        self.bound_endpoint: str | None = None
        if listen is not None:
            self._router = self._ctx.socket(zmq.ROUTER)
            self._tune(self._router)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # The frame cap is enforced by ZeroMQ itself: a peer sending a bigger frame is
            # disconnected before the frame is buffered. It must be set before bind: the
            # listener copies the socket's options when it is created, so a later change
            # never reaches the connections it accepts.
            self._router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self._router.curve_server = True
            self._router.curve_secretkey = curve_secret
            self._router.curve_publickey = curve_public
            try:
                self._router.bind(listen)
            except zmq.ZMQError as exc:
                self._router.close(linger=0)
                self._zap.close(linger=0)
                self._pipe_in.close(linger=0)
                self._cmd.close(linger=0)
                self._ctx.term()
                raise NetError(f"cannot listen on {listen}: {exc.strerror}") from None
            self.bound_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._dealers: dict[str, zmq.Socket] = {}
        self._by_socket: dict[zmq.Socket, str] = {}
        self._server_keys: dict[str, bytes] = {}
        self._inbound_keys: dict[bytes, bytes] = {}  # routing id -> authenticated CURVE key
        self._thread = threading.Thread(target=self._run, name="loam-net-io", daemon=True)

    def start(self) -> None:
        """Start the I/O thread."""
        self._thread.start()

    # -- commands, called from the actor thread -------------------------------------------

    def connect(self, link: str, endpoint: str, server_key: bytes) -> None:
        """Dial endpoint as link, expecting the server's CURVE key."""
        self._cmd.send_multipart([b"C", link.encode(), endpoint.encode(), server_key])

    def send(self, link: str, frame: bytes) -> None:
        """Queue a frame on a link."""
        self._cmd.send_multipart([b"S", link.encode(), frame], copy=False)

    def close(self, link: str) -> None:
        """Forget a link (an outbound one's socket is closed)."""
        self._cmd.send_multipart([b"X", link.encode()])

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close every socket."""
        if self._thread.is_alive():
            self._cmd.send_multipart([b"Q"])
            self._thread.join(timeout_s)
        else:  # never started: the sockets the thread would have closed are still open
            for sock in (self._router, self._zap, self._pipe_in):
                if sock is not None:
                    sock.close(linger=0)
        self._cmd.close(linger=0)
        self._ctx.term()

    # -- the thread -----------------------------------------------------------------------

    @staticmethod
    def _tune(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2_000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pipe_in, zmq.POLLIN)
        poller.register(self._zap, zmq.POLLIN)
        if self._router is not None:
            poller.register(self._router, zmq.POLLIN)
        next_tick = _now_ms() + self._tick_ms
        running = True
        while running:
            timeout = max(0, next_tick - _now_ms())
            try:
                events = dict(poller.poll(timeout))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    break
                raise
            for sock in events:
                if sock is self._pipe_in:
                    running = self._drain_commands(poller)
                elif sock is self._zap:
                    self._answer_zap()
                elif sock is self._router:
                    self._drain_router()
                else:
                    self._drain_dealer(sock)
            if _now_ms() >= next_tick:
                next_tick = _now_ms() + self._tick_ms
                self._tell(Tick())
        # A short linger lets the goodbyes queued just before the stop reach the neighbours.
        for sock in list(self._dealers.values()):
            sock.close(linger=300)
        if self._router is not None:
            self._router.close(linger=300)
        self._zap.close(linger=0)
        self._pipe_in.close(linger=0)

    def _tell(self, message: object) -> None:
        try:
            self._deliver.tell(message)
        except pykka.ActorDeadError:
            pass  # the actor is stopping; its stop command is on the way

    def _drain_commands(self, poller: zmq.Poller) -> bool:
        while True:
            try:
                parts = self._pipe_in.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            op = parts[0]
            if op == b"S":
                self._send(parts[1].decode(), parts[2])
            elif op == b"C":
                self._connect(poller, parts[1].decode(), parts[2].decode(), parts[3])
            elif op == b"X":
                self._close(poller, parts[1].decode())
            elif op == b"Q":
                return False

    def _connect(self, poller: zmq.Poller, link: str, endpoint: str, server_key: bytes) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        self._tune(sock)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_bytes)
        sock.curve_secretkey = self._curve_secret
        sock.curve_publickey = self._curve_public
        sock.curve_serverkey = server_key
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self._tell(LinkDown(link, f"cannot dial {endpoint}: {exc}"))
            return
        self._dealers[link] = sock
        self._by_socket[sock] = link
        self._server_keys[link] = server_key
        poller.register(sock, zmq.POLLIN)

    def _close(self, poller: zmq.Poller, link: str) -> None:
        sock = self._dealers.pop(link, None)
        if sock is not None:
            del self._by_socket[sock]
            self._server_keys.pop(link, None)
            poller.unregister(sock)
            sock.close(linger=0)
        elif link.startswith("i:"):
            self._inbound_keys.pop(bytes.fromhex(link[2:]), None)

    def _send(self, link: str, frame: bytes) -> None:
        try:
            if link.startswith("i:"):
                if self._router is not None:
                    self._router.send_multipart([bytes.fromhex(link[2:]), frame], zmq.NOBLOCK)
            else:
                sock = self._dealers.get(link)
                if sock is not None:
                    sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self._log.debug("send_dropped_queue_full", link=link)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._tell(LinkDown(link, "peer disconnected"))
            else:
                self._log.warning("send_failed", link=link, error=str(exc))

    def _drain_router(self) -> None:
        assert self._router is not None
        while True:
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(parts) != 2:
                continue  # a DEALER peer sends exactly one frame per message
            rid = parts[0].bytes
            key = self._inbound_keys.get(rid)
            if key is None:
                user_id = parts[1].get("User-Id")
                key = user_id.encode() if user_id else b""
                self._inbound_keys[rid] = key
            self._tell(FrameIn("i:" + rid.hex(), parts[1].bytes, key))

    def _drain_dealer(self, sock: zmq.Socket) -> None:
        link = self._by_socket.get(sock)
        if link is None:
            return
        key = self._server_keys[link]
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._tell(FrameIn(link, frame, key))

    def _answer_zap(self) -> None:
        # ZAP (RFC 27): any CURVE client may connect; the handshake has proved it holds the
        # secret of the key it presents, and we hand that key on as the connection's User-Id
        # so the actor can bind it to a node id through the peer's signed record.
        msg = self._zap.recv_multipart()
        version, request_id = msg[0], msg[1] if len(msg) > 1 else b""
        mechanism = msg[5] if len(msg) > 5 else b""
        if version != b"1.0" or mechanism != b"CURVE" or len(msg) != 7:
            self._zap.send_multipart([b"1.0", request_id, b"400", b"CURVE required", b"", b""])
            return
        client_key = z85.encode(msg[6])
        self._zap.send_multipart([b"1.0", request_id, b"200", b"OK", client_key, b""])


def _now_ms() -> int:
    return int(time.monotonic() * 1000)
