"""Real node processes on loopback, for integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

from node.control import ControlClient, runtime_file
from node.keystore import KeyStore
from node.storage import db_path, ensure_data_dir, open_database
from protocol.codec import Message
from protocol.control import (
    GossipList,
    GossipListRequest,
    GossipPublished,
    GossipPublishRequest,
    Inbox,
    InboxRequest,
    NetCounters,
    NetCountersRequest,
    NetStatus,
    NetStatusRequest,
)
from protocol.identity import Identity

__all__ = ["NodeProcess", "Testnet", "free_port", "wait_for", "connected"]

REPO = Path(__file__).resolve().parents[2]

# Fast timers so that tests of failure detection take seconds, not minutes.
FAST_ENV = {
    "LOAM_NET__HEARTBEAT_S": "0.5",
    "LOAM_NET__DEAD_AFTER_S": "2.5",
    "LOAM_NET__ANTI_ENTROPY_S": "1.0",
    "LOAM_NET__HANDSHAKE_TIMEOUT_S": "2.0",
}


def free_port(span: int = 1) -> int:
    """The first of `span` consecutive TCP ports on 127.0.0.1 that were free a moment ago.

    Chosen below the kernel's ephemeral range (32768 and up), where outgoing connections
    would otherwise take them before a node binds them.
    """
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20_000, 32_000 - span)
        try:
            for port in range(first, first + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free ports found")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll check until it returns something truthy; raise AssertionError naming what on timeout."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a node may still be starting
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error!r})")


class NodeProcess:
    """One `loam node run` child process with its own data dir and identity."""

    def __init__(
        self,
        base_dir: Path,
        name: str,
        *,
        listen: bool = True,
        bootstrap: Iterable[str] = (),
        subnet: str = "public",
        env: dict[str, str] | None = None,
        identity: Identity | None = None,
        fast_timers: bool = True,
    ) -> None:
        self.name = name
        self.data_dir = ensure_data_dir(base_dir / name)
        self.listen = listen
        self.port: int | None = None  # known once started: the node picks a free port
        self.bootstrap = list(bootstrap)
        self.subnet = subnet
        self.env = {**(FAST_ENV if fast_timers else {}), **(env or {})}
        self.log_path = self.data_dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        conn = open_database(db_path(self.data_dir))
        try:
            store = KeyStore(self.data_dir, conn)
            if not store.list():
                key = (identity or Identity.generate()).private_key
                store.import_key(key, alias=name, password=None)
            self.node_id = store.get(None).address
        finally:
            conn.close()
        self.contact: str | None = None
        self.client = ControlClient(self.data_dir)

    def start(self, wait: bool = True) -> NodeProcess:
        """Start the process; with wait, return once it has written its runtime file."""
        runtime_file(self.data_dir).unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "node.cli", "node", "run",
            "--data-dir", str(self.data_dir),
            # Port 0: the node binds a free port itself, so no other process can take it
            # between our choice and its bind. A restart asks for the port it had.
            "--listen", f"tcp://127.0.0.1:{self.port or 0}" if self.listen else "none",
            "--subnet", self.subnet,
            "--name", self.name,
            "--log-json",
        ]
        for contact in self.bootstrap:
            cmd += ["--bootstrap", contact]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
        env.update(self.env)
        env.setdefault("LOAM_METRICS__PORT", "0")  # each node its own free port (node.json names it)
        env.setdefault("LOAM_API__PORT", "0")  # the same for the REST API
        env["PYTHONPATH"] = str(REPO)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait for the runtime file written by this process."""
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            data = json.loads(runtime_file(self.data_dir).read_text())
            if data["pid"] != self.proc.pid:
                return False
            self.contact = data["contact"]
            if self.listen:
                self.port = int(data["listen"].rpartition(":")[2])
            return True

        try:
            wait_for(f"{self.name} to start", ready, timeout_s)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None

    def call(self, request: Message, timeout_s: float = 10.0) -> Any:
        """Send a control request."""
        return self.client.call(request, timeout_s)

    def status(self) -> NetStatus:
        """The node's net status."""
        return self.call(NetStatusRequest())

    def neighbour_ids(self) -> set[str]:
        """Node ids of the neighbours in its active view."""
        return {n.node_id for n in self.status().neighbours if n.role == "neighbour"}

    def counters(self) -> dict[str, int]:
        """The node's network counters."""
        reply = self.call(NetCountersRequest())
        assert isinstance(reply, NetCounters)
        return reply.counters

    def publish(self, topic: str, payload: bytes, ttl_s: float = 300.0) -> GossipPublished:
        """Publish a gossip item from this node."""
        return self.call(GossipPublishRequest(topic, payload, ttl_s, ""))

    def item_ids(self, topic: str) -> set[str]:
        """Ids of the live items of a topic the node knows."""
        reply = self.call(GossipListRequest(topic))
        assert isinstance(reply, GossipList)
        return {e.item_id for e in reply.entries}

    def items(self, topic: str) -> GossipList:
        """The live items of a topic, with receive times."""
        return self.call(GossipListRequest(topic))

    def inbox(self) -> Inbox:
        """Text notes received."""
        return self.call(InboxRequest())

    def market(self, method: str, timeout_s: float = 40.0, **args: Any) -> Any:
        """Call a market method of the node through the control channel; returns plain data."""
        from protocol.control import ControlCall, ControlResult

        reply = self.call(ControlCall("market", method, args), timeout_s)
        assert isinstance(reply, ControlResult)
        return reply.value

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to say goodbye."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def rss_kb(self, peak: bool = False) -> int:
        """Resident memory of the process (VmHWM when peak)."""
        assert self.proc is not None
        field = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
        return 0

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Testnet:
    __test__ = False  # not a test class, despite the name

    """Several nodes joined through the first one."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.nodes: list[NodeProcess] = []

    def add(self, name: str | None = None, *, start: bool = True, **kwargs: Any) -> NodeProcess:
        """Create (and start) a node that bootstraps through the first node unless told otherwise."""
        if "bootstrap" not in kwargs and self.nodes:
            kwargs["bootstrap"] = [self.nodes[0].contact]
        node = NodeProcess(self.base_dir, name or f"node-{len(self.nodes)}", **kwargs)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def live(self) -> list[NodeProcess]:
        """The nodes whose processes run."""
        return [n for n in self.nodes if n.alive()]

    def stop_all(self) -> None:
        """Stop every node (in parallel: SIGTERM to all, then wait)."""
        for node in self.nodes:
            if node.alive():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()


def connected(nodes: list[NodeProcess]) -> bool:
    """True when the neighbour graph among these nodes is connected (links count both ways)."""
    ids = {n.node_id for n in nodes}
    edges: dict[str, set[str]] = {n.node_id: set() for n in nodes}
    for n in nodes:
        for other in n.neighbour_ids() & ids:
            edges[n.node_id].add(other)
            edges[other].add(n.node_id)
    start = nodes[0].node_id
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in edges[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen == ids


def market_call(node: NodeProcess, method: str, args: dict[str, Any], margin_s: float = 10.0) -> Any:
    """Call a market method whose own arguments include timeout_s (collect, wait_agreement, agreement_events).

    `node.market(method, timeout_s=..., **args)` takes timeout_s as the control channel's
    timeout, so it never reaches the method; here every argument does, and the control
    channel waits the method's timeout plus margin_s.
    """
    from protocol.control import ControlCall, ControlResult

    reply = node.call(ControlCall("market", method, args), float(args.get("timeout_s", 0.0)) + margin_s)
    assert isinstance(reply, ControlResult)
    return reply.value
