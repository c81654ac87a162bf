"""gftp with real node processes: publish, fetch, limits, resume, upload slots, routing, and `gftp server`.

Nodes are driven through the control channel (`ControlCall("gftp", ...)`); the JSON-RPC
server is run as the client libraries run it, a `gftp server` child speaking on stdio.
The concurrent control server, which a long fetch relies on, is tested here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from node.control import ControlClient, ControlServer
from protocol.control import ControlCall, ControlResult, DirectSent, InboxRequest, NetCountersRequest, NetStatusRequest
from protocol.errors import ControlError, NodeError
from tests.integration.harness import REPO, NodeProcess, Testnet, wait_for

pytestmark = pytest.mark.integration

MIB = 2**20
PATIENCE_S = 30.0


def gftp(node: NodeProcess, method: str, wait_s: float = PATIENCE_S, **args: Any) -> Any:
    """Call a gftp control method of a node (waiting up to wait_s for the answer); returns its plain-data result."""
    reply = node.call(ControlCall("gftp", method, args), wait_s)
    assert isinstance(reply, ControlResult)
    return reply.value


def fetch(node: NodeProcess, url: str, dest: Path, max_bytes: int = 64 * MIB, timeout_s: float = 20.0) -> Any:
    return gftp(node, "fetch", timeout_s + 10, url=url, dest_path=str(dest), max_bytes=max_bytes, timeout_s=timeout_s)


def served(node: NodeProcess) -> int:
    return gftp(node, "stats").get("bytes_served", 0)


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def sha3(data: bytes) -> str:
    return hashlib.sha3_256(data).hexdigest()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess]]:
    """Three linked nodes (a publishes, b and c fetch), shared by the tests of this module."""
    net = Testnet(tmp_path_factory.mktemp("gftp-net"))
    try:
        a, b, c = net.add("a"), net.add("b"), net.add("c")
        wait_for("b and c to link to a", lambda: {b.node_id, c.node_id} <= a.neighbour_ids(), PATIENCE_S)
        yield a, b, c
    finally:
        net.stop_all()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path


# ---- publish and fetch --------------------------------------------------------------------------


def test_published_file_is_fetched_by_another_node_and_hash_verified(trio, files: Path) -> None:
    a, b, _ = trio
    data = random_file(files / "input.bin", 3 * MIB + 12345)
    published = gftp(a, "publish", path=str(files / "input.bin"))
    assert published["hash"] == sha3(data)
    assert published["url"] == f"gftp://{a.node_id}/{sha3(data)}"
    assert published["size"] == len(data)
    got = fetch(b, published["url"], files / "copy.bin")
    assert got == {"path": str(files / "copy.bin"), "size": len(data), "hash": sha3(data), "url": published["url"]}
    assert (files / "copy.bin").read_bytes() == data
    assert not (files / "copy.bin.part").exists()
    gftp(a, "close", hash_or_url=published["url"])


def test_file_published_for_one_peer_is_refused_to_others(trio, files: Path) -> None:
    a, b, c = trio
    data = random_file(files / "private.bin", 300_000)
    url = gftp(a, "publish", path=str(files / "private.bin"), allowed_peers=[b.node_id])["url"]
    with pytest.raises(ControlError, match="TransferRefusedError: .*not published for node"):
        fetch(c, url, files / "stolen.bin")
    assert not (files / "stolen.bin").exists()
    fetch(b, url, files / "given.bin")
    assert (files / "given.bin").read_bytes() == data
    gftp(a, "close", hash_or_url=url)


def test_unknown_hash_is_reported(trio, files: Path) -> None:
    a, b, _ = trio
    with pytest.raises(ControlError, match="UnknownFileError: .*publishes no file"):
        fetch(b, f"gftp://{a.node_id}/{'0' * 64}", files / "nothing")


def test_file_over_the_size_limit_is_refused(trio, files: Path) -> None:
    a, b, _ = trio
    random_file(files / "big.bin", 2 * MIB)
    url = gftp(a, "publish", path=str(files / "big.bin"))["url"]
    before = served(a)
    with pytest.raises(ControlError, match=f"FileTooLargeError: .*{2 * MIB} bytes, over the limit of {MIB}"):
        fetch(b, url, files / "big-copy.bin", max_bytes=MIB)
    assert not (files / "big-copy.bin").exists() and not (files / "big-copy.bin.part").exists()
    assert served(a) - before <= 256 * 1024  # the first chunk told the size; nothing more was sent
    gftp(a, "close", hash_or_url=url)


def test_closed_file_is_no_longer_available(trio, files: Path) -> None:
    a, b, _ = trio
    random_file(files / "brief.bin", 1000)
    published = gftp(a, "publish", path=str(files / "brief.bin"))
    fetch(b, published["url"], files / "first.bin")
    assert gftp(a, "close", hash_or_url=published["hash"]) == {"closed": True}
    assert gftp(a, "close", hash_or_url=published["hash"]) == {"closed": False}
    with pytest.raises(ControlError, match="UnknownFileError"):
        fetch(b, published["url"], files / "second.bin")


def test_partial_download_is_resumed_from_where_it_stopped(trio, files: Path) -> None:
    a, b, _ = trio
    data = random_file(files / "long.bin", 4 * MIB + 777)
    url = gftp(a, "publish", path=str(files / "long.bin"))["url"]
    half = len(data) // 2
    (files / "resumed.bin.part").write_bytes(data[:half])
    before = served(a)
    got = fetch(b, url, files / "resumed.bin")
    assert got["hash"] == sha3(data)
    assert (files / "resumed.bin").read_bytes() == data
    assert served(a) - before == len(data) - half  # only the missing half crossed the network
    gftp(a, "close", hash_or_url=url)


def test_paths_must_be_absolute(trio) -> None:
    a, b, _ = trio
    with pytest.raises(ControlError, match="not an absolute path"):
        gftp(a, "publish", path="relative/input.bin")
    with pytest.raises(ControlError, match="not an absolute path"):
        gftp(b, "fetch", url=f"gftp://{a.node_id}/{'0' * 64}", dest_path="out.bin", max_bytes=10, timeout_s=1.0)
    with pytest.raises(ControlError, match="not an absolute path"):
        gftp(b, "open_upload", dest_path="out.bin")


# ---- upload slots -------------------------------------------------------------------------------


def test_file_is_uploaded_into_an_upload_slot(trio, files: Path) -> None:
    a, b, c = trio
    data = random_file(files / "result.bin", MIB + 99)
    url = gftp(a, "open_upload", dest_path=str(files / "received.bin"), max_bytes=2 * MIB)["url"]
    assert url.startswith(f"gftp://{a.node_id}/")
    assert not (files / "received.bin").exists()
    done = gftp(b, "upload", path=str(files / "result.bin"), url=url, timeout_s=20.0)
    assert done == {"url": url, "size": len(data), "hash": sha3(data)}
    assert (files / "received.bin").read_bytes() == data
    with pytest.raises(ControlError, match="TransferRefusedError: .*already received"):
        gftp(c, "upload", path=str(files / "result.bin"), url=url, timeout_s=20.0)
    assert gftp(a, "close", hash_or_url=url) == {"closed": True}


def test_upload_over_the_slot_limit_is_refused(trio, files: Path) -> None:
    a, b, _ = trio
    random_file(files / "huge.bin", MIB)
    url = gftp(a, "open_upload", dest_path=str(files / "small.bin"), max_bytes=MIB - 1)["url"]
    with pytest.raises(ControlError, match="FileTooLargeError"):
        gftp(b, "upload", path=str(files / "huge.bin"), url=url, timeout_s=20.0)
    assert not (files / "small.bin").exists()
    gftp(a, "close", hash_or_url=url)


# ---- routing --------------------------------------------------------------------------------------


def test_fetch_from_a_node_that_only_dials_out_goes_through_routing(testnet: Testnet, files: Path) -> None:
    hub = testnet.add("hub")
    fetcher = testnet.add("fetcher")
    one_link = {"LOAM_NET__TARGET_NEIGHBOURS": "1", "LOAM_NET__MAX_NEIGHBOURS": "1"}
    hidden = testnet.add("hidden", listen=False, env=one_link)
    wait_for("both to link to the hub", lambda: {fetcher.node_id, hidden.node_id} <= hub.neighbour_ids(), PATIENCE_S)
    assert hidden.node_id not in fetcher.neighbour_ids()
    data = random_file(files / "behind-nat.bin", 2 * MIB + 1)
    url = gftp(hidden, "publish", path=str(files / "behind-nat.bin"))["url"]
    got = fetch(fetcher, url, files / "out.bin")
    assert got["hash"] == sha3(data) and (files / "out.bin").read_bytes() == data
    assert hub.call(NetCountersRequest()).counters.get("routed_forwarded", 0) >= 1


# ---- gftp server (JSON-RPC over stdio) ----------------------------------------------------------


class GftpServer:
    """A `gftp server` child process for a node's data dir, driven line by line."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
        env["LOAM_DATA_DIR"] = str(data_dir)
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.gftp_cli", "server"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def send_raw(self, line: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        return json.loads(self._lines.get(timeout=PATIENCE_S))

    def request(self, method: str, params: Any = None, *, string_id: bool = False) -> dict[str, Any]:
        self._next_id += 1
        rid: Any = str(self._next_id) if string_id else self._next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        answer = self.send_raw(json.dumps(msg).encode() + b"\n")
        assert answer["id"] == rid and answer["jsonrpc"] == "2.0"
        return answer

    def result(self, method: str, params: Any = None, **kw: Any) -> Any:
        answer = self.request(method, params, **kw)
        assert "error" not in answer, answer
        return answer["result"]

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)


def test_gftp_server_serves_the_client_library_protocol(trio, files: Path) -> None:
    a, b, _ = trio
    server = GftpServer(a.data_dir)
    try:
        version = server.result("version", string_id=True)
        assert version.split()[0] >= "0.7.3"  # yapapi sends `close` only to 0.7.3 and later
        assert server.result("version", {}) == version  # golem-js sends empty params

        data = random_file(files / "task-input.txt", 200_000)
        links = server.result("publish", {"files": [str(files / "task-input.txt")]})
        assert links == [{"url": f"gftp://{a.node_id}/{sha3(data)}", "file": str(files / "task-input.txt")}]
        fetch(b, links[0]["url"], files / "provider-copy.txt")
        assert (files / "provider-copy.txt").read_bytes() == data

        link = server.result("receive", {"output_file": str(files / "task-output.txt")})
        assert link["file"] == str(files / "task-output.txt") and link["url"].startswith(f"gftp://{a.node_id}/")
        output = random_file(files / "provider-output.txt", 70_000)
        gftp(b, "upload", path=str(files / "provider-output.txt"), url=link["url"], timeout_s=20.0)
        assert (files / "task-output.txt").read_bytes() == output

        unknown = f"gftp://{a.node_id}/{'1' * 64}"
        assert server.result("close", {"urls": [links[0]["url"], link["url"], unknown]}) == ["ok", "ok", "error"]
        with pytest.raises(ControlError, match="UnknownFileError"):
            fetch(b, links[0]["url"], files / "too-late.txt")

        # Bad requests get JSON-RPC errors with their proper codes, and the server goes on.
        assert server.send_raw(b"{not json\n")["error"]["code"] == -32700
        assert server.send_raw(b'{"id": 7, "method": "version"}\n')["error"]["code"] == -32600
        assert server.request("frobnicate")["error"]["code"] == -32601
        assert server.request("publish", {"files": []})["error"]["code"] == -32602
        assert server.request("publish", {"file": "x"})["error"]["code"] == -32602
        missing = server.request("publish", {"files": [str(files / "missing.txt")]})["error"]
        assert missing["code"] == -32000 and "missing.txt" in missing["message"]

        # What is still published when the server shuts down is closed with it.
        random_file(files / "left-open.txt", 10)
        server.result("publish", {"files": [str(files / "left-open.txt")]})
        assert len(gftp(a, "published")) == 1
        assert server.result("shutdown") == "ok"
        assert server.proc.wait(10) == 0
        assert gftp(a, "published") == []
        assert server.proc.stderr is not None and b"Traceback" not in server.proc.stderr.read()
    finally:
        server.close()


def test_gftp_one_shot_commands(trio, files: Path) -> None:
    a, b, _ = trio
    data = random_file(files / "one-shot.bin", 123_456)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOAM_")}
    env["PYTHONPATH"] = str(REPO)

    def run(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "node.gftp_cli", "--data-dir", str(node.data_dir), *args]
        return subprocess.run(cmd, cwd=files, env=env, capture_output=True, text=True, timeout=60)

    published = run(a, "publish", "--keep", "one-shot.bin")  # a relative path, from the working directory
    assert published.returncode == 0, published.stderr
    url = json.loads(published.stdout)["url"]
    got = run(b, "download", url, str(files / "one-shot-copy.bin"))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["hash"] == sha3(data)
    assert (files / "one-shot-copy.bin").read_bytes() == data
    closed = run(a, "close", url)
    assert closed.returncode == 0 and json.loads(closed.stdout)["status"] == "ok"
    failed = run(b, "download", url, str(files / "again.bin"), "--timeout", "5")
    assert failed.returncode == 1 and "UnknownFileError" in failed.stderr and "Traceback" not in failed.stderr


# ---- the control server answers several requests at once ------------------------------------------


def test_control_server_runs_slow_requests_side_by_side(tmp_path: Path) -> None:
    def slow(request: Any) -> DirectSent:
        time.sleep(1.0)
        return DirectSent("slow")

    def failing(request: Any) -> DirectSent:
        raise NodeError("nothing to report")

    server = ControlServer(tmp_path, {InboxRequest: slow, NetStatusRequest: failing}, "0x" + "00" * 20)
    server.start()
    try:
        client = ControlClient(tmp_path)
        answers: list[Any] = []
        callers = [threading.Thread(target=lambda: answers.append(client.call(InboxRequest(), 5.0))) for _ in range(2)]
        started = time.monotonic()
        for caller in callers:
            caller.start()
        time.sleep(0.1)
        # A quick request is answered while both slow ones still run.
        with pytest.raises(ControlError, match="NodeError: nothing to report"):
            client.call(NetStatusRequest(), 5.0)
        assert time.monotonic() - started < 0.9
        with pytest.raises(ControlError, match="UnknownRequest"):
            client.call(NetCountersRequest(), 5.0)
        for caller in callers:
            caller.join(5.0)
        assert answers == [DirectSent("slow"), DirectSent("slow")]
        assert time.monotonic() - started < 1.8  # side by side, not one after the other
    finally:
        server.stop()
