"""The metrics collector: a source that does not answer in time costs its metrics for one scrape, never more."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from node.metrics import NodeCollector
from protocol.control import NetStatus

__all__: list[str] = []


class _HungNet(pykka.ThreadingActor):
    """Stands in for a net actor stuck in a long message: it answers only when released."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self._release = release

    def status(self) -> NetStatus:
        self._release.wait(10)
        return NetStatus("0x" + "00" * 20, "n", ("public",), "none", (), "", (), 0, 0, 0.0)

    def counters(self) -> dict[str, int]:
        return {}


class _Market(pykka.ThreadingActor):
    """A market that knows two offers and no demands or agreements."""

    def known_offers(self) -> list[Any]:
        return [object(), object()]

    def known_demands(self) -> list[Any]:
        return []

    def list_agreements(self, state: str | None = None) -> list[Any]:
        return []


@pytest.fixture
def actors() -> Any:
    release = threading.Event()
    net = _HungNet.start(release)
    market = _Market.start()
    yield net.proxy(), market.proxy()
    release.set()
    net.stop()
    market.stop()


def scrape(collector: NodeCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_a_hung_actor_costs_its_metrics_for_one_scrape_and_the_rest_is_served(actors: Any) -> None:
    net, market = actors
    collector = NodeCollector(net=net, market=market, timeout_s=0.2)
    started = time.monotonic()
    text = scrape(collector)
    assert time.monotonic() - started < 2.0
    assert 'loam_scrape_errors{source="net"} 1.0' in text
    assert 'loam_scrape_errors{source="market"} 0.0' in text
    assert "loam_offers_known 2.0" in text
    assert "loam_peers" not in text


def test_payment_totals_become_amounts_by_side_kind_platform_and_status(actors: Any) -> None:
    _, market = actors
    status = {
        "provider": [
            {"kind": "invoice", "platform": "erc20-holesky-tglm", "status": "Settled", "count": 2,
             "amount_wei": "1500000000000000000", "amount_glm": "1.5"},
            {"kind": "debit_note", "platform": "erc20-holesky-tglm", "status": "Accepted", "count": 7,
             "amount_wei": "250000000000000000", "amount_glm": "0.25"},
        ],
        "requestor": [],
        "received_wei": "1500000000000000000",
        "paid_wei": "0",
    }
    collector = NodeCollector(net=market, market=market, payment_status=lambda: status, timeout_s=0.5)
    text = scrape(collector)
    assert 'loam_payment_amount_glm{kind="invoice",platform="erc20-holesky-tglm",side="provider",status="Settled"} 1.5' in text
    assert 'loam_payment_documents{kind="debit_note",platform="erc20-holesky-tglm",side="provider",status="Accepted"} 7.0' in text
    assert "loam_payments_received_glm 1.5" in text and "loam_payments_paid_glm 0.0" in text
    assert 'loam_scrape_errors{source="payment"} 0.0' in text


def test_a_node_without_payments_reports_no_payment_metrics_and_no_error(actors: Any) -> None:
    _, market = actors
    text = scrape(NodeCollector(net=market, market=market, payment_status=lambda: None, timeout_s=0.5))
    assert "loam_payment" not in text
    assert 'loam_scrape_errors{source="payment"} 0.0' in text
