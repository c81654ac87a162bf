"""Activity messages: requestor ↔ provider over the network, and provider ↔ exe-unit child process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.codec import Message, register

__all__ = [
    "ActivityCreate",
    "ActivityExec",
    "ActivityDestroy",
    "ActivityQuery",
    "ExeResult",
    "ActivityUpdate",
    "ActivityRuntimeEvent",
    "ChildRunBatch",
    "ChildShutdown",
    "ChildEvent",
    "ChildResult",
    "ChildUsage",
    "ChildPackets",
    "ActivityPackets",
    "ActivityVpnNodes",
    "COMMANDS",
    "MAX_PACKETS",
    "MAX_BATCH_BYTES",
    "packet_batches",
]

# IP packets of a requestor's VPN, carried in batches (each at most an IPv4 packet's 64 KiB).
MAX_PACKETS = 256
MAX_BATCH_BYTES = 512 * 1024  # well inside a frame's cap


def packet_batches(packets: list[bytes] | tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
    """Packets cut into batches of at most MAX_PACKETS packets and MAX_BATCH_BYTES bytes, in order."""
    batches: list[tuple[bytes, ...]] = []
    current: list[bytes] = []
    size = 0
    for packet in packets:
        if current and (len(current) >= MAX_PACKETS or size + len(packet) > MAX_BATCH_BYTES):
            batches.append(tuple(current))
            current, size = [], 0
        current.append(packet)
        size += len(packet)
    if current:
        batches.append(tuple(current))
    return batches
_MAX_PACKET_BYTES = 65535
_MAX_VPN_NODES = 1024


def _check_packets(network_id: str, packets: tuple[bytes, ...]) -> None:
    if not 0 < len(network_id) <= 128:
        raise ValueError("a network id is 1-128 characters")
    if not 0 < len(packets) <= MAX_PACKETS:
        raise ValueError(f"a batch carries 1..{MAX_PACKETS} packets")
    if any(not 20 <= len(p) <= _MAX_PACKET_BYTES for p in packets):
        raise ValueError(f"a packet is 20..{_MAX_PACKET_BYTES} bytes")
    if len(packets) > 1 and sum(len(p) for p in packets) > MAX_BATCH_BYTES:
        raise ValueError(f"a batch carries at most {MAX_BATCH_BYTES} bytes")


# The exe-script commands Golem defines.
COMMANDS = ("deploy", "start", "run", "transfer", "sign", "terminate")


# -- requestor → provider ------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class ActivityCreate(Message):
    """Start an activity (an exe-unit) under an approved agreement; the requestor picks the id."""

    TYPE: ClassVar[str] = "activity.create"
    activity_id: str
    agreement_id: str


@register
@dataclass(frozen=True, slots=True)
class ActivityExec(Message):
    """Run an exe-script batch: a list of commands, each a one-key map as in Golem's ExeScript."""

    TYPE: ClassVar[str] = "activity.exec"
    activity_id: str
    batch_id: str
    commands: tuple[dict[str, Any], ...]


@register
@dataclass(frozen=True, slots=True)
class ActivityDestroy(Message):
    """Stop the exe-unit and clean up everything it created."""

    TYPE: ClassVar[str] = "activity.destroy"
    activity_id: str


@register
@dataclass(frozen=True, slots=True)
class ActivityQuery(Message):
    """Ask the provider to send the activity's whole state again (after a lost message or a restart)."""

    TYPE: ClassVar[str] = "activity.query"
    activity_id: str


# -- provider → requestor ------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class ExeResult(Message):
    """The result of one command of a batch (Golem's ExeScriptCommandResult)."""

    TYPE: ClassVar[str] = "activity.exe_result"
    index: int
    event_ms: int
    result: str  # "Ok" or "Error"
    stdout: str | None
    stderr: str | None
    message: str | None
    is_batch_finished: bool


@register
@dataclass(frozen=True, slots=True)
class ActivityUpdate(Message):
    """The provider's view of an activity: state, usage, and the results of one batch so far.

    Results are cumulative, so a lost update is repaired by the next one.
    """

    TYPE: ClassVar[str] = "activity.update"
    activity_id: str
    agreement_id: str
    state: str  # New, Initialized, Deployed, Ready, Terminated, Unresponsive
    reason: str
    error: str
    usage: tuple[float, ...]
    usage_ms: int
    batch_id: str
    results: tuple[ExeResult, ...]


@register
@dataclass(frozen=True, slots=True)
class ActivityRuntimeEvent(Message):
    """A streamed event of a running command: started, stdout, stderr or finished."""

    TYPE: ClassVar[str] = "activity.runtime_event"
    activity_id: str
    batch_id: str
    index: int
    ts_ms: int
    kind: str
    data: str
    return_code: int | None
    message: str | None


# -- VPN packets between providers, and the requestor's map of a network --------------------


@register
@dataclass(frozen=True, slots=True)
class ActivityPackets(Message):
    """Provider → provider: IP packets from an activity to the addresses of the other's activities in a network."""

    TYPE: ClassVar[str] = "activity.packets"
    network_id: str
    packets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_packets(self.network_id, self.packets)


@register
@dataclass(frozen=True, slots=True)
class ActivityVpnNodes(Message):
    """Requestor → each provider in a network: every address in it and the node holding it (the whole map)."""

    TYPE: ClassVar[str] = "activity.vpn_nodes"
    network_id: str
    nodes: dict[str, str]  # ip -> node id

    def __post_init__(self) -> None:
        if not 0 < len(self.network_id) <= 128:
            raise ValueError("a network id is 1-128 characters")
        if len(self.nodes) > _MAX_VPN_NODES:
            raise ValueError(f"at most {_MAX_VPN_NODES} nodes in a network")


# -- provider ↔ exe-unit child -------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class ChildRunBatch(Message):
    """Parent → child: run these commands in order, stopping at the first failure."""

    TYPE: ClassVar[str] = "exeunit.run_batch"
    batch_id: str
    commands: tuple[dict[str, Any], ...]


@register
@dataclass(frozen=True, slots=True)
class ChildShutdown(Message):
    """Parent → child: clean up and exit."""

    TYPE: ClassVar[str] = "exeunit.shutdown"


@register
@dataclass(frozen=True, slots=True)
class ChildEvent(Message):
    """Child → parent: a command started, printed something, or finished (for streaming)."""

    TYPE: ClassVar[str] = "exeunit.event"
    batch_id: str
    index: int
    kind: str
    data: str
    return_code: int | None
    message: str | None


@register
@dataclass(frozen=True, slots=True)
class ChildResult(Message):
    """Child → parent: one command is done; `state` is the exe-unit's state after it."""

    TYPE: ClassVar[str] = "exeunit.result"
    batch_id: str
    result: ExeResult
    state: str


@register
@dataclass(frozen=True, slots=True)
class ChildUsage(Message):
    """Child → parent, about every second: usage so far (also the child's heartbeat)."""

    TYPE: ClassVar[str] = "exeunit.usage"
    cpu_s: float
    duration_s: float
    peak_memory_bytes: int


@register
@dataclass(frozen=True, slots=True)
class ChildPackets(Message):
    """Either way: IP packets of a network leaving the container (child → parent) or for it (parent → child)."""

    TYPE: ClassVar[str] = "exeunit.packets"
    network_id: str
    packets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_packets(self.network_id, self.packets)
