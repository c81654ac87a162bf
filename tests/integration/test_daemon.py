"""The daemon in-process: it starts its actors, and a failed or stopped actor brings it down loudly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from node.control import runtime_file
from node.daemon import EXIT_ACTOR_FAILED, Node
from node.settings import load_settings
from node.storage import ensure_data_dir
from protocol.identity import Identity

pytestmark = pytest.mark.integration


def _node(tmp_path: Path) -> Node:
    data_dir = ensure_data_dir(tmp_path / "node")
    settings = load_settings(
        data_dir, {"net.listen": "tcp://127.0.0.1:0", "actors.health_interval_s": 0.2, "node.name": "t"}, environ={}
    )
    return Node(settings, Identity.generate())


def test_a_clean_stop_exits_zero_and_removes_the_runtime_file(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.start()
    assert runtime_file(node.settings.data_dir).exists()
    node.request_stop("test")
    node.wait()
    assert node.shutdown() == 0
    assert not runtime_file(node.settings.data_dir).exists()


def test_an_actor_that_dies_brings_the_node_down_with_a_failure_code(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.start()
    waiter = threading.Thread(target=node.wait)
    waiter.start()
    # Stop the net actor behind the daemon's back: the health check must notice.
    node.net.actor_ref.stop()
    waiter.join(10)
    assert not waiter.is_alive(), "the daemon kept running with a dead actor"
    assert node.shutdown() == EXIT_ACTOR_FAILED
