"""The serving side of gftp: files this node publishes and upload slots it holds, plus local file helpers.

Both tables take a peer's request and return the reply to send (a chunk, an ack, a done or
a GftpFailed), so the actor only routes messages; every check -- allowed peers, sizes,
offsets, hashes -- happens here. Reads and writes are one chunk each.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.gftp.errors import SourceUnavailableError, TransferError
from actors.gftp.transfer import ReorderBuffer
from protocol.codec import Message
from protocol.gftp import (
    MAX_CHUNK_BYTES,
    GftpChunk,
    GftpFailed,
    GftpRequestChunk,
    GftpUploadAck,
    GftpUploadChunk,
    GftpUploadDone,
    GftpUploadFinish,
    gftp_url,
)

__all__ = [
    "PublishedFiles",
    "UploadSlots",
    "refusal",
    "allows",
    "hash_file",
    "hash_prefix",
    "write_all",
    "part_path",
    "absolute_path",
    "UPLOAD_AHEAD_BYTES",
]

UPLOAD_AHEAD_BYTES = 16 * MAX_CHUNK_BYTES  # what a slot holds out of order, at most
SLOT_IDLE_MS = 60_000  # an upload silent this long may be replaced by one from another node
_HASH_BLOCK = 1024 * 1024


def refusal(transfer_id: str, code: str, message: str) -> GftpFailed:
    """A GftpFailed answer (the message cut to what the wire allows)."""
    return GftpFailed(transfer_id, code, message if len(message) <= 1000 else message[:997] + "...")


def allows(allowed: frozenset[str] | None, peer: str, own_id: str) -> bool:
    """True when peer may have a file or use a slot restricted to allowed (None = anyone; this node always)."""
    return allowed is None or peer == own_id or peer in allowed


# -- published files -----------------------------------------------------------------------------


@dataclass
class _Publication:
    hash_hex: str
    size: int
    paths: dict[str, int]  # path -> mtime_ns when published; served only while unchanged
    # None = any node that knows the hash. The hash is the capability: it cannot be
    # guessed, and whoever has it was given the URL by the publisher (as with Golem's gftp).
    allowed: frozenset[str] | None
    refs: int = 1


class PublishedFiles:
    """Files served by their sha3-256, with reference counts and the peers each is meant for."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._files: dict[str, _Publication] = {}

    def add(self, path: str, hash_hex: str, size: int, mtime_ns: int, allowed: frozenset[str] | None) -> int:
        """Serve a hashed file; returns its reference count.

        The same content published again adds a reference and a path to read it from; it
        is served to every node any of its publications allows, until the last close.
        """
        pub = self._files.get(hash_hex)
        if pub is None:
            self._files[hash_hex] = _Publication(hash_hex, size, {path: mtime_ns}, allowed)
            return 1
        pub.refs += 1
        pub.paths[path] = mtime_ns
        pub.allowed = None if pub.allowed is None or allowed is None else pub.allowed | allowed
        return pub.refs

    def close(self, file_id: str) -> bool:
        """Drop one reference (the file stops being served with the last); False if not published."""
        pub = self._files.get(file_id)
        if pub is None:
            return False
        pub.refs -= 1
        if pub.refs <= 0:
            del self._files[file_id]
        return True

    def serve(self, sender: str, req: GftpRequestChunk) -> GftpChunk | GftpFailed:
        """The answer to a chunk request."""
        pub = self._files.get(req.file_id)
        tid = req.transfer_id
        if pub is None:
            return refusal(tid, "unknown_file", f"node {self._node_id} publishes no file {req.file_id}")
        if not allows(pub.allowed, sender, self._node_id):
            return refusal(tid, "refused", f"file {req.file_id} is not published for node {sender}")
        if req.offset > pub.size:
            return refusal(tid, "bad_request", f"offset {req.offset} is past the end of the file ({pub.size})")
        try:
            data = self._read(pub, req.offset, min(req.size, pub.size - req.offset))
        except SourceUnavailableError as exc:
            return refusal(tid, "unavailable", str(exc))
        return GftpChunk(tid, req.offset, data, pub.size)

    def listing(self, url_of: Any) -> list[dict[str, Any]]:
        """The published files as plain data."""
        return [
            {
                "hash": p.hash_hex, "url": url_of(p.hash_hex), "size": p.size, "paths": sorted(p.paths),
                "allowed_peers": None if p.allowed is None else sorted(p.allowed), "refs": p.refs,
            }
            for p in self._files.values()
        ]

    @staticmethod
    def _read(pub: _Publication, offset: int, size: int) -> bytes:
        for path, mtime_ns in list(pub.paths.items()):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if st.st_size == pub.size and st.st_mtime_ns == mtime_ns:
                    data = os.pread(fd, size, offset)
                    if len(data) == size:
                        return data
            except OSError:
                continue
            finally:
                os.close(fd)
        raise SourceUnavailableError(f"file {pub.hash_hex} changed or cannot be read since it was published")


# -- upload slots -------------------------------------------------------------------------------------


@dataclass
class _Slot:
    slot_id: str
    url: str
    dest: Path
    part: Path
    # None = any node that knows the slot id: a random 256-bit capability handed out with the URL.
    allowed: frozenset[str] | None
    max_bytes: int
    state: str = "open"  # open, receiving, done
    tid: str | None = None
    sender: str | None = None
    total_size: int = 0
    buffer: ReorderBuffer | None = None
    hasher: Any = None
    fd: int | None = None
    last_ms: int = 0
    done_hash: str | None = None

    def discard_part(self) -> None:
        """Close and remove the partial upload (never the finished file)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        if self.state != "done":
            try:
                self.part.unlink(missing_ok=True)
            except OSError:
                pass

    def reset(self) -> None:
        """Back to open, ready for a new upload."""
        self.discard_part()
        self.state, self.tid, self.sender, self.buffer = "open", None, None, None


class UploadSlots:
    """Slots other nodes upload one file each into; a file appears at its destination once verified."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._slots: dict[str, _Slot] = {}

    def open(self, dest: Path, allowed: frozenset[str] | None, max_bytes: int, now_ms: int) -> str:
        """Open a slot writing dest (up to max_bytes); returns its URL."""
        slot_id = secrets.token_hex(32)
        url = gftp_url(self._node_id, slot_id)
        self._slots[slot_id] = _Slot(slot_id, url, dest, part_path(dest), allowed, max_bytes, last_ms=now_ms)
        return url

    def close(self, slot_id: str) -> bool:
        """Close a slot (an unfinished upload is thrown away); False if there is none."""
        slot = self._slots.pop(slot_id, None)
        if slot is None:
            return False
        slot.discard_part()
        return True

    def close_all(self) -> None:
        """Throw away unfinished uploads (the node stops)."""
        for slot in self._slots.values():
            slot.discard_part()

    def writing(self, dest: Path) -> str | None:
        """The id of an unfinished slot writing dest, if any."""
        return next((s.slot_id for s in self._slots.values() if s.dest == dest and s.state != "done"), None)

    def listing(self) -> list[dict[str, Any]]:
        """The slots as plain data."""
        return [
            {
                "url": s.url, "dest_path": str(s.dest), "state": s.state, "max_bytes": s.max_bytes,
                "received_bytes": s.buffer.written if s.buffer else 0, "hash": s.done_hash,
            }
            for s in self._slots.values()
        ]

    def on_chunk(self, sender: str, msg: GftpUploadChunk, now_ms: int) -> tuple[Message, int]:
        """Take an upload chunk; returns the answer and how many bytes were written."""
        tid = msg.transfer_id
        slot_or_refusal = self._slot_for(sender, tid, msg.slot_id)
        if isinstance(slot_or_refusal, GftpFailed):
            return slot_or_refusal, 0
        slot = slot_or_refusal
        ack = GftpUploadAck(tid, msg.offset, len(msg.data))
        if slot.state == "done" and slot.tid == tid and slot.sender == sender:
            return ack, 0  # its ack was lost
        if slot.tid != tid or slot.sender != sender:
            refused = self._start(slot, sender, tid, msg.total_size, now_ms)
            if refused is not None:
                return refused, 0
        if msg.total_size != slot.total_size:
            return refusal(tid, "bad_request", "the total size changed during the upload"), 0
        assert slot.buffer is not None
        try:
            pieces = slot.buffer.add(msg.offset, msg.data)
        except ValueError as exc:
            return refusal(tid, "bad_request", str(exc)), 0
        try:
            for piece in pieces:
                write_all(slot.fd, piece)
                slot.hasher.update(piece)
        except OSError as exc:
            slot.reset()
            return refusal(tid, "unavailable", f"cannot write the upload: {exc.strerror or exc}"), 0
        slot.last_ms = now_ms
        return ack, sum(len(p) for p in pieces)

    def on_finish(self, sender: str, msg: GftpUploadFinish, now_ms: int) -> Message:
        """Check a finished upload against its hash and move it into place; returns the answer."""
        tid = msg.transfer_id
        slot_or_refusal = self._slot_for(sender, tid, msg.slot_id)
        if isinstance(slot_or_refusal, GftpFailed):
            return slot_or_refusal
        slot = slot_or_refusal
        if slot.state == "done" and slot.tid == tid and slot.sender == sender and slot.done_hash:
            return GftpUploadDone(tid, slot.total_size, slot.done_hash)  # its done was lost
        if slot.tid != tid or slot.sender != sender:
            if msg.total_size != 0:
                return refusal(tid, "bad_request", "finish of an upload that sent no chunks")
            # An empty file has no chunks: its finish is the whole upload.
            refused = self._start(slot, sender, tid, 0, now_ms)
            if refused is not None:
                return refused
        assert slot.buffer is not None
        if msg.total_size != slot.total_size or slot.buffer.written != slot.total_size:
            return refusal(tid, "bad_request", f"finish after {slot.buffer.written} of {slot.total_size} bytes")
        digest = slot.hasher.hexdigest()
        if digest != msg.sha3_hex:
            slot.reset()
            return refusal(tid, "hash_mismatch", f"the bytes received hash to {digest}, not {msg.sha3_hex}")
        if slot.fd is not None:
            os.close(slot.fd)
            slot.fd = None
        try:
            os.replace(slot.part, slot.dest)
        except OSError as exc:
            slot.reset()
            return refusal(tid, "unavailable", f"cannot move the upload into place: {exc.strerror or exc}")
        slot.state, slot.done_hash = "done", digest
        return GftpUploadDone(tid, slot.total_size, digest)

    def _slot_for(self, sender: str, tid: str, slot_id: str) -> _Slot | GftpFailed:
        slot = self._slots.get(slot_id)
        if slot is None:
            return refusal(tid, "unknown_file", f"node {self._node_id} has no upload slot {slot_id}")
        if not allows(slot.allowed, sender, self._node_id):
            return refusal(tid, "refused", f"upload slot {slot_id} is not open for node {sender}")
        return slot

    def _start(self, slot: _Slot, sender: str, tid: str, total_size: int, now_ms: int) -> GftpFailed | None:
        """Bind the slot to a new upload (the first, or a restart by its sender); the refusal if not."""
        if total_size > slot.max_bytes:
            return refusal(tid, "too_large", f"{total_size} bytes is over the slot's limit of {slot.max_bytes}")
        if slot.state == "done":
            return refusal(tid, "refused", f"upload slot {slot.slot_id} already received its file")
        if slot.state == "receiving" and slot.sender != sender and now_ms - slot.last_ms < SLOT_IDLE_MS:
            return refusal(tid, "busy", f"upload slot {slot.slot_id} is receiving a file from another node")
        slot.reset()
        try:
            slot.fd = os.open(slot.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            return refusal(tid, "unavailable", f"cannot write the upload: {exc.strerror or exc}")
        slot.state, slot.tid, slot.sender, slot.total_size = "receiving", tid, sender, total_size
        slot.buffer = ReorderBuffer(UPLOAD_AHEAD_BYTES)
        slot.hasher = hashlib.sha3_256()
        slot.last_ms = now_ms
        return None


# -- local files ----------------------------------------------------------------------------------------


def absolute_path(path: Any) -> Path:
    """path as a Path.

    Raises:
        TransferError: not a non-empty absolute path.
    """
    if not isinstance(path, str) or not path:
        raise TransferError("a path must be a non-empty string")
    p = Path(path)
    if not p.is_absolute():
        raise TransferError(f"{path!r} is not an absolute path")
    return p


def part_path(dest: Path) -> Path:
    """Where the bytes of dest gather until it is complete: dest + ".part"."""
    return dest.with_name(dest.name + ".part")


def write_all(fd: int | None, data: bytes) -> None:
    """Write all of data to fd (os.write may write less)."""
    assert fd is not None
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def hash_file(path: str) -> tuple[str, int, int]:
    """sha3-256 hex, size and mtime of a file (run on a worker thread: it reads the whole file).

    Raises:
        SourceUnavailableError: it changed while it was read.
        OSError: it cannot be read.
    """
    before = os.stat(path)
    hasher = hashlib.sha3_256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            hasher.update(block)
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise SourceUnavailableError(f"{path} changed while it was being hashed")
    return hasher.hexdigest(), after.st_size, after.st_mtime_ns


def hash_prefix(part: str, max_bytes: int) -> tuple[int, Any]:
    """The length of a partial download and a sha3-256 hasher fed with it (0 and fresh if none).

    A partial file longer than max_bytes cannot be of a file this fetch accepts: it counts
    as none (and the download truncates it).
    """
    hasher = hashlib.sha3_256()
    try:
        size = os.stat(part).st_size
    except FileNotFoundError:
        return 0, hasher
    if size > max_bytes:
        return 0, hasher
    done = 0
    with open(part, "rb") as f:
        while done < size and (block := f.read(min(_HASH_BLOCK, size - done))):
            hasher.update(block)
            done += len(block)
    return done, hasher
