"""gftp wire messages: files fetched in chunks from the node that published them, and uploads into slots.

A download asks the serving node for chunks of a published file by its sha3-256 hash;
each answer carries its offset and the file's total size, so several requests can be in
flight and answers may arrive in any order. An upload sends chunks to an upload slot (a
random id the receiving node handed out), each acknowledged, then a finish carrying the
file's hash; the receiver checks it before the file appears at its destination.

    gftp://<node id>/<64 hex>    the hash of a published file, or the id of an upload slot
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from protocol.codec import Message, register
from protocol.errors import ProtocolError
from protocol.identity import to_checksum_address

__all__ = [
    "GFTP_PREFIX",
    "MAX_CHUNK_BYTES",
    "FAILURE_CODES",
    "GftpRequestChunk",
    "GftpChunk",
    "GftpFailed",
    "GftpUploadChunk",
    "GftpUploadAck",
    "GftpUploadFinish",
    "GftpUploadDone",
    "gftp_url",
    "parse_gftp_url",
    "is_file_id",
]

GFTP_PREFIX = "gftp."
# 256 KiB of data plus the envelope stays far below the network's 1 MiB frame cap, even
# when the frame is wrapped once more to be routed through another node.
MAX_CHUNK_BYTES = 256 * 1024
_MAX_ID_CHARS = 64
_MAX_TEXT_CHARS = 2000

# Why a request was not served; each maps to one exception class on the asking side.
FAILURE_CODES = frozenset({
    "unknown_file",   # no such published file or open upload slot (or it was closed)
    "refused",        # the file or slot is not meant for the asking node
    "too_large",      # over the size limit of the slot
    "hash_mismatch",  # an upload whose bytes do not hash to what its finish says
    "bad_request",    # a request that breaks the protocol (bad offset, size, order)
    "unavailable",    # the file changed or cannot be read on the serving node
    "busy",           # the upload slot is taking an upload from another node
})

_FILE_ID = re.compile(r"[0-9a-f]{64}")
_URL = re.compile(r"gftp://(0x[0-9a-fA-F]{40})/([0-9a-fA-F]{64})/?")


def is_file_id(value: object) -> bool:
    """True for a lowercase 64-hex id (a sha3-256 file hash or an upload slot id)."""
    return isinstance(value, str) and _FILE_ID.fullmatch(value) is not None


def gftp_url(node_id: str, file_id: str) -> str:
    """The URL of a file or upload slot on a node: gftp://<node id>/<id>."""
    return f"gftp://{node_id}/{file_id}"


def parse_gftp_url(url: str) -> tuple[str, str]:
    """Split a gftp URL into (checksummed node id, lowercase id).

    Node ids are accepted in any case (Golem writes them in lowercase).

    Raises:
        ProtocolError: not gftp://<0x + 40 hex>/<64 hex>.
    """
    match = _URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if match is None:
        raise ProtocolError(f"{str(url)[:200]!r} is not a gftp URL (gftp://<node id>/<64 hex digits>)")
    node_id = to_checksum_address(bytes.fromhex(match.group(1)[2:]))
    return node_id, match.group(2).lower()


def _check_transfer_id(value: str) -> None:
    if not 0 < len(value) <= _MAX_ID_CHARS:
        raise ValueError(f"transfer id must have 1..{_MAX_ID_CHARS} characters")


def _check_file_id(value: str, what: str) -> None:
    if not is_file_id(value):
        raise ValueError(f"{what} must be 64 lowercase hex digits")


def _check_size(value: int, what: str) -> None:
    if value < 0:
        raise ValueError(f"{what} must not be negative")


@register
@dataclass(frozen=True, slots=True)
class GftpRequestChunk(Message):
    """Ask for `size` bytes at `offset` of a published file."""

    TYPE: ClassVar[str] = "gftp.request_chunk"
    transfer_id: str
    file_id: str  # the file's sha3-256 hex
    offset: int
    size: int

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_file_id(self.file_id, "file id")
        _check_size(self.offset, "offset")
        if not 0 < self.size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_BYTES}")


@register
@dataclass(frozen=True, slots=True)
class GftpChunk(Message):
    """Bytes of a file at an offset; shorter than asked only at the end of the file."""

    TYPE: ClassVar[str] = "gftp.chunk"
    transfer_id: str
    offset: int
    data: bytes
    total_size: int

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_size(self.offset, "offset")
        _check_size(self.total_size, "total size")
        if len(self.data) > MAX_CHUNK_BYTES:
            raise ValueError(f"a chunk carries at most {MAX_CHUNK_BYTES} bytes")
        if self.offset + len(self.data) > self.total_size:
            raise ValueError("chunk runs past the end of the file")


@register
@dataclass(frozen=True, slots=True)
class GftpFailed(Message):
    """A chunk request, upload chunk or upload finish that was not carried out, and why."""

    TYPE: ClassVar[str] = "gftp.failed"
    transfer_id: str
    code: str  # one of FAILURE_CODES
    message: str

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        if self.code not in FAILURE_CODES:
            raise ValueError(f"unknown failure code {self.code[:40]!r}")
        if len(self.message) > _MAX_TEXT_CHARS:
            raise ValueError(f"failure message longer than {_MAX_TEXT_CHARS} characters")


@register
@dataclass(frozen=True, slots=True)
class GftpUploadChunk(Message):
    """Bytes of a file being uploaded into a slot, at an offset; `total_size` is the whole file's."""

    TYPE: ClassVar[str] = "gftp.upload_chunk"
    transfer_id: str
    slot_id: str
    offset: int
    data: bytes
    total_size: int

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_file_id(self.slot_id, "slot id")
        _check_size(self.offset, "offset")
        _check_size(self.total_size, "total size")
        if not 0 < len(self.data) <= MAX_CHUNK_BYTES:
            raise ValueError(f"an upload chunk carries 1..{MAX_CHUNK_BYTES} bytes")
        if self.offset + len(self.data) > self.total_size:
            raise ValueError("upload chunk runs past the end of the file")


@register
@dataclass(frozen=True, slots=True)
class GftpUploadAck(Message):
    """An upload chunk was taken (written, or held until the bytes before it arrive)."""

    TYPE: ClassVar[str] = "gftp.upload_ack"
    transfer_id: str
    offset: int
    size: int

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_size(self.offset, "offset")
        _check_size(self.size, "size")


@register
@dataclass(frozen=True, slots=True)
class GftpUploadFinish(Message):
    """All chunks were acknowledged: check the whole file against its hash and put it in place."""

    TYPE: ClassVar[str] = "gftp.upload_finish"
    transfer_id: str
    slot_id: str
    total_size: int
    sha3_hex: str

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_file_id(self.slot_id, "slot id")
        _check_size(self.total_size, "total size")
        _check_file_id(self.sha3_hex, "file hash")


@register
@dataclass(frozen=True, slots=True)
class GftpUploadDone(Message):
    """The uploaded file was verified and is at the slot's destination."""

    TYPE: ClassVar[str] = "gftp.upload_done"
    transfer_id: str
    total_size: int
    sha3_hex: str

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_size(self.total_size, "total size")
        _check_file_id(self.sha3_hex, "file hash")
