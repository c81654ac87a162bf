"""The peer launcher and the testnet script, run as a user would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO, free_port

pytestmark = pytest.mark.integration


def _run(*args: str, timeout_s: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=full_env)


def test_testnet_up_status_demo_env_down(tmp_path: Path) -> None:
    net_dir = tmp_path / "net"
    base = free_port(span=4)
    up = _run("scripts/testnet.sh", "up", "--providers", "3", "--base-port", str(base), "--api-base-port",
              str(free_port(span=4)), "--dir", str(net_dir), timeout_s=240)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "node-0's market sees the offers of all 3 provider(s)" in up.stdout, up.stdout + up.stderr
        assert "node-0 funded: 1000 test GLM on erc20-local-tglm" in up.stdout
        status = _run("scripts/testnet.sh", "status", "--dir", str(net_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        for i in range(4):
            assert f"node-{i}" in status.stdout
        demo = _run("scripts/testnet.sh", "demo", "--dir", str(net_dir), timeout_s=240, env={"LOAM_DEMO_TASKS": "6"})
        assert demo.returncode == 0, demo.stdout + demo.stderr
        output = demo.stdout + demo.stderr
        assert "reached all 4 nodes" in output
        # The demo job: demand → agreement → activity → results on one of the providers, paid on the chain.
        assert "approved by" in output and "[3] Ok" in output and "[5] Ok: signed" in output, output
        assert re.search(r"invoice \w+ of [0-9.]+ GLM settled in 0x[0-9a-f]{64}", output), output
        # The batch through the requestor library: every file counted, the invoices paid on the chain.
        counted = re.findall(r"text-(\d+)\.txt: (\d+) (\d+) (\d+)", output)
        assert sorted(int(i) for i, *_ in counted) == list(range(1, 7)), output
        assert all(int(lines) == 3 * int(i) for i, lines, *_ in counted)
        assert "every invoice node-0 received is settled on the chain" in output, output
        # The service on a virtual network, when a provider sells vm (a Docker engine runs).
        if "demo service:" in output:
            assert "HTTP/1.1 200 OK" in output and "hello from a service on a virtual network" in output, output
        # `env` points Golem clients at node-0's REST API; the key it prints works.
        env = _run("scripts/testnet.sh", "env", "--dir", str(net_dir))
        assert env.returncode == 0, env.stderr
        exports = dict(re.findall(r"^export (\w+)=(.*)$", env.stdout, re.M))
        assert exports["YAGNA_PAYMENT_NETWORK"] == "local" and exports["YAGNA_SUBNET"] == "public"
        request = urllib.request.Request(exports["YAGNA_API_URL"] + "/me",
                                         headers={"Authorization": f"Bearer {exports['YAGNA_APPKEY']}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as reply:
            me = json.loads(reply.read())
        assert me["identity"] == json.loads((net_dir / "node-0" / "node.json").read_text())["node_id"]
    finally:
        down = _run("scripts/testnet.sh", "down", "--dir", str(net_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    for i in range(4):
        assert not (net_dir / f"node-{i}" / "node.json").exists()
    assert not (net_dir / "anvil.pid").exists() and not (net_dir / "web.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2")
def test_testnet_in_network_namespaces_cut_and_heal(tmp_path: Path) -> None:
    net_dir = tmp_path / "hosts"
    loam = str(REPO / ".venv" / "bin" / "loam")

    def neighbours_of_node0() -> set[str]:
        out = _run(loam, "net", "status", "--data-dir", str(net_dir / "node-0"), "--json")
        return {n["node_id"] for n in json.loads(out.stdout)["neighbours"]} if out.returncode == 0 else set()

    def wait(check: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.5)
        return False

    env = {"LOAM_TESTNET_NO_VM": "1"}
    up = _run("scripts/testnet.sh", "up", "--hosts", "--providers", "2", "--base-port", str(free_port(span=4)),
              "--dir", str(net_dir), timeout_s=240, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "each in its own network namespace" in up.stdout
        node2 = json.loads((net_dir / "node-2" / "node.json").read_text())["node_id"]
        # Each node listens on its own address on the bridge.
        assert "@10.213.0.12:" in json.loads((net_dir / "node-2" / "node.json").read_text())["contact"]
        assert wait(lambda: node2 in neighbours_of_node0(), 30)
        cut = _run("scripts/testnet.sh", "cut", "node-2", "--dir", str(net_dir))
        assert cut.returncode == 0, cut.stderr
        assert wait(lambda: node2 not in neighbours_of_node0(), 30), "node-0 still links to the node that was cut off"
        heal = _run("scripts/testnet.sh", "heal", "node-2", "--dir", str(net_dir))
        assert heal.returncode == 0, heal.stderr
        assert wait(lambda: node2 in neighbours_of_node0(), 60), "the healed node did not come back"
    finally:
        down = _run("scripts/testnet.sh", "down", "--dir", str(net_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "loam-node-" not in namespaces
    assert subprocess.run(["ip", "link", "show", "loam-br0"], capture_output=True).returncode != 0


def test_launch_peer_start_join_and_stop(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    port = free_port()
    start_a = _run("scripts/launch-peer.sh", "start", "--data-dir", str(a), "--port", str(port), "--quiet")
    try:
        assert start_a.returncode == 0, start_a.stdout + start_a.stderr
        contact = json.loads((a / "node.json").read_text())["contact"]
        start_b = _run("scripts/launch-peer.sh", "start", "--data-dir", str(b), "--no-listen",
                       "--bootstrap", contact, "--quiet")
        assert start_b.returncode == 0, start_b.stdout + start_b.stderr
        node_a = json.loads((a / "node.json").read_text())["node_id"]
        loam = str(REPO / ".venv" / "bin" / "loam")
        for _ in range(50):
            status = json.loads(_run(loam, "net", "status", "--data-dir", str(b), "--json").stdout)
            if any(n["node_id"] == node_a for n in status["neighbours"]):
                break
            subprocess.run(["sleep", "0.2"])
        else:
            pytest.fail("the dial-out-only peer did not link to the first one")
    finally:
        stop_b = _run("scripts/launch-peer.sh", "stop", "--data-dir", str(b))
        stop_a = _run("scripts/launch-peer.sh", "stop", "--data-dir", str(a))
    assert stop_a.returncode == 0 and stop_b.returncode == 0, stop_a.stderr + stop_b.stderr
    assert not (a / "loam.pid").exists() and not (a / "node.json").exists()
