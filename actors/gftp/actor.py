"""GftpActor: publishes files, serves their chunks to the peers they are meant for, fetches and uploads.

Every node runs one. Files are read and written a chunk at a time inside the actor (small,
bounded work); hashing a whole file runs on a worker thread whose result comes back as a
message. Callers get a `Pending` and wait on it from their own thread (see
`actors.gftp.transfer.fetch_blocking` and its siblings, re-exported here).

The serving side (published files, upload slots) lives in `serving.py`, the chunk
bookkeeping of both directions in `transfer.py`; this module routes messages between them
and the network, and runs the timers: retries of lost chunks and transfer timeouts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pykka

from actors.base import FailureHandler, LoamActor, Ticker
from actors.gftp.errors import (
    BadUrlError,
    FileTooLargeError,
    HashMismatchError,
    SourceUnavailableError,
    TransferError,
    TransferTimeoutError,
    error_for_code,
)
from actors.gftp.serving import (
    PublishedFiles,
    UploadSlots,
    absolute_path,
    hash_file,
    hash_prefix,
    part_path,
    write_all,
)
from actors.gftp.transfer import (
    DownloadPlan,
    Fetched,
    Pending,
    Published,
    Uploaded,
    UploadPlan,
    fetch_blocking,
    publish_blocking,
    upload_blocking,
)
from actors.net.actor import Received
from protocol.codec import Message
from protocol.errors import NodeError, ProtocolError
from protocol.gftp import (
    GFTP_PREFIX,
    MAX_CHUNK_BYTES,
    GftpChunk,
    GftpFailed,
    GftpRequestChunk,
    GftpUploadAck,
    GftpUploadChunk,
    GftpUploadDone,
    GftpUploadFinish,
    gftp_url,
    is_file_id,
    parse_gftp_url,
)
from protocol.identity import Identity, to_checksum_address

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = [
    "GftpActor",
    "Published",
    "Fetched",
    "Uploaded",
    "publish_blocking",
    "fetch_blocking",
    "upload_blocking",
    "CHUNK_BYTES",
    "WINDOW",
    "RETRY_AFTER_MS",
]

CHUNK_BYTES = MAX_CHUNK_BYTES
WINDOW = 4  # chunks in flight per transfer: 1 MiB, enough to keep a loopback or LAN link busy
RETRY_AFTER_MS = 3_000  # a chunk unanswered this long is asked for (or sent) again
_TICK_S = 0.2
_MAX_TIMEOUT_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _WorkDone:
    """A hashing job of the worker threads finished (successfully or not)."""

    job: str
    future: Future


@dataclass
class _Download:
    tid: str
    url: str
    node_id: str
    file_id: str
    dest: Path
    part: Path
    max_bytes: int
    timeout_s: float
    deadline_ms: int
    pending: Pending
    plan: DownloadPlan | None = None  # None while the .part is being hashed
    hasher: Any = None
    fd: int | None = None
    restarted: bool = False


@dataclass
class _Upload:
    tid: str
    url: str
    node_id: str
    slot_id: str
    path: str
    fd: int
    plan: UploadPlan
    hasher: Any
    timeout_s: float
    deadline_ms: int
    pending: Pending
    sha3_hex: str | None = None  # known once every chunk is acknowledged
    finish_sent_ms: int | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class GftpActor(LoamActor):
    """The node's file transfer: publish, serve, fetch, open upload slots, upload."""

    name = "gftp"

    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        net: Any,
        *,
        on_actor_failure: FailureHandler | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._net = net
        self._ask_s = settings.actors.ask_timeout_s
        self._chunk = min(chunk_bytes, MAX_CHUNK_BYTES)
        self._files = PublishedFiles(identity.node_id)
        self._slots = UploadSlots(identity.node_id)
        self._downloads: dict[str, _Download] = {}
        self._uploads: dict[str, _Upload] = {}
        self._jobs: dict[str, tuple[Callable[[Future], None], Pending]] = {}
        self._stats: dict[str, int] = {}
        self._ticker: Ticker | None = None
        self._workers: ThreadPoolExecutor | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start_up(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loam-gftp-hash")
        self._net.subscribe(GFTP_PREFIX, self.actor_ref).get(timeout=self._ask_s)
        self._ticker = Ticker(self.actor_ref, _Tick(), _TICK_S)
        self._log.info("gftp_started")

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        stopping = TransferError("the node is stopping")
        for d in list(self._downloads.values()):
            self._fail_download(d, stopping)
        for u in list(self._uploads.values()):
            self._fail_upload(u, stopping)
        for _, pending in self._jobs.values():
            pending.fail(stopping)
        self._slots.close_all()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    # -- the public API (call through the proxy) --------------------------------------------

    def publish(self, path: str, allowed_peers: tuple[str, ...] | None = None) -> Pending:
        """Serve a file under its sha3-256 to allowed_peers (None = any node given the URL).

        Returns a Pending that resolves to `Published` once the file is hashed (on a worker
        thread). Publishing the same content again adds a reference: it stays served until
        as many `close` calls, to every node any of its publications allowed.

        Raises:
            TransferError: the path is not absolute, not a regular file or not readable.
        """
        file_path = absolute_path(path)
        allowed = self._peer_set(allowed_peers)
        try:
            with open(file_path, "rb"):
                pass
        except OSError as exc:
            raise TransferError(f"cannot publish {file_path}: {exc.strerror or exc}") from None
        if not file_path.is_file():
            raise TransferError(f"cannot publish {file_path}: not a regular file")
        pending = Pending(f"publishing {file_path}")

        def hashed(future: Future) -> None:
            try:
                hash_hex, size, mtime_ns = future.result()
            except NodeError as exc:
                pending.fail(exc)
                return
            except OSError as exc:
                pending.fail(TransferError(f"cannot read {file_path}: {exc.strerror or exc}"))
                return
            refs = self._files.add(str(file_path), hash_hex, size, mtime_ns, allowed)
            self._log.info(
                "file_published", hash=hash_hex, size=size, refs=refs, allowed=None if allowed is None else len(allowed)
            )
            pending.resolve(Published(hash_hex, gftp_url(self.node_id, hash_hex), size, str(file_path)))

        self._run_job(hash_file, (str(file_path),), hashed, pending)
        return pending

    def close(self, hash_or_url: str) -> bool:
        """Stop serving a published file (one reference of it) or close an upload slot.

        Returns False when this node publishes no such file and has no such slot.
        """
        file_id = self._local_id(hash_or_url)
        if file_id is None:
            return False
        if self._files.close(file_id):
            self._log.info("file_closed", hash=file_id)
            return True
        if self._slots.close(file_id):
            self._log.info("upload_slot_closed", slot_id=file_id)
            return True
        return False

    def open_upload(
        self, dest_path: str, allowed_peers: tuple[str, ...] | None = None, max_bytes: int = 2**40
    ) -> str:
        """Open an upload slot: another node may upload one file (up to max_bytes) to dest_path.

        Returns the slot's URL. The file appears at dest_path only once it is complete and
        its hash checked.

        Raises:
            TransferError: dest_path is not absolute, its directory does not exist, or
                another slot or download already writes there.
        """
        dest = absolute_path(dest_path)
        if not dest.parent.is_dir():
            raise TransferError(f"cannot receive into {dest}: {dest.parent} is not a directory")
        if max_bytes < 0:
            raise TransferError("max_bytes must not be negative")
        self._check_dest_free(dest)
        url = self._slots.open(dest, self._peer_set(allowed_peers), int(max_bytes), _now_ms())
        self._log.info("upload_slot_opened", url=url, dest=str(dest), max_bytes=max_bytes)
        return url

    def fetch(self, url: str, dest_path: str, max_bytes: int, timeout_s: float) -> Pending:
        """Download a published file into dest_path; returns a Pending resolving to `Fetched`.

        Bytes go to dest_path + ".part" first, always a prefix of the file, so a later
        fetch of the same URL continues from what is there. The whole file is checked
        against the hash in the URL before it is moved to dest_path.

        Raises:
            BadUrlError: not a gftp URL.
            TransferError: bad destination, limits, or a fetch into dest_path is running.
        """
        node_id, file_id = _parse(url)
        dest = absolute_path(dest_path)
        if not dest.parent.is_dir():
            raise TransferError(f"cannot download into {dest}: {dest.parent} is not a directory")
        if max_bytes < 0:
            raise TransferError("max_bytes must not be negative")
        if not 0 < timeout_s <= _MAX_TIMEOUT_S:
            raise TransferError(f"timeout_s must be in (0, {_MAX_TIMEOUT_S:g}]")
        self._check_dest_free(dest)
        d = _Download(
            tid=secrets.token_hex(16), url=url, node_id=node_id, file_id=file_id, dest=dest, part=part_path(dest),
            max_bytes=int(max_bytes), timeout_s=float(timeout_s), deadline_ms=_now_ms() + int(timeout_s * 1000),
            pending=Pending(f"fetching {url}"),
        )
        self._downloads[d.tid] = d

        def prefix_hashed(future: Future) -> None:
            if self._downloads.get(d.tid) is not d:
                return  # timed out meanwhile
            try:
                prefix_size, hasher = future.result()
            except OSError as exc:
                self._fail_download(d, TransferError(f"cannot read {d.part}: {exc.strerror or exc}"))
                return
            self._begin_download(d, prefix_size, hasher)

        self._run_job(hash_prefix, (str(d.part), int(max_bytes)), prefix_hashed, d.pending)
        self._log.info("fetch_started", url=url, dest=str(dest), max_bytes=max_bytes)
        return d.pending

    def upload(self, local_path: str, url: str, timeout_s: float) -> Pending:
        """Send a file to an upload slot; returns a Pending resolving to `Uploaded`.

        Raises:
            BadUrlError: not a gftp URL.
            TransferError: the file cannot be read, or a bad timeout.
        """
        node_id, slot_id = _parse(url)
        path = absolute_path(local_path)
        if not 0 < timeout_s <= _MAX_TIMEOUT_S:
            raise TransferError(f"timeout_s must be in (0, {_MAX_TIMEOUT_S:g}]")
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise TransferError(f"cannot upload {path}: {exc.strerror or exc}") from None
        size = os.fstat(fd).st_size
        now = _now_ms()
        u = _Upload(
            tid=secrets.token_hex(16), url=url, node_id=node_id, slot_id=slot_id, path=str(path), fd=fd,
            plan=UploadPlan(size, self._chunk, WINDOW), hasher=hashlib.sha3_256(), timeout_s=float(timeout_s),
            deadline_ms=now + int(timeout_s * 1000), pending=Pending(f"uploading {path} to {url}"),
        )
        self._uploads[u.tid] = u
        self._log.info("upload_started", url=url, path=str(path), size=size)
        self._pump_upload(u, now)
        return u.pending

    def published(self) -> list[dict[str, Any]]:
        """The files this node serves: hash, url, size, paths, allowed peers (None = any), references."""
        return self._files.listing(lambda file_id: gftp_url(self.node_id, file_id))

    def upload_slots(self) -> list[dict[str, Any]]:
        """The upload slots: url, destination, state (open, receiving, done), bytes received."""
        return self._slots.listing()

    def stats(self) -> dict[str, int]:
        """Counters: bytes and chunks served, fetched, uploaded, received; refusals by reason."""
        return dict(self._stats)

    # -- messages ---------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, _Tick):
                self._on_tick(_now_ms())
            elif isinstance(message, _WorkDone):
                job = self._jobs.pop(message.job, None)
                if job is not None:
                    job[0](message.future)
            elif isinstance(message, Received):
                self._on_net(message.sender, message.message)
        except (ProtocolError, TransferError) as exc:
            self._log.warning("gftp_message_rejected", error=str(exc)[:300], kind=type(message).__name__)
        except Exception as exc:  # noqa: BLE001 - remote input must never kill the actor
            self._log.error("gftp_message_failed", error=repr(exc), exc_info=True)
        return None

    def _on_net(self, sender: str, msg: Message) -> None:
        now = _now_ms()
        if isinstance(msg, GftpRequestChunk):
            self._reply(sender, self._files.serve(sender, msg))
        elif isinstance(msg, GftpUploadChunk):
            reply, written = self._slots.on_chunk(sender, msg, now)
            self._count("bytes_received", written)
            self._reply(sender, reply)
        elif isinstance(msg, GftpUploadFinish):
            reply = self._slots.on_finish(sender, msg, now)
            if isinstance(reply, GftpUploadDone):
                self._log.info("upload_received", slot_id=msg.slot_id, size=reply.total_size, peer=sender)
            self._reply(sender, reply)
        elif isinstance(msg, GftpChunk):
            self._on_chunk(sender, msg, now)
        elif isinstance(msg, GftpUploadAck):
            self._on_upload_ack(sender, msg, now)
        elif isinstance(msg, GftpUploadDone):
            self._on_upload_done(sender, msg)
        elif isinstance(msg, GftpFailed):
            self._on_failed(sender, msg)

    def _reply(self, peer: str, reply: Message) -> None:
        if isinstance(reply, GftpFailed):
            self._count(f"refused.{reply.code}")
            if reply.code == "refused":
                self._log.warning("gftp_request_refused", peer=peer, reason=reply.message[:200])
        elif isinstance(reply, GftpChunk):
            self._count("chunks_served")
            self._count("bytes_served", len(reply.data))
        self._send(peer, reply)

    def _send(self, node_id: str, msg: Message) -> None:
        # Not waited for: the net actor never waits on us, but a reply per chunk need not
        # cost a round trip through its mailbox either.
        self._net.send(node_id, msg)

    # -- downloading ------------------------------------------------------------------------

    def _begin_download(self, d: _Download, prefix_size: int, hasher: Any) -> None:
        try:
            if d.fd is not None:
                os.close(d.fd)
            d.fd = os.open(d.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.ftruncate(d.fd, prefix_size)
        except OSError as exc:
            self._fail_download(d, TransferError(f"cannot write {d.part}: {exc.strerror or exc}"))
            return
        d.hasher = hasher
        d.plan = DownloadPlan(prefix_size, self._chunk, WINDOW, d.max_bytes)
        d.pending.progress_bytes = prefix_size
        if prefix_size:
            self._log.info("fetch_resumed", url=d.url, from_bytes=prefix_size)
        self._request_chunks(d, d.plan.to_request(_now_ms()))

    def _request_chunks(self, d: _Download, requests: list[tuple[int, int]]) -> None:
        for offset, size in requests:
            self._send(d.node_id, GftpRequestChunk(d.tid, d.file_id, offset, size))

    def _on_chunk(self, sender: str, msg: GftpChunk, now: int) -> None:
        d = self._downloads.get(msg.transfer_id)
        if d is None or d.plan is None or sender != d.node_id:
            self._count("stray_chunks")
            return
        try:
            pieces = d.plan.on_chunk(msg.offset, msg.data, msg.total_size, now)
        except HashMismatchError as exc:
            self._restart_or_fail(d, exc)
            return
        except TransferError as exc:
            self._fail_download(d, exc, remove_part=isinstance(exc, FileTooLargeError))
            return
        try:
            for piece in pieces:
                write_all(d.fd, piece)
                d.hasher.update(piece)
        except OSError as exc:
            self._fail_download(d, TransferError(f"cannot write {d.part}: {exc.strerror or exc}"))
            return
        self._count("bytes_fetched", sum(len(p) for p in pieces))
        d.pending.progress_bytes = d.plan.written
        if d.plan.done:
            self._finish_download(d)
        else:
            self._request_chunks(d, d.plan.to_request(now))

    def _finish_download(self, d: _Download) -> None:
        assert d.plan is not None and d.plan.total_size is not None
        digest = d.hasher.hexdigest()
        if digest != d.file_id:
            self._restart_or_fail(d, HashMismatchError(f"{d.url} downloaded to bytes whose sha3-256 is {digest}"))
            return
        self._close_fd(d)
        try:
            os.replace(d.part, d.dest)
        except OSError as exc:
            self._fail_download(d, TransferError(f"cannot move {d.part} to {d.dest}: {exc.strerror or exc}"))
            return
        del self._downloads[d.tid]
        self._log.info("fetch_done", url=d.url, size=d.plan.total_size, resumed_from=d.plan.start_offset)
        d.pending.resolve(Fetched(str(d.dest), d.plan.total_size, digest, d.url))

    def _restart_or_fail(self, d: _Download, exc: HashMismatchError) -> None:
        """A resumed download that does not add up: the old .part was of another file; start over once."""
        if d.plan is not None and d.plan.start_offset > 0 and not d.restarted:
            self._log.warning("fetch_restarted", url=d.url, reason=str(exc)[:200])
            d.restarted = True
            # A new transfer id, so late answers to the old requests are ignored.
            del self._downloads[d.tid]
            d.tid = secrets.token_hex(16)
            self._downloads[d.tid] = d
            self._begin_download(d, 0, hashlib.sha3_256())
            return
        self._fail_download(d, exc, remove_part=True)

    def _fail_download(self, d: _Download, exc: TransferError, remove_part: bool = False) -> None:
        if self._downloads.get(d.tid) is d:
            del self._downloads[d.tid]
        self._close_fd(d)
        try:
            if remove_part or (d.part.exists() and d.part.stat().st_size == 0):
                d.part.unlink(missing_ok=True)
        except OSError:
            pass
        self._log.info("fetch_failed", url=d.url, error=str(exc)[:300], kind=type(exc).__name__)
        d.pending.fail(exc)

    def _close_fd(self, d: _Download) -> None:
        if d.fd is not None:
            try:
                os.close(d.fd)
            except OSError:
                pass
            d.fd = None

    # -- uploading ----------------------------------------------------------------------------

    def _pump_upload(self, u: _Upload, now: int) -> None:
        try:
            for offset, size in u.plan.to_send(now):
                data = os.pread(u.fd, size, offset)
                if len(data) != size:
                    raise SourceUnavailableError(f"{u.path} got shorter while it was being uploaded")
                u.hasher.update(data)  # new chunks come in offset order
                self._send(u.node_id, GftpUploadChunk(u.tid, u.slot_id, offset, data, u.plan.total_size))
        except OSError as exc:
            self._fail_upload(u, TransferError(f"cannot read {u.path}: {exc.strerror or exc}"))
            return
        except TransferError as exc:
            self._fail_upload(u, exc)
            return
        if u.plan.all_acked and u.finish_sent_ms is None:
            u.sha3_hex = u.hasher.hexdigest()
            u.finish_sent_ms = now
            self._send(u.node_id, GftpUploadFinish(u.tid, u.slot_id, u.plan.total_size, u.sha3_hex))

    def _resend_upload(self, u: _Upload, now: int) -> None:
        try:
            for offset, size in u.plan.overdue(now, RETRY_AFTER_MS):
                data = os.pread(u.fd, size, offset)
                self._send(u.node_id, GftpUploadChunk(u.tid, u.slot_id, offset, data, u.plan.total_size))
        except OSError as exc:
            self._fail_upload(u, TransferError(f"cannot read {u.path}: {exc.strerror or exc}"))
            return
        if u.finish_sent_ms is not None and u.sha3_hex and now - u.finish_sent_ms >= RETRY_AFTER_MS:
            u.finish_sent_ms = now
            self._send(u.node_id, GftpUploadFinish(u.tid, u.slot_id, u.plan.total_size, u.sha3_hex))

    def _on_upload_ack(self, sender: str, ack: GftpUploadAck, now: int) -> None:
        u = self._uploads.get(ack.transfer_id)
        if u is None or sender != u.node_id:
            return
        if u.plan.on_ack(ack.offset):
            self._count("bytes_uploaded", ack.size)
            u.pending.progress_bytes = u.plan.acked_bytes
        self._pump_upload(u, now)

    def _on_upload_done(self, sender: str, done: GftpUploadDone) -> None:
        u = self._uploads.get(done.transfer_id)
        if u is None or sender != u.node_id or u.sha3_hex is None:
            return
        if done.sha3_hex != u.sha3_hex or done.total_size != u.plan.total_size:
            self._fail_upload(u, HashMismatchError(f"{u.url} confirmed {done.sha3_hex}, we sent {u.sha3_hex}"))
            return
        del self._uploads[u.tid]
        os.close(u.fd)
        self._log.info("upload_done", url=u.url, size=done.total_size)
        u.pending.resolve(Uploaded(u.url, done.total_size, done.sha3_hex))

    def _fail_upload(self, u: _Upload, exc: TransferError) -> None:
        if self._uploads.pop(u.tid, None) is not None:
            try:
                os.close(u.fd)
            except OSError:
                pass
        self._log.info("upload_failed", url=u.url, error=str(exc)[:300], kind=type(exc).__name__)
        u.pending.fail(exc)

    def _on_failed(self, sender: str, failed: GftpFailed) -> None:
        d = self._downloads.get(failed.transfer_id)
        if d is not None and sender == d.node_id:
            resuming = d.plan is not None and d.plan.total_size is None and d.plan.start_offset > 0
            if failed.code == "bad_request" and resuming:
                # The resume point is past the end of the file: the .part is of another file.
                self._restart_or_fail(d, HashMismatchError(f"the partial download is longer than {d.url}"))
            else:
                self._fail_download(d, error_for_code(failed.code, f"{d.url}: {failed.message}"))
            return
        u = self._uploads.get(failed.transfer_id)
        if u is not None and sender == u.node_id:
            self._fail_upload(u, error_for_code(failed.code, f"{u.url}: {failed.message}"))

    # -- timers -------------------------------------------------------------------------------

    def _on_tick(self, now: int) -> None:
        for d in list(self._downloads.values()):
            if now >= d.deadline_ms:
                total = d.plan.total_size if d.plan and d.plan.total_size is not None else "?"
                got = f"{d.plan.written} of {total} bytes" if d.plan else "nothing"
                self._fail_download(
                    d, TransferTimeoutError(f"fetching {d.url} did not finish within {d.timeout_s:g} s (got {got})")
                )
            elif d.plan is not None:
                self._request_chunks(d, d.plan.overdue(now, RETRY_AFTER_MS))
        for u in list(self._uploads.values()):
            if now >= u.deadline_ms:
                self._fail_upload(u, TransferTimeoutError(
                    f"uploading {u.path} to {u.url} did not finish within {u.timeout_s:g} s "
                    f"({u.plan.acked_bytes} of {u.plan.total_size} bytes acknowledged)"
                ))
            else:
                self._resend_upload(u, now)

    # -- helpers ------------------------------------------------------------------------------

    def _run_job(self, fn: Callable[..., Any], args: tuple, done: Callable[[Future], None], pending: Pending) -> None:
        """Run fn(*args) on a worker thread; done(future) runs in the actor when it finishes."""
        assert self._workers is not None
        job = secrets.token_hex(8)
        self._jobs[job] = (done, pending)
        ref = self.actor_ref

        def report(future: Future) -> None:
            try:
                ref.tell(_WorkDone(job, future))
            except pykka.ActorDeadError:
                pending.fail(TransferError("the node is stopping"))

        self._workers.submit(fn, *args).add_done_callback(report)

    def _peer_set(self, allowed_peers: Any) -> frozenset[str] | None:
        if allowed_peers is None:
            return None
        if isinstance(allowed_peers, str) or not isinstance(allowed_peers, (list, tuple, set, frozenset)):
            raise TransferError("allowed_peers must be a list of node ids (or None for any node)")
        out = set()
        for peer in allowed_peers:
            if not isinstance(peer, str) or len(peer) != 42 or not peer.startswith("0x"):
                raise TransferError(f"{str(peer)[:60]!r} is not a node id")
            try:
                out.add(to_checksum_address(bytes.fromhex(peer[2:])))
            except ValueError:
                raise TransferError(f"{peer[:60]!r} is not a node id") from None
        return frozenset(out)

    def _local_id(self, hash_or_url: str) -> str | None:
        if not isinstance(hash_or_url, str):
            return None
        if hash_or_url.startswith("gftp://"):
            try:
                node_id, file_id = parse_gftp_url(hash_or_url)
            except ProtocolError:
                return None
            return file_id if node_id == self.node_id else None
        value = hash_or_url.strip().lower()
        return value if is_file_id(value) else None

    def _check_dest_free(self, dest: Path) -> None:
        if any(d.dest == dest for d in self._downloads.values()):
            raise TransferError(f"a download into {dest} is already running")
        slot_id = self._slots.writing(dest)
        if slot_id is not None:
            raise TransferError(f"upload slot {slot_id} already receives into {dest}")

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self._stats[name] = self._stats.get(name, 0) + n


def _parse(url: str) -> tuple[str, str]:
    try:
        return parse_gftp_url(url)
    except ProtocolError as exc:
        raise BadUrlError(str(exc)) from None
