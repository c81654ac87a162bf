"""Gossip latency: N real node processes on loopback; time until each item is known by every node.

    python bench/gossip.py --nodes 30 --items 200 --rate 20

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import Testnet, connected, wait_for  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _collect(nodes: list, topic: str, wanted: set[str]) -> dict[str, dict[str, int]]:
    """item id -> {node id: received_ms} for the wanted items."""
    seen: dict[str, dict[str, int]] = {item_id: {} for item_id in wanted}
    for node in nodes:
        for entry in node.items(topic).entries:
            if entry.item_id in seen:
                seen[entry.item_id][node.node_id] = entry.received_ms
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--items", type=int, default=200, help="items to publish while measuring")
    parser.add_argument("--rate", type=float, default=20.0, help="items published per second")
    parser.add_argument("--warmup", type=int, default=10, help="items published before measuring")
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the nodes keep their data (default: a temp dir)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = args.dir or Path(tempfile.mkdtemp(prefix="loam-bench-"))
    net = Testnet(base)
    try:
        t0 = time.monotonic()
        net.add("node-0", fast_timers=False)
        for i in range(1, args.nodes):
            net.add(f"node-{i}", start=False, fast_timers=False).start(wait=False)
        for node in net.nodes[1:]:
            node.wait_ready(timeout_s=120)
        nodes = net.nodes
        wait_for("every node to have two neighbours", lambda: all(len(n.neighbour_ids()) >= 2 for n in nodes), 120, 0.5)
        wait_for("a connected overlay", lambda: connected(nodes), 120, 0.5)
        print(f"{len(nodes)} nodes up and connected in {time.monotonic() - t0:.1f} s", file=sys.stderr)

        payload = b"x" * args.payload_bytes
        warm = {rng.choice(nodes).publish("warmup", payload).item_id for _ in range(args.warmup)}
        wait_for("warm-up items everywhere", lambda: all(warm <= n.item_ids("warmup") for n in nodes), 60, 0.5)
        time.sleep(2.0)
        rss_idle_mb = max(n.rss_kb() for n in nodes) / 1024

        published: dict[str, int] = {}
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        for i in range(args.items):
            next_at += interval
            reply = rng.choice(nodes).publish("bench", payload + i.to_bytes(4, "big"))
            published[reply.item_id] = reply.created_ms
            time.sleep(max(0.0, next_at - time.monotonic()))
        wanted = set(published)

        def complete() -> dict[str, dict[str, int]] | None:
            seen = _collect(nodes, "bench", wanted)
            return seen if all(len(v) == len(nodes) for v in seen.values()) else None

        seen = wait_for("every item on every node", complete, 120, 0.5)
        latencies = [max(seen[i].values()) - published[i] for i in wanted]
        rss_peak_mb = max(n.rss_kb(peak=True) for n in nodes) / 1024
        result = {
            "bench": "gossip",
            "nodes": len(nodes),
            "items": len(latencies),
            "rate_per_s": args.rate,
            "payload_bytes": args.payload_bytes,
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(_percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1),
            "mean_ms": round(statistics.fmean(latencies), 1),
            "rss_mb_idle_max": round(rss_idle_mb, 1),
            "rss_mb_max": round(rss_peak_mb, 1),
        }
        print(f"gossip across {len(nodes)} nodes: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
              f"max {result['max_ms']} ms; idle RSS ≤ {result['rss_mb_idle_max']} MB", file=sys.stderr)
    finally:
        net.stop_all()
    print(json.dumps(result))  # only reached when the run completed


if __name__ == "__main__":
    main()
