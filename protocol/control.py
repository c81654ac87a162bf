"""Messages of the local control channel between the `loam` CLI (or tests) and a running node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.codec import Message, register

__all__ = [
    "ControlFailed",
    "NetStatusRequest",
    "NeighbourInfo",
    "NetStatus",
    "GossipPublishRequest",
    "GossipPublished",
    "GossipWithdrawRequest",
    "GossipListRequest",
    "GossipEntry",
    "GossipList",
    "DirectSendRequest",
    "DirectSent",
    "InboxRequest",
    "InboxEntry",
    "Inbox",
    "TextNote",
    "NetCountersRequest",
    "NetCounters",
    "ControlCall",
    "ControlResult",
]


@register
@dataclass(frozen=True, slots=True)
class ControlFailed(Message):
    """A control request that could not be carried out, and why."""

    TYPE: ClassVar[str] = "control.failed"
    error: str
    message: str


@register
@dataclass(frozen=True, slots=True)
class NetStatusRequest(Message):
    """Ask the node for its id, addresses and neighbours."""

    TYPE: ClassVar[str] = "control.net_status_request"


@register
@dataclass(frozen=True, slots=True)
class NeighbourInfo(Message):
    """One live link of the node."""

    TYPE: ClassVar[str] = "control.neighbour_info"
    node_id: str
    role: str  # "neighbour" (in the active view) or "direct" (a link for direct messages)
    outbound: bool  # we dialled it
    address: str
    subnets: tuple[str, ...]
    age_s: float
    idle_s: float


@register
@dataclass(frozen=True, slots=True)
class NetStatus(Message):
    """The node's view of the overlay."""

    TYPE: ClassVar[str] = "control.net_status"
    node_id: str
    name: str
    subnets: tuple[str, ...]
    listen: str
    addresses: tuple[str, ...]
    contact: str  # what another node passes as --bootstrap to join through this one
    neighbours: tuple[NeighbourInfo, ...]
    known_peers: int
    gossip_items: int
    uptime_s: float


@register
@dataclass(frozen=True, slots=True)
class GossipPublishRequest(Message):
    """Publish an item on a topic (for tests, benchmarks and `loam debug`)."""

    TYPE: ClassVar[str] = "control.gossip_publish_request"
    topic: str
    payload: bytes
    ttl_s: float
    subnet: str  # "" means the node's own subnet


@register
@dataclass(frozen=True, slots=True)
class GossipPublished(Message):
    """The id of a published item and when it was published (node clock, ms)."""

    TYPE: ClassVar[str] = "control.gossip_published"
    item_id: str
    created_ms: int


@register
@dataclass(frozen=True, slots=True)
class GossipWithdrawRequest(Message):
    """Withdraw an item this node published."""

    TYPE: ClassVar[str] = "control.gossip_withdraw_request"
    item_id: str


@register
@dataclass(frozen=True, slots=True)
class GossipListRequest(Message):
    """List the live items of a topic this node knows ("" lists all topics)."""

    TYPE: ClassVar[str] = "control.gossip_list_request"
    topic: str


@register
@dataclass(frozen=True, slots=True)
class GossipEntry(Message):
    """One item a node knows, with when it first arrived there."""

    TYPE: ClassVar[str] = "control.gossip_entry"
    item_id: str
    topic: str
    origin: str
    subnet: str
    created_ms: int
    expires_ms: int
    received_ms: int
    payload: bytes


@register
@dataclass(frozen=True, slots=True)
class GossipList(Message):
    """The items a node knows on a topic."""

    TYPE: ClassVar[str] = "control.gossip_list"
    entries: tuple[GossipEntry, ...]


@register
@dataclass(frozen=True, slots=True)
class TextNote(Message):
    """A short text sent node to node (used to try direct messaging by hand and in tests)."""

    TYPE: ClassVar[str] = "debug.text_note"
    text: str


@register
@dataclass(frozen=True, slots=True)
class DirectSendRequest(Message):
    """Send a TextNote to a node id over the overlay."""

    TYPE: ClassVar[str] = "control.direct_send_request"
    recipient: str
    text: str


@register
@dataclass(frozen=True, slots=True)
class DirectSent(Message):
    """A direct message was handed to the network (how: link, dial or route)."""

    TYPE: ClassVar[str] = "control.direct_sent"
    path: str


@register
@dataclass(frozen=True, slots=True)
class InboxRequest(Message):
    """The TextNotes this node received."""

    TYPE: ClassVar[str] = "control.inbox_request"


@register
@dataclass(frozen=True, slots=True)
class InboxEntry(Message):
    """One received TextNote."""

    TYPE: ClassVar[str] = "control.inbox_entry"
    sender: str
    text: str
    received_ms: int


@register
@dataclass(frozen=True, slots=True)
class Inbox(Message):
    """Received TextNotes, oldest first."""

    TYPE: ClassVar[str] = "control.inbox"
    entries: tuple[InboxEntry, ...]


@register
@dataclass(frozen=True, slots=True)
class NetCountersRequest(Message):
    """Ask the node for its network event counters."""

    TYPE: ClassVar[str] = "control.net_counters_request"


@register
@dataclass(frozen=True, slots=True)
class NetCounters(Message):
    """Counts of frames in and out, rejected input by reason, gossip and routing events."""

    TYPE: ClassVar[str] = "control.net_counters"
    counters: dict[str, int]


@register
@dataclass(frozen=True, slots=True)
class ControlCall(Message):
    """Call one method of a subsystem's control API (the market, the provider agent) with plain arguments."""

    TYPE: ClassVar[str] = "control.call"
    target: str
    method: str
    args: dict[str, Any]


@register
@dataclass(frozen=True, slots=True)
class ControlResult(Message):
    """The plain-data result of a ControlCall."""

    TYPE: ClassVar[str] = "control.result"
    value: Any
