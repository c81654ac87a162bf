"""Two VpnActors joined by a lossy in-process link: a client's TCP stream reaches a real socket server and back.

The provider's container is stood in for by a TCP server on loopback (the Docker lookup is
replaced by its address); everything else — the actors, the tunnel protocol, the socket
threads, the codec on every message — is the real thing.
"""

from __future__ import annotations

import queue
import random
import socket
import threading
from types import SimpleNamespace
from typing import Any, Iterator

import pykka
import pytest

from actors.activity.actor import ActivityError
from actors.net.actor import Received
from actors.vpn.actor import VpnActor
from protocol.codec import decode, encode
from protocol.identity import to_checksum_address
from protocol.vpn import VpnAck, VpnData, VpnOpen

REQ, PROV, OTHER = (to_checksum_address(bytes([b]) * 20) for b in (0xAA, 0xBB, 0xCC))


class Done(pykka.Future):  # type: ignore[misc]
    """An already-resolved answer, as a proxy call would give."""

    def __init__(self, value: Any = None, exc: BaseException | None = None) -> None:
        super().__init__()
        self._value, self._exc = value, exc

    def get(self, timeout: float | None = None) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._value


class Link:
    """Delivers messages between the two actors through the codec, losing some."""

    def __init__(self, loss: float = 0.0, seed: int = 1) -> None:
        self.refs: dict[str, pykka.ActorRef] = {}
        self.loss = loss
        self.ack_loss = loss
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.sent: list[tuple[str, str, Any]] = []

    def for_node(self, node_id: str) -> Any:
        link = self

        class Net:
            def subscribe(self, prefix: str, ref: pykka.ActorRef) -> Done:
                link.refs[node_id] = ref
                return Done()

            def send(self, recipient: str, msg: Any) -> str:
                with link.lock:
                    link.sent.append((node_id, recipient, msg))
                    lost = link.rng.random() < (link.ack_loss if isinstance(msg, VpnAck) else link.loss)
                if not lost and recipient in link.refs:
                    link.refs[recipient].tell(Received(node_id, decode(encode(msg))))
                return "link"

        return Net()


class Activity:
    """The provider's activity table: which requestor's activity is which address in which network."""

    def __init__(self) -> None:
        self.targets: dict[tuple[str, str, str], str] = {}  # tests fill it in (_provider_knows)

    def vpn_target(self, requestor: str, network_id: str, ip: str) -> Done:
        found = self.targets.get((requestor, network_id, ip))
        if found is None:
            return Done(exc=ActivityError(f"no running activity of yours is {ip} in network {network_id}"))
        return Done(found)


class Sink:
    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def __call__(self, event: str, payload: Any) -> None:
        self.events.put((event, payload))

    def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return self.events.get(timeout=timeout)

    def read_until_closed(self, timeout: float = 20.0) -> tuple[bytes, str]:
        got = b""
        while True:
            event, payload = self.next(timeout)
            if event == "data":
                got += payload
            elif event == "closed":
                return got, payload


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server standing in for the container: echoes, or answers 'big' with 300 kB then closes."""
    import exeunits.vm.unit as unit

    monkeypatch.setattr(unit, "connect", lambda *a, **k: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(unit, "container_address", lambda client, activity_id, root: "127.0.0.1", raising=False)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    seen.append(b"EOF")
                    return
                if data.startswith(b"big"):
                    conn.sendall(b"y" * 300_000)
                    return
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], seen
    listener.close()


@pytest.fixture
def pair(tmp_path: Any) -> Iterator[tuple[Any, Any, Link]]:
    link = Link(loss=0.0)
    settings = SimpleNamespace(actors=SimpleNamespace(ask_timeout_s=5.0), data_dir=str(tmp_path))
    req = VpnActor.start(SimpleNamespace(node_id=REQ), settings, link.for_node(REQ), None).proxy()
    prov = VpnActor.start(SimpleNamespace(node_id=PROV), settings, link.for_node(PROV), Activity()).proxy()
    yield req, prov, link
    pykka.ActorRegistry.stop_all()


def _network(req: Any) -> str:
    net = req.create_network("192.168.0.0/24").get()
    req.add_address(net["id"], "192.168.0.1").get()
    req.add_node(net["id"], PROV, "192.168.0.2").get()
    return net["id"]


def _provider_knows(prov: Any, network_id: str) -> None:
    # The provider's activity table uses the network id the requestor created.
    activity = prov._actor._activity  # noqa: SLF001 - the fake table stands in for the ActivityActor
    activity.targets = {(REQ, network_id, "192.168.0.2"): "act-1"}


def _open_tunnel(req: Any, prov: Any, port: int, sink: Sink, timeout_s: float = 10.0, **kwargs: Any) -> tuple[str, str]:
    """A network with the provider's activity at 192.168.0.2 and an open tunnel to its port: (network id, tunnel id)."""
    net_id = _network(req)
    _provider_knows(prov, net_id)
    tunnel = req.open_tcp(net_id, "192.168.0.2", port, sink, **kwargs).get()
    assert sink.next(timeout=timeout_s) == ("opened", b"")
    return net_id, tunnel


def test_a_stream_goes_through_a_lossy_link_intact_both_ways(pair: Any, server: Any) -> None:
    req, prov, link = pair
    port, _ = server
    link.loss = 0.25
    sink = Sink()
    net_id, tunnel = _open_tunnel(req, prov, port, sink, timeout_s=30)
    payload = random.Random(3).randbytes(1_000_000).replace(b"big", b"BIG")
    for start in range(0, len(payload), 50_000):
        req.write(tunnel, payload[start : start + 50_000]).get()
    got = b""
    while len(got) < len(payload):
        event, data = sink.next(timeout=30)
        assert event == "data", (event, data)
        got += data
    assert got == payload
    conns = req.connections(net_id).get()
    assert conns == [{"protocol": 6, "localIp": "192.168.0.1", "localPort": conns[0]["localPort"],
                      "remoteIp": "192.168.0.2", "remotePort": port}]  # fmt: skip
    assert any(isinstance(m, VpnData) for _, _, m in link.sent)
    req.close(tunnel).get()


def test_the_service_closing_delivers_everything_then_closes_the_client(pair: Any, server: Any) -> None:
    req, prov, link = pair
    port, _ = server
    link.loss = 0.2
    sink = Sink()
    _, tunnel = _open_tunnel(req, prov, port, sink, timeout_s=30)
    req.write(tunnel, b"big please").get()
    got, reason = sink.read_until_closed(timeout=60)
    assert got == b"y" * 300_000 and "closed" in reason
    link.loss = 0.0
    _wait(lambda: prov.status().get()["tunnels"] == {} and req.status().get()["tunnels"] == {})


def test_the_client_closing_closes_the_service_connection(pair: Any, server: Any) -> None:
    req, prov, link = pair
    port, seen = server
    sink = Sink()
    _, tunnel = _open_tunnel(req, prov, port, sink)
    req.write(tunnel, b"ping").get()
    assert sink.next() == ("data", b"ping")
    req.close(tunnel).get()
    _wait(lambda: seen == [b"EOF"])
    _wait(lambda: prov.status().get()["tunnels"] == {} and req.status().get()["tunnels"] == {})


def test_tunnels_to_addresses_that_are_not_the_requestors_activities_are_refused(pair: Any, server: Any) -> None:
    req, prov, link = pair
    port, _ = server
    net_id = _network(req)  # the provider knows no activity in this network
    sink = Sink()
    req.open_tcp(net_id, "192.168.0.2", port, sink).get()
    event, reason = sink.next()
    assert event == "closed" and "no running activity of yours" in reason
    assert prov.status().get()["refused"] == 1
    # Another node asking for the requestor's activity by its address: refused too.
    _provider_knows(prov, net_id)
    link.refs[OTHER] = pykka.ThreadingActor.start()  # a mailbox for the answer
    link.refs[PROV].tell(Received(OTHER, VpnOpen("cd" * 16, net_id, "192.168.0.2", port)))
    _wait(lambda: prov.status().get()["refused"] == 2)
    [answer] = [m for _, r, m in link.sent if r == OTHER]
    assert answer.tunnel_id == "cd" * 16 and "no running activity of yours" in answer.error
    # A port nothing listens on: the connect fails with the reason.
    sink = Sink()
    closed_port = socket.create_server(("127.0.0.1", 0))
    dead = closed_port.getsockname()[1]
    closed_port.close()
    req.open_tcp(net_id, "192.168.0.2", dead, sink).get()
    event, reason = sink.next()
    assert event == "closed" and f"cannot connect to port {dead}" in reason


def test_bad_requests_and_stray_messages_leave_the_actor_serving(pair: Any, server: Any) -> None:
    from protocol.errors import VpnError, VpnNotFoundError

    req, prov, link = pair
    net_id = _network(req)
    with pytest.raises(VpnNotFoundError):
        req.open_tcp(net_id, "192.168.0.9", 80, Sink()).get()
    with pytest.raises(VpnNotFoundError):
        req.open_tcp("nope", "192.168.0.2", 80, Sink()).get()
    with pytest.raises(VpnError):
        req.open_tcp(net_id, "192.168.0.2", 0, Sink()).get()
    with pytest.raises(VpnNotFoundError):
        req.write("ab" * 16, b"x").get()
    req.close("ab" * 16).get()  # unknown: a no-op
    # Data for a tunnel that does not exist, and from a node that is not its peer: ignored.
    link.refs[PROV].tell(Received(OTHER, VpnData("ef" * 16, 0, b"x")))
    link.refs[PROV].tell(Received(OTHER, "not a message"))
    assert prov.status().get()["tunnels"] == {}
    req.remove_network(net_id).get()
    assert req.networks().get() == []


def _wait(check: Any, timeout_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_slow_client_holds_the_service_back_to_a_window(pair: Any, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import actors.vpn.actor as vpn_actor

    monkeypatch.setattr(vpn_actor, "WINDOW", 2)  # tunnels opened from now on: 2 chunks ahead
    req, prov, link = pair
    port, _ = server
    sink = Sink()
    _, tunnel = _open_tunnel(req, prov, port, sink, manual_consume=True)
    req.write(tunnel, b"big please").get()  # 300 kB come back: five chunks of 64 KiB
    time.sleep(1.0)
    held = []
    while not sink.events.empty():
        held.append(sink.next())
    assert held and sum(len(d) for e, d in held if e == "data") <= 2 * 65536, [len(d) for _, d in held]
    assert all(e == "data" for e, _ in held)  # not closed: the rest waits at the provider
    got = b"".join(d for _, d in held)
    req.consumed(tunnel, len(got)).get()  # the client passed it on: the provider sends on
    while True:
        event, data = sink.next(timeout=20)
        if event == "closed":
            break
        got += data
        req.consumed(tunnel, len(data)).get()
    assert got == b"y" * 300_000


def test_lost_acks_do_not_leave_a_shut_window_shut(pair: Any, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks are not resent by a timer as data is; half of them lost, with a window of two chunks, the stream still ends."""
    import time

    import actors.vpn.actor as vpn_actor

    monkeypatch.setattr(vpn_actor, "WINDOW", 2)
    req, prov, link = pair
    port, _ = server
    sink = Sink()
    _, tunnel = _open_tunnel(req, prov, port, sink, manual_consume=True)
    link.ack_loss = 0.5
    payload = random.Random(5).randbytes(400_000).replace(b"big", b"BIG")
    req.write(tunnel, payload).get()  # echoed back: both directions run against a shut window, acks lost
    got = b""
    while len(got) < len(payload):
        event, data = sink.next(timeout=30)
        assert event == "data", (event, data)
        got += data
        time.sleep(0.25)  # a slow client: its consumption is acknowledged apart from the delivery
        req.consumed(tunnel, len(data)).get()
    assert got == payload
    req.close(tunnel).get()
