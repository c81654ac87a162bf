"""A container's link to a requestor's VPN: the vpn-relay in it, and the packets to and from the node.

For each network a `deploy` named, `RelayLink.open` starts the relay (`relay/vpn-relay.c`)
in the running container through `docker exec` with stdin attached: it makes a tun device
with the activity's address and relays IP packets over the exec's stdin/stdout. A reader
thread hands the packets leaving the container to `on_packets(network_id, packets)` in
batches (what is already buffered goes in one batch); `send` writes packets for the
container. The container needs CAP_NET_ADMIN and /dev/net/tun for it (unit.py adds them).

    link = RelayLink.open(api, container_id, "vpn0", network_id, "192.168.0.2", "255.255.255.0", on_packets)
    link.send([packet, ...])
    link.close()
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import Any, Callable

import structlog

from protocol.activity import packet_batches
from protocol.errors import ExeUnitError

__all__ = ["RelayLink", "RELAY_PATH", "MTU"]

RELAY_PATH = "/.loam-vpn-relay"
# The tun device's MTU: packets travel inside overlay messages, never on a wire of their own,
# so large packets cost nothing but cut the per-packet work (TCP in the containers uses it).
MTU = 60000
_READY_TIMEOUT_S = 10.0
_BATCH_BYTES = 256 * 1024
_STREAM_HEADER = struct.Struct(">BxxxI")  # docker's multiplexed stream: type (1 stdout, 2 stderr), size


class RelayLink:
    """One network's relay process in a container and the socket to it."""

    def __init__(self, network_id: str, sock: socket.socket, on_packets: Callable[[str, list[bytes]], None]) -> None:
        self.network_id = network_id
        self._sock = sock
        self._on_packets = on_packets
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._buffer = b""
        self._pending = b""  # relay frames not complete yet
        self._log = structlog.get_logger().bind(component="vm", network=network_id)
        self.stderr = ""

    @classmethod
    def open(
        cls, api: Any, container_id: str, ifname: str, network_id: str, address: str, netmask: str,
        on_packets: Callable[[str, list[bytes]], None],
    ) -> RelayLink:
        """Start the relay for one network (device `ifname` with address/netmask) and wait until it is up.

        Raises:
            ExeUnitError: the relay did not start (no tun device, no capability, an old kernel).
        """
        import docker.errors

        try:
            exec_id = api.exec_create(
                container_id, [RELAY_PATH, ifname, address, netmask, str(MTU)],
                stdin=True, stdout=True, stderr=True, tty=False,
            )["Id"]  # fmt: skip
            raw = api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"cannot start the VPN relay: {exc}") from exc
        sock: socket.socket = getattr(raw, "_sock", raw)
        link = cls(network_id, sock, on_packets)
        link._wait_ready()
        threading.Thread(target=link._read_loop, name=f"vpn-relay-{ifname}", daemon=True).start()
        return link

    def send(self, packets: list[bytes] | tuple[bytes, ...]) -> None:
        """Packets for the container (dropped, as a network would, once the relay is gone)."""
        data = b"".join(struct.pack(">H", len(p)) + p for p in packets if 0 < len(p) <= 65535)
        if not data or self._closed.is_set():
            return
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError:
            self._closed.set()

    def close(self) -> None:
        """Stop relaying (the relay exits when its stdin closes)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    # -- internals ---------------------------------------------------------------------------

    def _recv(self, timeout_s: float | None) -> bytes:
        """Next stdout bytes of the relay (b"" at the end); stderr is kept for error messages."""
        while True:
            while len(self._buffer) >= _STREAM_HEADER.size:
                kind, size = _STREAM_HEADER.unpack_from(self._buffer)
                if len(self._buffer) < _STREAM_HEADER.size + size:
                    break
                payload = self._buffer[_STREAM_HEADER.size : _STREAM_HEADER.size + size]
                self._buffer = self._buffer[_STREAM_HEADER.size + size :]
                if kind == 2:
                    self.stderr = (self.stderr + payload.decode(errors="replace"))[-2000:]
                    continue
                return payload
            if timeout_s is not None:
                ready, _, _ = select.select([self._sock], [], [], timeout_s)
                if not ready:
                    raise TimeoutError
            chunk = self._sock.recv(256 * 1024)
            if not chunk:
                return b""
            self._buffer += chunk

    def _wait_ready(self) -> None:
        try:
            while len(self._pending) < 2:
                data = self._recv(_READY_TIMEOUT_S)
                if not data:
                    raise ExeUnitError(f"the VPN relay exited: {self.stderr.strip() or 'no reason given'}")
                self._pending += data
        except (TimeoutError, OSError) as exc:
            self.close()
            raise ExeUnitError(f"the VPN relay did not come up: {self.stderr.strip() or exc!r}") from None
        except ExeUnitError:
            self.close()
            raise
        if self._pending[:2] != b"\x00\x00":
            self.close()
            raise ExeUnitError("the VPN relay said something other than ready")
        self._pending = self._pending[2:]

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                data = self._recv(None)
                if not data:
                    break
                self._pending += data
                # Whatever else is already buffered joins the batch.
                while len(self._pending) < _BATCH_BYTES:
                    try:
                        more = self._recv(0.0)
                    except TimeoutError:
                        break
                    if not more:
                        break
                    self._pending += more
                packets = self._take_packets()
                for part in packet_batches(packets):
                    self._on_packets(self.network_id, list(part))
        except OSError:
            pass
        except Exception as exc:  # noqa: BLE001 - the relay's reader must not take the exe-unit down
            self._log.error("vm_vpn_relay_reader_failed", error=repr(exc))
        if not self._closed.is_set():
            self._log.warning("vm_vpn_relay_ended", stderr=self.stderr.strip()[-300:])

    def _take_packets(self) -> list[bytes]:
        packets = []
        pending = self._pending
        offset = 0
        while len(pending) - offset >= 2:
            (size,) = struct.unpack_from(">H", pending, offset)
            if len(pending) - offset - 2 < size:
                break
            if size >= 20:
                packets.append(pending[offset + 2 : offset + 2 + size])
            offset += 2 + size
        self._pending = pending[offset:]
        return packets
