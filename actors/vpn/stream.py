"""Reliable byte streams over lossy, reordering messages: the bookkeeping of one tunnel's two directions.

No I/O and no clock of its own (times are passed in), so retransmission is deterministic
to test. The sending side queues bytes, numbers chunks as the window lets it send them, and keeps
them until acknowledged:

    out = Outbound()
    out.queue(b"GET / HTTP/1.0\\r\\n\\r\\n")
    for seq, data in out.take(now_ms):  # as far as the window reaches
        send(VpnData(tunnel, seq, data))
    out.ack(upto, consumed)             # from a VpnAck: below upto delivered, below consumed used up
    for seq, data in out.due(now_ms):   # not acknowledged in time: send again

The window is flow control: the sender runs at most WINDOW_CHUNKS ahead of what the
receiver's consumer (a socket, a WebSocket client) has taken, so a slow consumer slows the
sender instead of filling the receiver's memory. The receiving side hands back bytes in
order, however the chunks arrive:

    inb = Inbound()
    for data in inb.accept(seq, data):
        socket.sendall(data)
    send(VpnAck(tunnel, inb.delivered, consumed))
"""

from __future__ import annotations

from collections import OrderedDict, deque

from protocol.vpn import MAX_CHUNK_BYTES

__all__ = ["Outbound", "Inbound", "WINDOW_CHUNKS", "RESEND_MS"]

WINDOW_CHUNKS = 256  # chunks in flight per direction (16 MiB of 64 KiB chunks)
RESEND_MS = 1_000  # a chunk not acknowledged within this is sent again


class Outbound:
    """Bytes queued, chunks sent and not yet acknowledged, in order."""

    def __init__(self, chunk_bytes: int = MAX_CHUNK_BYTES, resend_ms: int = RESEND_MS, window: int = WINDOW_CHUNKS) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_BYTES}")
        self.next_seq = 0  # the number the next chunk gets; also how many were sent
        self.acked = 0  # every chunk below this was delivered
        self.consumed = 0  # every chunk below this was taken by the receiver's consumer
        self._chunk = chunk_bytes
        self._resend_ms = resend_ms
        self._window = window
        self._waiting: deque[bytes] = deque()  # chunks queued, not sent yet
        self.queued_bytes = 0
        self._unacked: OrderedDict[int, tuple[bytes, int]] = OrderedDict()  # seq -> (data, last sent ms)

    @property
    def in_flight(self) -> int:
        """Chunks sent and not acknowledged."""
        return len(self._unacked)

    @property
    def all_acked(self) -> bool:
        """Everything sent was delivered."""
        return not self._unacked

    @property
    def idle(self) -> bool:
        """Nothing queued and everything sent delivered."""
        return not self._unacked and not self._waiting

    def queue(self, data: bytes) -> None:
        """Bytes to send, cut into chunks; `take` sends them as the window allows."""
        for start in range(0, len(data), self._chunk):
            chunk = bytes(data[start : start + self._chunk])
            self._waiting.append(chunk)
            self.queued_bytes += len(chunk)

    def take(self, now_ms: int) -> list[tuple[int, bytes]]:
        """Queued chunks the window lets go now, numbered: (seq, data) to send."""
        out = []
        while self._waiting and self.next_seq < self.consumed + self._window:
            chunk = self._waiting.popleft()
            self.queued_bytes -= len(chunk)
            seq = self.next_seq
            self.next_seq += 1
            self._unacked[seq] = (chunk, now_ms)
            out.append((seq, chunk))
        return out

    def push(self, data: bytes, now_ms: int) -> list[tuple[int, bytes]]:
        """Queue bytes and take what the window lets go (see queue and take)."""
        self.queue(data)
        return self.take(now_ms)

    def ack(self, upto: int, consumed: int | None = None) -> int:
        """Chunks below `upto` were delivered (and below `consumed` taken by the consumer; by default
        as many as were delivered); returns how many that newly acknowledged.

        Values beyond what was sent are clamped (a confused or hostile peer acknowledges
        nothing that does not exist); consumption never goes back.
        """
        upto = min(upto, self.next_seq)
        used = upto if consumed is None else min(consumed, upto)
        self.consumed = max(self.consumed, used)
        if upto <= self.acked:
            return 0
        newly = 0
        while self._unacked:
            seq = next(iter(self._unacked))
            if seq >= upto:
                break
            del self._unacked[seq]
            newly += 1
        self.acked = upto
        return newly

    def due(self, now_ms: int) -> list[tuple[int, bytes]]:
        """Chunks not acknowledged within the resend time: returned to be sent again, their clocks reset."""
        out = []
        for seq, (data, sent_ms) in self._unacked.items():
            if now_ms - sent_ms >= self._resend_ms:
                out.append((seq, data))
        for seq, data in out:
            self._unacked[seq] = (data, now_ms)
        return out


class Inbound:
    """Chunks received, handed on in order exactly once."""

    def __init__(self, window: int = WINDOW_CHUNKS) -> None:
        self.delivered = 0  # every chunk below this was handed on
        self._window = window
        self._early: dict[int, bytes] = {}

    @property
    def waiting(self) -> int:
        """Chunks received ahead of a gap."""
        return len(self._early)

    def accept(self, seq: int, data: bytes) -> list[bytes]:
        """Take chunk `seq`; returns the bytes that are now in order (maybe none).

        A duplicate is ignored; a chunk further ahead than the window is dropped (its sender
        sends it again once the gap before it is filled).
        """
        if seq < self.delivered or seq in self._early or seq >= self.delivered + self._window:
            return []
        self._early[seq] = data
        out = []
        while self.delivered in self._early:
            out.append(self._early.pop(self.delivered))
            self.delivered += 1
        return out
