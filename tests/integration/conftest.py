"""Fixtures that run real node processes on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.harness import Testnet


@pytest.fixture
def testnet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Testnet]:
    """A Testnet whose nodes are all stopped after the test; logs are printed when it failed."""
    net = Testnet(tmp_path)
    yield net
    net.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for node in net.nodes:
            print(f"\n----- log of {node.name} ({node.node_id}) -----\n{node.log_tail(60)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
