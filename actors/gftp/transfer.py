"""Chunk bookkeeping of gftp transfers (no I/O, no clock of its own), and what callers wait on.

`DownloadPlan` decides which chunks to ask for next, takes answers in any order and hands
back the bytes that extend the contiguous prefix written so far, so the `.part` file on disk
is always a prefix of the file: resuming is starting a plan at its length. `UploadPlan`
does the same for the sending side of an upload, `ReorderBuffer` for the receiving side.
Times are passed in (`now_ms`), which keeps retries deterministic to test.

Callers in other threads get a `Pending` from the GftpActor and wait on it, most simply
through `publish_blocking`, `fetch_blocking` and `upload_blocking`:

    published = publish_blocking(gftp, "/data/input.txt", allowed_peers=(provider_id,))
    fetched = fetch_blocking(gftp, published.url, "/tmp/input.txt", max_bytes=2**30, timeout_s=60)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from actors.gftp.errors import FileTooLargeError, HashMismatchError, TransferError, TransferTimeoutError

__all__ = [
    "DownloadPlan",
    "UploadPlan",
    "ReorderBuffer",
    "Pending",
    "BadResponseError",
    "Published",
    "Fetched",
    "Uploaded",
    "publish_blocking",
    "fetch_blocking",
    "upload_blocking",
]


class BadResponseError(TransferError):
    """An answer that breaks the protocol (wrong length, a total size that changed)."""


class DownloadPlan:
    """Which chunks of a file to request, and the in-order bytes the answers yield.

    The first request is a single probe at `start_offset`: its answer tells the file's
    size, checked against `max_bytes` before anything more is asked. After that up to
    `window` chunks are in flight or held out of order at once.

    >>> plan = DownloadPlan(start_offset=0, chunk_bytes=4, window=2, max_bytes=100)
    >>> plan.to_request(now_ms=0)
    [(0, 4)]
    >>> plan.on_chunk(0, b"abcd", total_size=10, now_ms=1)
    [b'abcd']
    >>> plan.to_request(now_ms=1)
    [(4, 4), (8, 2)]
    """

    def __init__(self, start_offset: int, chunk_bytes: int, window: int, max_bytes: int) -> None:
        if start_offset < 0 or chunk_bytes <= 0 or window <= 0 or max_bytes < 0:
            raise ValueError("start_offset, max_bytes >= 0 and chunk_bytes, window > 0")
        self.start_offset = start_offset
        self.written = start_offset  # bytes of the contiguous prefix handed out so far
        self.total_size: int | None = None
        self._chunk = chunk_bytes
        self._window = window
        self._max_bytes = max_bytes
        self._next = start_offset  # first offset not yet requested
        self._inflight: dict[int, list[int]] = {}  # offset -> [size, last sent ms]
        self._held: dict[int, bytes] = {}  # answers that arrived before the bytes before them

    @property
    def done(self) -> bool:
        """Every byte of the file has been handed out."""
        return self.total_size is not None and self.written == self.total_size

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered."""
        return len(self._inflight)

    def to_request(self, now_ms: int) -> list[tuple[int, int]]:
        """New (offset, size) requests to send now; each is then in flight since now_ms."""
        if self.done:
            return []
        if self.total_size is None:
            if self._inflight:
                return []
            self._next = self.written + self._chunk
            self._inflight[self.written] = [self._chunk, now_ms]
            return [(self.written, self._chunk)]
        out = []
        while self._next < self.total_size and len(self._inflight) + len(self._held) < self._window:
            size = min(self._chunk, self.total_size - self._next)
            self._inflight[self._next] = [size, now_ms]
            out.append((self._next, size))
            self._next += size
        return out

    def on_chunk(self, offset: int, data: bytes, total_size: int, now_ms: int) -> list[bytes]:
        """Take an answer; returns the bytes (in order) that now extend the written prefix.

        An answer to nothing in flight (a duplicate of a retried request) yields nothing.

        Raises:
            FileTooLargeError: the file is over max_bytes.
            HashMismatchError: the file is shorter than the prefix we started from (the
                prefix cannot be of this file).
            BadResponseError: a size that changed, or data of the wrong length.
        """
        entry = self._inflight.get(offset)
        if entry is None:
            return []
        if self.total_size is None:
            if total_size > self._max_bytes:
                raise FileTooLargeError(f"the file is {total_size} bytes, over the limit of {self._max_bytes}")
            if total_size < self.start_offset:
                raise HashMismatchError(
                    f"the partial download has {self.start_offset} bytes but the file only {total_size}"
                )
            self.total_size = total_size
            self._next = min(self._next, total_size)
        elif total_size != self.total_size:
            raise BadResponseError(f"the file's size changed from {self.total_size} to {total_size} bytes")
        expected = min(entry[0], self.total_size - offset)
        if len(data) != expected:
            raise BadResponseError(f"chunk at {offset} has {len(data)} bytes, expected {expected}")
        del self._inflight[offset]
        self._held[offset] = data
        out = []
        while self.written in self._held:
            piece = self._held.pop(self.written)
            if not piece:
                break
            out.append(piece)
            self.written += len(piece)
        return out

    def overdue(self, now_ms: int, retry_after_ms: int) -> list[tuple[int, int]]:
        """Requests unanswered for retry_after_ms, to send again (each counts as sent now)."""
        out = []
        for offset, entry in self._inflight.items():
            if now_ms - entry[1] >= retry_after_ms:
                entry[1] = now_ms
                out.append((offset, entry[0]))
        return out


class UploadPlan:
    """Which chunks of a file to send to an upload slot, and when all are acknowledged.

    New chunks come in increasing offset order, so the sender can hash the file as it
    reads it; resent chunks come from `overdue`.

    >>> plan = UploadPlan(total_size=10, chunk_bytes=4, window=2)
    >>> plan.to_send(now_ms=0)
    [(0, 4), (4, 4)]
    >>> plan.on_ack(0), plan.to_send(now_ms=1)
    (True, [(8, 2)])
    """

    def __init__(self, total_size: int, chunk_bytes: int, window: int) -> None:
        if total_size < 0 or chunk_bytes <= 0 or window <= 0:
            raise ValueError("total_size >= 0 and chunk_bytes, window > 0")
        self.total_size = total_size
        self.acked_bytes = 0
        self._chunk = chunk_bytes
        self._window = window
        self._next = 0
        self._inflight: dict[int, list[int]] = {}  # offset -> [size, last sent ms]

    @property
    def all_acked(self) -> bool:
        """Every chunk was sent and acknowledged (at once for an empty file)."""
        return self._next >= self.total_size and not self._inflight

    def to_send(self, now_ms: int) -> list[tuple[int, int]]:
        """New (offset, size) chunks to send now, in increasing offset order."""
        out = []
        while self._next < self.total_size and len(self._inflight) < self._window:
            size = min(self._chunk, self.total_size - self._next)
            self._inflight[self._next] = [size, now_ms]
            out.append((self._next, size))
            self._next += size
        return out

    def on_ack(self, offset: int) -> bool:
        """Take an acknowledgement; False for one of nothing in flight (a duplicate)."""
        entry = self._inflight.pop(offset, None)
        if entry is None:
            return False
        self.acked_bytes += entry[0]
        return True

    def overdue(self, now_ms: int, retry_after_ms: int) -> list[tuple[int, int]]:
        """Chunks unacknowledged for retry_after_ms, to send again (each counts as sent now)."""
        out = []
        for offset, entry in self._inflight.items():
            if now_ms - entry[1] >= retry_after_ms:
                entry[1] = now_ms
                out.append((offset, entry[0]))
        return out


class ReorderBuffer:
    """The receiving side of an upload: chunks in any order in, contiguous bytes out.

    At most `max_ahead_bytes` past the written prefix are held, so a sender cannot make
    the node buffer a whole file in memory.

    >>> buf = ReorderBuffer(max_ahead_bytes=100)
    >>> buf.add(3, b"def"), buf.add(0, b"abc"), buf.written
    ([], [b'abc', b'def'], 6)
    """

    def __init__(self, max_ahead_bytes: int) -> None:
        self.written = 0
        self._max_ahead = max_ahead_bytes
        self._held: dict[int, bytes] = {}

    @property
    def held_bytes(self) -> int:
        """Bytes held until the bytes before them arrive."""
        return sum(len(d) for d in self._held.values())

    def add(self, offset: int, data: bytes) -> list[bytes]:
        """Take a chunk; returns the bytes (in order) that now extend the written prefix.

        A chunk already taken (resent because its ack was lost) yields nothing.

        Raises:
            ValueError: the chunk overlaps the prefix only in part, or lies too far ahead.
        """
        end = offset + len(data)
        if end <= self.written:
            return []
        if offset < self.written:
            raise ValueError(f"chunk {offset}..{end} overlaps the {self.written} bytes already written")
        if end - self.written > self._max_ahead:
            raise ValueError(f"chunk at {offset} is more than {self._max_ahead} bytes ahead of {self.written}")
        self._held.setdefault(offset, data)
        out = []
        while self.written in self._held:
            piece = self._held.pop(self.written)
            out.append(piece)
            self.written += len(piece)
        return out


class Pending:
    """The result of a transfer, set once by the actor and waited for from another thread.

    `progress_bytes` is updated as bytes arrive or are acknowledged (for display only).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress_bytes = 0
        self._event = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """A result or an error was set."""
        return self._event.is_set()

    def resolve(self, value: Any) -> None:
        """Set the result (the first result or error set wins)."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Set the error (the first result or error set wins)."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    def wait(self, timeout_s: float) -> Any:
        """The result, waiting up to timeout_s.

        Raises:
            TransferTimeoutError: no result in time.
            TransferError: (or another NodeError) the transfer failed.
        """
        if not self._event.wait(max(0.0, timeout_s)):
            raise TransferTimeoutError(f"{self.what} did not finish within {timeout_s:g} s")
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True, slots=True)
class Published:
    """A file served by a node: its sha3-256, its URL, its size and the path it is read from."""

    hash_hex: str
    url: str
    size: int
    path: str


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded file, hash-verified, at its destination."""

    path: str
    size: int
    hash_hex: str
    url: str


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A file the receiving node verified and put at its upload slot's destination."""

    url: str
    size: int
    hash_hex: str


# The actor enforces a transfer's own timeout; waiting a little longer lets its answer
# (including a timeout error that says how far it got) arrive first.
_WAIT_MARGIN_S = 5.0


def publish_blocking(
    gftp: Any, path: str, allowed_peers: tuple[str, ...] | None = None, timeout_s: float = 600.0,
    ask_timeout_s: float = 10.0,
) -> Published:
    """Publish a file through a GftpActor proxy and wait until it is hashed and served.

    Raises:
        TransferError: the file cannot be published (or hashing took over timeout_s).
    """
    pending = gftp.publish(path, allowed_peers).get(timeout=ask_timeout_s)
    return pending.wait(timeout_s)


def fetch_blocking(
    gftp: Any, url: str, dest: str, max_bytes: int, timeout_s: float, ask_timeout_s: float = 10.0
) -> Fetched:
    """Download url into dest through a GftpActor proxy and wait for it.

    Raises:
        TransferError: (a subclass of) why it failed; dest + ".part" is kept when the
            download can be resumed by fetching again.
    """
    pending = gftp.fetch(url, dest, max_bytes, timeout_s).get(timeout=ask_timeout_s)
    return pending.wait(timeout_s + _WAIT_MARGIN_S)


def upload_blocking(gftp: Any, local_path: str, url: str, timeout_s: float, ask_timeout_s: float = 10.0) -> Uploaded:
    """Upload a file to an upload slot through a GftpActor proxy and wait until the receiver verified it.

    Raises:
        TransferError: (a subclass of) why it failed.
    """
    pending = gftp.upload(local_path, url, timeout_s).get(timeout=ask_timeout_s)
    return pending.wait(timeout_s + _WAIT_MARGIN_S)
