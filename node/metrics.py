"""The node's Prometheus endpoint: a collector that asks the actors on each scrape, served over HTTP.

Nothing is sampled in the background and no actor knows about metrics: each scrape asks
the net, market, activity and provider actors (and the payment ledger, when the node runs
one) with a short timeout. An actor that does not answer in time costs its metrics for
that scrape only, counted in `loam_scrape_errors`; it is never blocked or waited on longer.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["NodeCollector", "MetricsServer", "SCRAPE_TIMEOUT_S"]

# A scrape should answer within Prometheus's default 10 s timeout even if several actors hang.
SCRAPE_TIMEOUT_S = 2.0


class NodeCollector:
    """Reads one node's numbers from its actors when Prometheus scrapes.

    `payment_status` returns the payment ledger's totals by document status, or raises when
    the node has no payment actor; it is called through the node's control targets so the
    collector does not depend on how payments are wired.
    """

    def __init__(
        self,
        *,
        net: Any,
        market: Any,
        activity: Any = None,
        provider: Any = None,
        payment_status: Callable[[], Any] | None = None,
        timeout_s: float = SCRAPE_TIMEOUT_S,
    ) -> None:
        self._net = net
        self._market = market
        self._activity = activity
        self._provider = provider
        self._payment_status = payment_status
        self._timeout_s = timeout_s
        self._log = structlog.get_logger().bind(actor="metrics")

    def describe(self) -> list[Metric]:
        # Without describe() the registry would call collect() at registration, asking actors early.
        return []

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily("loam_scrape_errors", "Sources that did not answer this scrape in time", labels=["source"])
        for source, produce in (
            ("net", self._net_metrics),
            ("market", self._market_metrics),
            ("activity", self._activity_metrics),
            ("provider", self._provider_metrics),
            ("payment", self._payment_metrics),
        ):
            try:
                yield from produce()
                errors.add_metric([source], 0)
            except Exception as exc:  # noqa: BLE001 - one slow or absent source must not fail the scrape
                self._log.debug("metrics_source_failed", source=source, error=repr(exc))
                errors.add_metric([source], 1)
        yield errors

    def _ask(self, future: Any) -> Any:
        return future.get(timeout=self._timeout_s)

    def _net_metrics(self) -> Iterator[Metric]:
        status = self._ask(self._net.status())
        counters = self._ask(self._net.counters())
        links = GaugeMetricFamily("loam_peers", "Active links to other nodes", labels=["role"])
        by_role = Counter(n.role for n in status.neighbours)
        for role in ("neighbour", "direct"):
            links.add_metric([role], by_role.get(role, 0))
        yield links
        yield GaugeMetricFamily("loam_known_peers", "Peers known but not necessarily linked", value=status.known_peers)
        yield GaugeMetricFamily("loam_gossip_items", "Live gossip items held", value=status.gossip_items)
        yield GaugeMetricFamily("loam_uptime_seconds", "Seconds since the node started", value=status.uptime_s)
        for name in ("frames_in", "frames_out"):
            yield CounterMetricFamily(
                f"loam_net_{name}", f"Frames {'received' if name.endswith('in') else 'sent'} over the overlay",
                value=counters.get(name, 0),
            )
        events = CounterMetricFamily("loam_net_events", "The network actor's event counters by name", labels=["event"])
        for name, value in sorted(counters.items()):
            events.add_metric([name], value)
        yield events

    def _market_metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("loam_offers_known", "Offers of other nodes heard", value=len(self._ask(self._market.known_offers())))
        yield GaugeMetricFamily("loam_demands_known", "Demands of other nodes heard", value=len(self._ask(self._market.known_demands())))
        agreements = GaugeMetricFamily("loam_agreements", "Agreements this node is party to", labels=["role", "state"])
        for (role, state), count in sorted(Counter((r.role, r.state) for r in self._ask(self._market.list_agreements())).items()):
            agreements.add_metric([role, state], count)
        yield agreements

    def _activity_metrics(self) -> Iterator[Metric]:
        if self._activity is None:
            return
        activities = GaugeMetricFamily("loam_activities", "Activities by side and state", labels=["side", "state"])
        provided = Counter(a["state"] for a in self._ask(self._activity.running()))
        for state, count in sorted(provided.items()):
            activities.add_metric(["provider", state], count)
        requested = Counter(v.state for v in self._ask(self._activity.activities()))
        for state, count in sorted(requested.items()):
            activities.add_metric(["requestor", state], count)
        yield activities
        used = GaugeMetricFamily("loam_resources_used", "Resources claimed by running activities", labels=["resource"])
        limit = GaugeMetricFamily("loam_resources_limit", "Resources all activities together may use", labels=["resource"])
        for name, values in self._ask(self._activity.resources()).items():
            used.add_metric([name], values["used"])
            limit.add_metric([name], values["limit"])
        yield used
        yield limit

    def _provider_metrics(self) -> Iterator[Metric]:
        if self._provider is None:
            return
        offers = self._ask(self._provider.offers())
        published = GaugeMetricFamily("loam_provider_offers", "This node's own offers published, by runtime", labels=["runtime"])
        for runtime, count in sorted(Counter(o["runtime"] for o in offers if o["offer_id"]).items()):
            published.add_metric([runtime], count)
        yield published

    def _payment_metrics(self) -> Iterator[Metric]:
        if self._payment_status is None:
            return
        status = self._payment_status()
        if status is None:
            return  # the node runs no payment ledger
        labels = ["side", "kind", "platform", "status"]
        amounts = GaugeMetricFamily("loam_payment_amount_glm", "Amounts of payment documents by status, in GLM", labels=labels)
        counts = GaugeMetricFamily("loam_payment_documents", "Payment documents by status", labels=labels)
        for side in ("provider", "requestor"):
            for row in status.get(side, []):
                key = [side, str(row["kind"]), str(row["platform"]), str(row["status"])]
                amounts.add_metric(key, _glm(row["amount_wei"]))
                counts.add_metric(key, row["count"])
        yield amounts
        yield counts
        for key, what in (("received_wei", "received on the chain"), ("paid_wei", "paid and confirmed on the chain")):
            if key in status:
                yield GaugeMetricFamily(f"loam_payments_{key[:-4]}_glm", f"GLM {what}", value=_glm(status[key]))


def _glm(amount_wei: Any) -> float:
    """Wei (an int or a decimal string) as GLM, for a gauge (floats are fine for monitoring)."""
    return int(amount_wei) / 1e18


class MetricsServer:
    """Serves /metrics for one collector on [metrics] host and port (0 = any free port)."""

    def __init__(self, settings: Settings, collector: NodeCollector) -> None:
        self._host = settings.metrics.host
        self._port = settings.metrics.port
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(collector)  # type: ignore[arg-type]
        self._server: Any = None
        self._thread: Any = None
        self.port: int | None = None

    def start(self) -> int:
        """Start serving in a daemon thread; returns the port.

        Raises:
            OSError: the address cannot be bound (for example, the port is taken).
        """
        self._server, self._thread = start_http_server(self._port, self._host, self._registry)
        self.port = int(self._server.server_address[1])
        return self.port

    @property
    def url(self) -> str:
        """Where the metrics are."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
