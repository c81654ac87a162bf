"""VpnActor: a requestor's virtual networks, and TCP tunnels from it to services in providers' activities.

Requestor side: the networks the net-api manages (`networks.py`) and the tunnels REST
clients open to `{ip}:{port}` in them; each tunnel's bytes reach the client through a
`sink(event, payload)` callback (events "opened", "data" with bytes, "closed" with a
reason), called from this actor's thread, so it must not block.

Provider side: a tunnel is accepted only from the requestor of a running activity that
was deployed with that address in that network; the actor connects to the port in the
activity's container and relays. One thread reads each socket (at most a window of
unacknowledged chunks ahead: a slow requestor slows the service, it does not fill memory),
one writes to it.

Both sides number their chunks and retransmit what is not acknowledged (`stream.py`), so
the overlay may lose or reorder messages.
"""

from __future__ import annotations

import queue
import secrets
import socket
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pykka

from actors.activity.actor import activities_dir
from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import now_ms
from actors.net.actor import Received
from actors.vpn.networks import Networks
from actors.vpn.stream import WINDOW_CHUNKS, Inbound, Outbound
from protocol.activity import ActivityVpnNodes
from protocol.errors import NodeError, ProtocolError, VpnError, VpnNotFoundError
from protocol.vpn import MAX_CHUNK_BYTES, VpnAck, VpnClose, VpnData, VpnOpen, VpnOpened

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["VpnActor", "Sink"]

# (event, payload): ("opened", b""), ("data", bytes), ("closed", reason)
Sink = Callable[[str, Any], None]

_TICK_S = 0.2
WINDOW = WINDOW_CHUNKS  # chunks a sender runs ahead of the other side's consumer
_OPEN_TIMEOUT_MS = 20_000
_CLOSE_LINGER_MS = 30_000  # a closing side waits this long for the other's close
_CLOSING_MAX_MS = 300_000  # and at most this long for the other side's consumer to take what is queued
_STALL_MS = 30_000  # unacknowledged data this old: the other side is gone
_CONNECT_TIMEOUT_S = 10.0
_MAX_TUNNELS = 512
_MAX_PER_PEER = 128
_RESEND_CONTROL_MS = 1_000  # an open or close not answered is sent again
_ACK_EVERY = 8  # chunks delivered (or consumed) before an ack goes at once; fewer wait for the tick
_REACK_MS = 1_000  # the last ack is repeated this often while it changed within _STALL_MS
_CLOSED_MEMORY = 4096  # tunnels recently closed here, to answer a close resent because our answer was lost


@dataclass
class _Tunnel:
    tunnel_id: str
    peer: str
    role: str  # "requestor" (we opened it for a client) or "provider" (we connect to a container)
    network_id: str
    ip: str
    port: int
    local_port: int
    state: str = "opening"  # opening -> open -> closing
    out: Outbound = field(default_factory=lambda: Outbound(window=WINDOW))
    inb: Inbound = field(default_factory=Inbound)
    since_ms: int = 0
    last_progress_ms: int = 0
    sink: Sink | None = None  # requestor: the client's end
    manual: bool = False  # requestor: the client reports what it consumed (consumed()); else delivered = consumed
    marks: deque[tuple[int, int]] = field(default_factory=deque)  # (chunks delivered, bytes to the sink by then)
    sink_bytes: int = 0  # bytes handed to the sink
    taken_bytes: int = 0  # of those, what the client passed on
    consumed: int = 0  # chunks below this were taken by this side's consumer
    sock: socket.socket | None = None  # provider: the service's end
    writes: queue.Queue[tuple[bytes, int] | None] | None = None  # (data, chunks delivered with it)
    permits: threading.Semaphore | None = None
    gone: threading.Event = field(default_factory=threading.Event)
    peer_sent: int | None = None  # the other side closed after sending this many chunks
    reason: str = ""
    close_sent: bool = False  # our VpnClose went out (once everything queued was numbered)
    acked: tuple[int, int] = (0, 0)  # (delivered, consumed) in our last VpnAck
    ack_due: bool = False  # an ack waits for the next tick
    last_ack_ms: int = 0
    changed_ms: int = 0  # when what we acknowledge last changed
    control_sent_ms: int = 0  # when an open (opening) or close (closing) was last sent


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _Connected:
    tunnel_id: str
    sock: socket.socket | None
    error: str


@dataclass(frozen=True)
class _SocketData:
    tunnel_id: str
    data: bytes


@dataclass(frozen=True)
class _Written:
    tunnel_id: str
    upto: int


@dataclass(frozen=True)
class _SocketEnded:
    tunnel_id: str
    reason: str


class VpnActor(LoamActor):
    """Virtual networks (requestor) and the tunnels between requestors and services (both sides)."""

    name = "vpn"

    def __init__(
        self, identity: Any, settings: Settings, net: Any, activity: Any, *, on_actor_failure: FailureHandler | None = None
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._net = net
        self._activity = activity
        self._ask_s = settings.actors.ask_timeout_s
        self._activities_root = str(activities_dir(settings))
        self._networks = Networks(owner=identity.node_id)
        self._tunnels: dict[str, _Tunnel] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()  # tunnel id -> peer, of tunnels finished here
        self._ports = 49152
        self._ticker: Ticker | None = None
        self._counters = {"opened": 0, "refused": 0, "bytes_in": 0, "bytes_out": 0}

    def start_up(self) -> None:
        self._net.subscribe("vpn.", self.actor_ref).get(timeout=self._ask_s)
        self._ticker = Ticker(self.actor_ref, _Tick(), _TICK_S)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        for tunnel in list(self._tunnels.values()):
            self._finish(tunnel, "the node is stopping", tell_peer=True)

    # -- requestor: networks (the net-api) --------------------------------------------------

    def create_network(self, ip: Any, mask: Any = None, gateway: Any = None) -> dict[str, Any]:
        """A new network (the spec's Network). Raises VpnError for bad addresses."""
        network = self._networks.create(ip, mask, gateway)
        self._log.info("vpn_network_created", network_id=network.id, net=str(network.net))
        return network.to_json()

    def networks(self) -> list[dict[str, Any]]:
        """Every network this node created."""
        return [n.to_json() for n in self._networks.all()]

    def network(self, network_id: str) -> dict[str, Any]:
        """One network; VpnNotFoundError when unknown."""
        return self._networks.get(network_id).to_json()

    def remove_network(self, network_id: str) -> None:
        """Remove a network and close its tunnels; VpnNotFoundError when unknown."""
        self._networks.remove(network_id)
        for tunnel in list(self._tunnels.values()):
            if tunnel.role == "requestor" and tunnel.network_id == network_id:
                self._close_local(tunnel, "the network was removed")
        self._log.info("vpn_network_removed", network_id=network_id)

    def addresses(self, network_id: str) -> list[dict[str, str]]:
        """The requestor's addresses in a network."""
        return [{"ip": ip} for ip in self._networks.get(network_id).addresses]

    def add_address(self, network_id: str, ip: Any) -> str:
        """Give the requestor an address in a network."""
        host = self._networks.add_address(network_id, ip)
        self._announce(network_id)
        return host

    def nodes(self, network_id: str) -> list[dict[str, str]]:
        """The nodes in a network (the spec's Node: id and ip)."""
        return [{"id": node, "ip": ip} for ip, node in self._networks.get(network_id).nodes.items()]

    def add_node(self, network_id: str, node_id: Any, ip: Any) -> str:
        """Add a provider node to a network at an address (and tell every node in it the new map)."""
        host = self._networks.add_node(network_id, node_id, ip)
        self._announce(network_id)
        return host

    def remove_node(self, network_id: str, node_id: str) -> None:
        """Take a node out of a network and close the tunnels to it."""
        hosts = self._networks.remove_node(network_id, node_id)
        self._announce(network_id, also=node_id)
        for tunnel in list(self._tunnels.values()):
            if tunnel.role == "requestor" and tunnel.network_id == network_id and tunnel.ip in hosts:
                self._close_local(tunnel, "the node was removed from the network")

    def _announce(self, network_id: str, also: str = "") -> None:
        """Tell each provider node in the network who holds which address, so its activities reach one another."""
        network = self._networks.get(network_id)
        nodes = dict(network.nodes)
        nodes.update({ip: self.node_id for ip in network.addresses})
        for node in {*network.nodes.values(), *([also] if also else [])}:
            try:
                self._net.send(node, ActivityVpnNodes(network_id, nodes))
            except NodeError as exc:
                self._log.warning("vpn_nodes_not_sent", node=node, error=str(exc))

    def connections(self, network_id: str) -> list[dict[str, Any]]:
        """The requestor's open TCP tunnels in a network (the spec's Connection)."""
        network = self._networks.get(network_id)
        local_ip = network.addresses[0] if network.addresses else str(network.net.network_address)
        return [
            {"protocol": 6, "localIp": local_ip, "localPort": t.local_port, "remoteIp": t.ip, "remotePort": t.port}
            for t in self._tunnels.values()
            if t.role == "requestor" and t.network_id == network_id and t.state != "closing"
        ]

    # -- requestor: tunnels ----------------------------------------------------------------

    def open_tcp(self, network_id: str, ip: str, port: int, sink: Sink, *, manual_consume: bool = False) -> str:
        """Open a tunnel to `ip:port` in a network; returns its id. The sink hears "opened" or "closed".

        With manual_consume the client calls consumed() as it passes data on, and the provider
        runs at most a window ahead of that; without, data counts as consumed once the sink has it.

        Raises:
            VpnNotFoundError: no such network, or no node at that address.
            VpnError: a bad port, or too many tunnels.
        """
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise VpnError(f"port must be in 1..65535, not {port!r}")
        provider = self._networks.node_at(network_id, ip)
        if len(self._tunnels) >= _MAX_TUNNELS:
            raise VpnError(f"at most {_MAX_TUNNELS} tunnels at a time")
        now = now_ms()
        self._ports = 49152 + (self._ports - 49152 + 1) % 16384
        tunnel = _Tunnel(
            secrets.token_hex(16), provider, "requestor", network_id, ip, port, self._ports,
            since_ms=now, last_progress_ms=now, sink=sink, control_sent_ms=now, manual=manual_consume,
        )  # fmt: skip
        self._tunnels[tunnel.tunnel_id] = tunnel
        self._net.send(provider, VpnOpen(tunnel.tunnel_id, network_id, ip, port))
        self._log.info("vpn_tunnel_opening", tunnel_id=tunnel.tunnel_id, provider=provider, ip=ip, port=port)
        return tunnel.tunnel_id

    def write(self, tunnel_id: str, data: bytes) -> int:
        """Send a client's bytes through a tunnel (held until it is open); returns the bytes still queued
        (a client waits while that is large). VpnNotFoundError when the tunnel is gone."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.role != "requestor" or tunnel.state == "closing":
            raise VpnNotFoundError(f"tunnel {tunnel_id[:40]} is closed")
        if data:
            tunnel.out.queue(bytes(data))
            if tunnel.state == "open":
                self._flush(tunnel)
        return tunnel.out.queued_bytes

    def queued(self, tunnel_id: str) -> int:
        """Bytes of a tunnel not sent yet (waiting for the window). VpnNotFoundError when it is gone."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.role != "requestor":
            raise VpnNotFoundError(f"tunnel {tunnel_id[:40]} is closed")
        return tunnel.out.queued_bytes

    def consumed(self, tunnel_id: str, nbytes: int) -> None:
        """The client passed on nbytes more of what the sink gave it (manual_consume tunnels)."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or not tunnel.manual or nbytes <= 0:
            return
        tunnel.taken_bytes += nbytes
        before = tunnel.consumed
        while tunnel.marks and tunnel.marks[0][1] <= tunnel.taken_bytes:
            tunnel.consumed = tunnel.marks.popleft()[0]
        if tunnel.consumed != before:
            self._ack_later(tunnel)

    def close(self, tunnel_id: str, reason: str = "closed by the client") -> None:
        """Close a tunnel from the client's end (a repeat or an unknown id is a no-op)."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is not None and tunnel.role == "requestor":
            tunnel.sink = None  # the client is gone: nothing more to tell it
            self._close_local(tunnel, reason)

    def status(self) -> dict[str, Any]:
        """Networks, tunnels by role and state, and byte counters."""
        tunnels: dict[str, int] = {}
        for t in self._tunnels.values():
            tunnels[f"{t.role}_{t.state}"] = tunnels.get(f"{t.role}_{t.state}", 0) + 1
        return {"networks": len(self._networks.all()), "tunnels": tunnels, **self._counters}

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, _Tick):
                self._on_tick(now_ms())
            elif isinstance(message, Received):
                self._on_network(message.sender, message.message)
            elif isinstance(message, _Connected):
                self._on_connected(message)
            elif isinstance(message, _SocketData):
                tunnel = self._tunnels.get(message.tunnel_id)
                if tunnel is not None and tunnel.state == "open":
                    self._send_data(tunnel, message.data)
            elif isinstance(message, _Written):
                tunnel = self._tunnels.get(message.tunnel_id)
                if tunnel is not None and message.upto > tunnel.consumed:
                    tunnel.consumed = message.upto
                    self._ack_later(tunnel)
            elif isinstance(message, _SocketEnded):
                tunnel = self._tunnels.get(message.tunnel_id)
                if tunnel is not None:
                    self._close_local(tunnel, message.reason)
        except (ProtocolError, VpnError) as exc:
            self._log.warning("vpn_message_rejected", error=str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - remote input must never kill the actor
            self._log.error("vpn_message_failed", error=repr(exc), exc_info=True)
        return None

    def _on_network(self, sender: str, msg: Any) -> None:
        if isinstance(msg, VpnOpen):
            self._on_open(sender, msg)
            return
        tunnel = self._tunnels.get(getattr(msg, "tunnel_id", ""))
        if tunnel is None or tunnel.peer != sender:
            if isinstance(msg, VpnClose) and self._closed.get(msg.tunnel_id) == sender:
                # Our answer to its close was lost: answer once more (once: two forgetful sides never ping-pong).
                del self._closed[msg.tunnel_id]
                self._net.send(sender, VpnClose(msg.tunnel_id, 0, "closed"))
            return  # a late message of a closed tunnel, or someone else's: nothing to do
        now = now_ms()
        if isinstance(msg, VpnOpened):
            if tunnel.role != "requestor" or tunnel.state != "opening":
                return
            if msg.error:
                self._finish(tunnel, msg.error, tell_peer=False)
                return
            tunnel.state, tunnel.last_progress_ms = "open", now
            self._tell_sink(tunnel, "opened", b"")
            self._flush(tunnel)  # what the client wrote while it was opening
            if tunnel.reason:  # the client closed while it was opening
                self._close_local(tunnel, tunnel.reason)
        elif isinstance(msg, VpnData):
            if tunnel.state == "opening":
                return
            before = tunnel.inb.delivered
            chunks = tunnel.inb.accept(msg.seq, msg.data)
            if chunks:
                data = b"".join(chunks)
                self._counters["bytes_in"] += len(data)
                self._deliver(tunnel, data)
            if tunnel.inb.delivered == before:
                self._ack(tunnel)  # a duplicate or a chunk after a gap: our last ack may have been lost
            else:
                self._ack_later(tunnel)
            self._maybe_done(tunnel)
        elif isinstance(msg, VpnAck):
            newly = tunnel.out.ack(msg.upto, msg.consumed)
            if newly:
                tunnel.last_progress_ms = now
                if tunnel.permits is not None:
                    for _ in range(newly):
                        tunnel.permits.release()
            self._flush(tunnel)
        elif isinstance(msg, VpnClose):
            if tunnel.state == "closing":  # the answer to our close
                self._finish(tunnel, tunnel.reason, tell_peer=False)
                return
            tunnel.peer_sent, tunnel.reason = msg.sent, msg.reason or "closed by the other side"
            self._maybe_done(tunnel)

    def _maybe_done(self, tunnel: _Tunnel) -> None:
        """The other side closed: once everything it sent was handed on, close this side too."""
        if tunnel.peer_sent is not None and tunnel.inb.delivered >= tunnel.peer_sent and tunnel.state != "closing":
            self._finish(tunnel, tunnel.reason, tell_peer=True)

    # -- provider side ---------------------------------------------------------------------

    def _on_open(self, sender: str, msg: VpnOpen) -> None:
        known = self._tunnels.get(msg.tunnel_id)
        if known is not None:
            if known.peer == sender and known.state == "open":
                self._net.send(sender, VpnOpened(msg.tunnel_id, ""))  # our answer was lost
            return
        refused = ""
        if len(self._tunnels) >= _MAX_TUNNELS or sum(t.peer == sender for t in self._tunnels.values()) >= _MAX_PER_PEER:
            refused = "too many tunnels to this provider"
        activity_id = ""
        if not refused:
            try:
                activity_id = self._activity.vpn_target(sender, msg.network_id, msg.ip).get(timeout=self._ask_s)
            except NodeError as exc:
                refused = str(exc)[:500]
        if refused:
            self._counters["refused"] += 1
            self._log.info("vpn_tunnel_refused", tunnel_id=msg.tunnel_id, requestor=sender, reason=refused)
            self._net.send(sender, VpnOpened(msg.tunnel_id, refused))
            return
        now = now_ms()
        tunnel = _Tunnel(
            msg.tunnel_id, sender, "provider", msg.network_id, msg.ip, msg.port, msg.port, since_ms=now, last_progress_ms=now,
            writes=queue.Queue(), permits=threading.Semaphore(WINDOW),
        )  # fmt: skip
        self._tunnels[tunnel.tunnel_id] = tunnel
        threading.Thread(
            target=_connect, args=(self.actor_ref, tunnel.tunnel_id, activity_id, self._activities_root, msg.port),
            name="vpn-connect", daemon=True,
        ).start()  # fmt: skip

    def _on_connected(self, msg: _Connected) -> None:
        tunnel = self._tunnels.get(msg.tunnel_id)
        if tunnel is None or tunnel.state != "opening":
            if msg.sock is not None:
                msg.sock.close()
            return
        if msg.sock is None:
            self._counters["refused"] += 1
            self._net.send(tunnel.peer, VpnOpened(tunnel.tunnel_id, msg.error))
            del self._tunnels[tunnel.tunnel_id]
            return
        tunnel.sock, tunnel.state = msg.sock, "open"
        self._counters["opened"] += 1
        assert tunnel.writes is not None and tunnel.permits is not None
        threading.Thread(target=_read_socket, args=(self.actor_ref, tunnel), name="vpn-read", daemon=True).start()
        threading.Thread(target=_write_socket, args=(self.actor_ref, tunnel), name="vpn-write", daemon=True).start()
        self._net.send(tunnel.peer, VpnOpened(tunnel.tunnel_id, ""))
        self._log.info("vpn_tunnel_opened", tunnel_id=tunnel.tunnel_id, requestor=tunnel.peer, port=tunnel.port)

    # -- both sides ------------------------------------------------------------------------

    def _send_data(self, tunnel: _Tunnel, data: bytes) -> None:
        tunnel.out.queue(data)
        self._flush(tunnel)

    def _flush(self, tunnel: _Tunnel) -> None:
        """Send what the window lets go; once a closing side has sent everything, its close."""
        now = now_ms()
        if tunnel.out.all_acked:
            tunnel.last_progress_ms = now  # the stall clock runs from the oldest unacknowledged chunk
        for seq, chunk in tunnel.out.take(now):
            self._counters["bytes_out"] += len(chunk)
            self._net.send(tunnel.peer, VpnData(tunnel.tunnel_id, seq, chunk))
        if tunnel.state == "closing" and not tunnel.close_sent and tunnel.out.queued_bytes == 0:
            tunnel.close_sent, tunnel.control_sent_ms, tunnel.since_ms = True, now, now
            self._send_close(tunnel, tunnel.reason)

    def _send_close(self, tunnel: _Tunnel, reason: str) -> None:
        """Our close: after the chunks we numbered (the other side delivers those first)."""
        self._net.send(tunnel.peer, VpnClose(tunnel.tunnel_id, tunnel.out.next_seq, reason[:1000]))

    def _ack(self, tunnel: _Tunnel) -> None:
        delivered = tunnel.inb.delivered
        consumed = min(tunnel.consumed, delivered)
        tunnel.ack_due, tunnel.last_ack_ms = False, now_ms()
        if (delivered, consumed) != tunnel.acked:
            tunnel.acked, tunnel.changed_ms = (delivered, consumed), tunnel.last_ack_ms
        self._net.send(tunnel.peer, VpnAck(tunnel.tunnel_id, delivered, consumed))

    def _ack_later(self, tunnel: _Tunnel) -> None:
        """Acknowledge now when ACK_EVERY chunks went unacknowledged, else on the next tick (fewer messages)."""
        delivered, consumed = tunnel.inb.delivered, min(tunnel.consumed, tunnel.inb.delivered)
        last_delivered, last_consumed = tunnel.acked
        if delivered - last_delivered >= _ACK_EVERY or consumed - last_consumed >= _ACK_EVERY:
            self._ack(tunnel)
        else:
            tunnel.ack_due = True

    def _deliver(self, tunnel: _Tunnel, data: bytes) -> None:
        upto = tunnel.inb.delivered
        if tunnel.role == "requestor":
            if tunnel.sink is None:
                tunnel.consumed = upto  # nobody to take it: as good as consumed
                return
            tunnel.sink_bytes += len(data)
            if tunnel.manual:
                tunnel.marks.append((upto, tunnel.sink_bytes))
            else:
                tunnel.consumed = upto
            self._tell_sink(tunnel, "data", data)
        elif tunnel.writes is not None:
            tunnel.writes.put((data, upto))

    def _tell_sink(self, tunnel: _Tunnel, event: str, payload: Any) -> None:
        if tunnel.sink is None:
            return
        try:
            tunnel.sink(event, payload)
        except Exception as exc:  # noqa: BLE001 - a client's callback must not break the tunnel table
            self._log.warning("vpn_sink_failed", tunnel_id=tunnel.tunnel_id, error=repr(exc))
            tunnel.sink = None

    def _close_local(self, tunnel: _Tunnel, reason: str) -> None:
        """This side's end closed: tell the other side, keep resending unacknowledged data until it answers."""
        if tunnel.state == "closing":
            return
        tunnel.reason = reason
        if tunnel.state == "opening":
            if tunnel.role == "requestor":
                return  # closed once VpnOpened arrives (or the open times out)
            self._finish(tunnel, reason, tell_peer=True)
            return
        tunnel.state, tunnel.since_ms = "closing", now_ms()
        self._release_local(tunnel, reason)
        self._flush(tunnel)  # the close goes once everything queued is on its way

    def _finish(self, tunnel: _Tunnel, reason: str, *, tell_peer: bool) -> None:
        """Forget a tunnel, closing this side's end; tell_peer sends the other side our close."""
        self._tunnels.pop(tunnel.tunnel_id, None)
        self._closed[tunnel.tunnel_id] = tunnel.peer
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)
        if tell_peer:
            try:
                self._send_close(tunnel, reason)
            except (NodeError, pykka.ActorDeadError):
                pass
        self._release_local(tunnel, reason)
        tunnel.state = "closing"
        self._log.info("vpn_tunnel_closed", tunnel_id=tunnel.tunnel_id, role=tunnel.role, reason=reason[:200])

    def _release_local(self, tunnel: _Tunnel, reason: str) -> None:
        tunnel.gone.set()
        if tunnel.role == "requestor":
            self._tell_sink(tunnel, "closed", reason)
            tunnel.sink = None
        else:
            if tunnel.writes is not None:
                tunnel.writes.put(None)  # the writer closes the socket after what is queued
            if tunnel.permits is not None:
                tunnel.permits.release()  # wake a reader waiting for room

    def _on_tick(self, now: int) -> None:
        for tunnel in list(self._tunnels.values()):
            if tunnel.state == "opening":
                if tunnel.role != "requestor":
                    continue
                if now - tunnel.since_ms > _OPEN_TIMEOUT_MS:
                    self._finish(tunnel, f"provider {tunnel.peer} did not answer the tunnel request", tell_peer=True)
                elif now - tunnel.control_sent_ms >= _RESEND_CONTROL_MS:  # the request or its answer may be lost
                    tunnel.control_sent_ms = now
                    self._net.send(tunnel.peer, VpnOpen(tunnel.tunnel_id, tunnel.network_id, tunnel.ip, tunnel.port))
                continue
            if tunnel.ack_due or (now - tunnel.last_ack_ms >= _REACK_MS and now - tunnel.changed_ms <= _STALL_MS):
                # Due, or repeated: acks are not resent by the other side's timer as data is, and a
                # lost one that opened the window would leave the sender waiting.
                self._ack(tunnel)
            for seq, chunk in tunnel.out.due(now):
                self._net.send(tunnel.peer, VpnData(tunnel.tunnel_id, seq, chunk))
            if not tunnel.out.all_acked and now - tunnel.last_progress_ms > _STALL_MS:
                self._finish(tunnel, "the other side stopped answering", tell_peer=True)
            elif tunnel.state == "closing":
                if not tunnel.close_sent:
                    if now - tunnel.since_ms > _CLOSING_MAX_MS:
                        self._finish(tunnel, "the other side took nothing more", tell_peer=True)
                elif now - tunnel.since_ms > _CLOSE_LINGER_MS:
                    self._finish(tunnel, tunnel.reason, tell_peer=False)
                elif now - tunnel.control_sent_ms >= _RESEND_CONTROL_MS:
                    tunnel.control_sent_ms = now
                    self._send_close(tunnel, tunnel.reason)


# -- provider threads --------------------------------------------------------------------


def _connect(ref: pykka.ActorRef, tunnel_id: str, activity_id: str, root: str, port: int) -> None:
    """Find the activity's container and connect to the port in it; tells the actor _Connected."""
    try:
        from exeunits.vm.unit import connect, container_address

        client = connect()
        try:
            address = container_address(client, activity_id, root)
        finally:
            client.close()
        if address is None:
            raise VpnError(f"activity {activity_id} has no running container with an address")
        sock = socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT_S)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result = _Connected(tunnel_id, sock, "")
    except (OSError, NodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        result = _Connected(tunnel_id, None, f"cannot connect to port {port} of the service: {why}"[:1000])
    try:
        ref.tell(result)
    except pykka.ActorDeadError:
        if result.sock is not None:
            result.sock.close()


def _read_socket(ref: pykka.ActorRef, tunnel: _Tunnel) -> None:
    """Service → actor, at most a window of chunks ahead of the acknowledgements."""
    assert tunnel.sock is not None and tunnel.permits is not None
    reason = "the service closed the connection"
    try:
        while True:
            tunnel.permits.acquire()
            if tunnel.gone.is_set():
                return
            data = tunnel.sock.recv(MAX_CHUNK_BYTES)
            if not data:
                break
            ref.tell(_SocketData(tunnel.tunnel_id, data))
    except OSError as exc:
        if tunnel.gone.is_set():
            return
        reason = f"the service's connection failed: {exc.strerror or exc}"
    except pykka.ActorDeadError:
        return
    try:
        ref.tell(_SocketEnded(tunnel.tunnel_id, reason))
    except pykka.ActorDeadError:
        pass


def _write_socket(ref: pykka.ActorRef, tunnel: _Tunnel) -> None:
    """Actor → service, in order; None in the queue closes the socket."""
    assert tunnel.sock is not None and tunnel.writes is not None
    sock = tunnel.sock
    try:
        while True:
            item = tunnel.writes.get()
            if item is None:
                break
            data, upto = item
            sock.sendall(data)
            ref.tell(_Written(tunnel.tunnel_id, upto))  # the requestor may send further
    except pykka.ActorDeadError:
        pass
    except OSError as exc:
        try:
            ref.tell(_SocketEnded(tunnel.tunnel_id, f"writing to the service failed: {exc.strerror or exc}"))
        except pykka.ActorDeadError:
            pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
