"""VPN tunnel messages: a requestor's TCP connection to a service in a provider's activity.

Golem's net-api lets a requestor open a TCP connection to `{ip}:{port}` inside a virtual
network it created; on Loam the connection is a tunnel between the two nodes over the
overlay. The requestor picks the tunnel id and asks the provider to open it; either side
then sends numbered chunks, acknowledges what it has delivered (cumulatively) and closes:

    requestor                              provider
      VpnOpen(t, network, ip, port)  ─▶  finds the activity deployed as ip in network,
                                          connects to the service in its container
      ◀─  VpnOpened(t, error="")
      VpnData(t, 0, b"GET / ...")    ─▶  written to the socket
      ◀─  VpnAck(t, 1, 1) · VpnData(t, 0, b"HTTP/1.0 200 ...")
      VpnClose(t, "")                ─▶  (either side; the other stops too)

Chunks may be lost or reordered on the way; `actors/vpn/stream.py` retransmits and reorders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from protocol.codec import Message, register

__all__ = ["VpnOpen", "VpnOpened", "VpnData", "VpnAck", "VpnClose", "MAX_CHUNK_BYTES", "valid_tunnel_id"]

MAX_CHUNK_BYTES = 64 * 1024
_TUNNEL_ID = re.compile(r"[0-9a-f]{32}")
_NETWORK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MAX_TEXT = 1000
_MAX_SEQ = 2**62


def valid_tunnel_id(value: str) -> bool:
    """A tunnel id is 32 lowercase hex digits."""
    return bool(_TUNNEL_ID.fullmatch(value))


def _check_tunnel(value: str) -> None:
    if not valid_tunnel_id(value):
        raise ValueError("a tunnel id is 32 lowercase hex digits")


def _check_seq(value: int, what: str) -> None:
    if not 0 <= value < _MAX_SEQ:
        raise ValueError(f"{what} out of range")


@register
@dataclass(frozen=True, slots=True)
class VpnOpen(Message):
    """Requestor → provider: connect tunnel `tunnel_id` to `ip:port` of the activity in `network_id`."""

    TYPE: ClassVar[str] = "vpn.open"
    tunnel_id: str
    network_id: str
    ip: str
    port: int

    def __post_init__(self) -> None:
        _check_tunnel(self.tunnel_id)
        if not _NETWORK_ID.fullmatch(self.network_id):
            raise ValueError("a network id is 1-128 characters of letters, digits, '_', '.', '-'")
        if len(self.ip) > 45:
            raise ValueError("ip too long")
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be in 1..65535")


@register
@dataclass(frozen=True, slots=True)
class VpnOpened(Message):
    """Provider → requestor: the tunnel is connected (error "") or could not be (why)."""

    TYPE: ClassVar[str] = "vpn.opened"
    tunnel_id: str
    error: str

    def __post_init__(self) -> None:
        _check_tunnel(self.tunnel_id)
        if len(self.error) > _MAX_TEXT:
            raise ValueError(f"error longer than {_MAX_TEXT} characters")


@register
@dataclass(frozen=True, slots=True)
class VpnData(Message):
    """Either way: chunk number `seq` (from 0) of the bytes one side's socket produced."""

    TYPE: ClassVar[str] = "vpn.data"
    tunnel_id: str
    seq: int
    data: bytes

    def __post_init__(self) -> None:
        _check_tunnel(self.tunnel_id)
        _check_seq(self.seq, "seq")
        if not 0 < len(self.data) <= MAX_CHUNK_BYTES:
            raise ValueError(f"a chunk carries 1..{MAX_CHUNK_BYTES} bytes")


@register
@dataclass(frozen=True, slots=True)
class VpnAck(Message):
    """Either way: every chunk below `upto` arrived, and below `consumed` was taken by this side's
    consumer (written to the socket, sent to the client); the sender keeps within a window of it."""

    TYPE: ClassVar[str] = "vpn.ack"
    tunnel_id: str
    upto: int
    consumed: int

    def __post_init__(self) -> None:
        _check_tunnel(self.tunnel_id)
        _check_seq(self.upto, "upto")
        _check_seq(self.consumed, "consumed")
        if self.consumed > self.upto:
            raise ValueError("consumed runs past upto")


@register
@dataclass(frozen=True, slots=True)
class VpnClose(Message):
    """Either way: the tunnel is closed; `sent` chunks were sent before it (deliver them, then close)."""

    TYPE: ClassVar[str] = "vpn.close"
    tunnel_id: str
    sent: int
    reason: str

    def __post_init__(self) -> None:
        _check_tunnel(self.tunnel_id)
        _check_seq(self.sent, "sent")
        if len(self.reason) > _MAX_TEXT:
            raise ValueError(f"reason longer than {_MAX_TEXT} characters")
