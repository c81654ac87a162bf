"""The peer launcher and the testnet script, run as a user would run them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import REPO, free_port

pytestmark = pytest.mark.integration


def _run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def test_testnet_up_status_demo_down(tmp_path: Path) -> None:
    net_dir = tmp_path / "net"
    base = free_port(span=4)
    up = _run("scripts/testnet.sh", "up", "--nodes", "4", "--base-port", str(base), "--api-base-port",
              str(free_port(span=4)), "--dir", str(net_dir))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = _run("scripts/testnet.sh", "status", "--dir", str(net_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        for i in range(4):
            assert f"node-{i}" in status.stdout
        demo = _run("scripts/testnet.sh", "demo", "--dir", str(net_dir))
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "reached all 4 nodes" in demo.stdout + demo.stderr
        # The demo job: demand → agreement → activity → results on one of the providers.
        output = demo.stdout + demo.stderr
        assert "approved by" in output and "[3] Ok" in output and "[5] Ok: signed" in output, output
    finally:
        down = _run("scripts/testnet.sh", "down", "--dir", str(net_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    for i in range(4):
        assert not (net_dir / f"node-{i}" / "node.json").exists()


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
