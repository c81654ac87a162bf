"""The local control channel: the `loam` CLI and tests talk to a running node over a Unix socket."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import structlog
import zmq

from protocol.codec import Message, decode, encode
from protocol.control import ControlFailed
from protocol.errors import ControlError, DecodeError, NodeError

__all__ = ["ControlServer", "ControlClient", "control_endpoint", "runtime_file", "read_runtime"]

# Unix socket paths are limited to about 107 bytes.
_MAX_IPC_PATH = 100


def runtime_file(data_dir: Path) -> Path:
    """The file a running node writes with its pid, node id, contact and control endpoint."""
    return data_dir / "node.json"


def control_endpoint(data_dir: Path) -> str:
    """The ipc:// endpoint of a data dir's control socket (in /tmp when the path is too long)."""
    path = data_dir.resolve() / "control.sock"
    if len(str(path)) > _MAX_IPC_PATH:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"loam-{digest}.sock"
    return f"ipc://{path}"


def read_runtime(data_dir: Path) -> dict[str, Any]:
    """The running node's runtime file.

    Raises:
        ControlError: no node has written one (it is not running).
    """
    try:
        return json.loads(runtime_file(data_dir).read_text())
    except FileNotFoundError:
        raise ControlError(f"no node is running with data dir {data_dir} (no {runtime_file(data_dir).name})") from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"cannot read {runtime_file(data_dir)}: {exc}") from None


Handler = Callable[[Message], Message]

_server_ids = itertools.count()


class ControlServer:
    """Answers control requests on a ROUTER socket; a small pool of worker threads runs the handlers.

    One thread owns the sockets: it hands each request to the workers through a queue and
    sends their answers back to the right client. Workers pass an answer to it over an
    inproc PUSH socket they share under a lock (ZeroMQ sockets may change threads behind
    a full memory barrier, which the lock is). So a long request, such as a gftp fetch,
    holds up only its own worker, and clients (REQ sockets) see no difference.
    """

    def __init__(self, data_dir: Path, handlers: dict[type[Message], Handler], node_id: str, workers: int = 8) -> None:
        self.endpoint = control_endpoint(data_dir)
        self._handlers = handlers
        self._log = structlog.get_logger().bind(node_id=node_id, actor="control")
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
        sock_path = Path(self.endpoint.removeprefix("ipc://"))
        if sock_path.exists():
            sock_path.unlink()  # left by a node that was killed
        self._sock.bind(self.endpoint)
        os.chmod(sock_path, 0o600)
        answers = f"inproc://loam-control-answers-{next(_server_ids)}"
        self._answers = self._ctx.socket(zmq.PULL)
        self._answers.setsockopt(zmq.LINGER, 0)
        self._answers.bind(answers)
        self._answer_out = self._ctx.socket(zmq.PUSH)
        self._answer_out.setsockopt(zmq.LINGER, 0)
        self._answer_out.connect(answers)
        self._answer_lock = threading.Lock()
        self._answer_closed = False
        self._jobs: queue.Queue[list[bytes] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loam-control", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"loam-control-{i}", daemon=True) for i in range(max(1, workers))
        ]

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        """Stop serving and remove the socket (a worker still running a handler is left to finish alone)."""
        self._stop.set()
        self._thread.join(5)
        for _ in self._workers:
            self._jobs.put(None)
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._answer_lock:
            self._answer_closed = True
            self._answer_out.close(linger=0)
        self._answers.close(linger=0)
        self._sock.close(linger=0)
        self._ctx.term()
        Path(self.endpoint.removeprefix("ipc://")).unlink(missing_ok=True)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._answers, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(200))
            if self._sock in ready:
                while True:
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) >= 2:  # [client id, (empty delimiter,) request]
                        self._jobs.put(frames)
            if self._answers in ready:
                while True:
                    try:
                        frames = self._answers.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._sock.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.ZMQError as exc:  # the client went away
                        self._log.debug("control_answer_dropped", error=str(exc))

    def _work(self) -> None:
        while True:
            frames = self._jobs.get()
            if frames is None:
                return
            answer = encode(self._answer(frames[-1]))
            with self._answer_lock:
                if self._answer_closed:
                    return
                self._answer_out.send_multipart(frames[:-1] + [answer])

    def _answer(self, data: bytes) -> Message:
        try:
            request = decode(data)
        except DecodeError as exc:
            return ControlFailed("DecodeError", str(exc))
        handler = self._handlers.get(type(request))
        if handler is None:
            return ControlFailed("UnknownRequest", f"this node does not answer {request.TYPE}")
        try:
            return handler(request)
        except NodeError as exc:
            return ControlFailed(type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - a CLI request must not take the node down
            self._log.error("control_request_failed", request=request.TYPE, error=repr(exc), exc_info=True)
            return ControlFailed(type(exc).__name__, str(exc))


class ControlClient:
    """Sends one control request at a time to the node running on a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = Path(data_dir)

    def call(self, request: Message, timeout_s: float = 10.0) -> Message:
        """Send a request and return the node's answer.

        Raises:
            ControlError: no node runs there, it did not answer in time, or it answered
                with a failure.
        """
        endpoint = control_endpoint(self._data_dir)
        if not Path(endpoint.removeprefix("ipc://")).exists():
            raise ControlError(f"no node is running with data dir {self._data_dir}")
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            sock.send(encode(request))
            if not sock.poll(int(timeout_s * 1000)):
                raise ControlError(f"the node at {self._data_dir} did not answer within {timeout_s} s")
            answer = decode(sock.recv())
        except DecodeError as exc:
            raise ControlError(f"unreadable answer from the node: {exc}") from None
        finally:
            sock.close(linger=0)
        if isinstance(answer, ControlFailed):
            raise ControlError(f"{answer.error}: {answer.message}")
        return answer
