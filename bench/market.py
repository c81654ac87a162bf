"""Market benchmark: matching a demand against 10k/100k indexed offers, and demand-to-agreement on real nodes.

    .venv/bin/python bench/market.py                  # both parts
    .venv/bin/python bench/market.py --agreements 50  # more network rounds
    .venv/bin/python bench/market.py --skip-network   # the in-process matcher only

Part 1 runs in-process: OfferIndex filled through parse_side with offers built from a few
templates (runtimes, subnets, memory, threads, prices, constraints vary), then the median
time of OfferIndex.match() for a typical demand (vm in the public subnet, >= 4 GiB,
>= 2 threads, linear pricing, cheapest cpu first) and, for comparison, a selective one.

Part 2 starts 1 requestor and 9 provider nodes (real processes on loopback) and measures,
N times, subscribe → first Initial proposal → counter → the provider's Draft →
create + confirm → Approved, all through the control channel, which takes one request at
a time and costs a round trip per call; those round trips are part of the measured path.

Summary to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from actors.market.matching import OfferIndex, Parsed, parse_side  # noqa: E402
from protocol.market import MarketDemand, MarketOffer  # noqa: E402

__all__ = ["build_offers", "typical_demand", "selective_demand", "time_match", "network_rounds"]

RUNTIMES = [("vm", 70), ("wasmtime", 20), ("vm-nvidia", 5), ("automatic", 3), ("outbound-gateway", 2)]
SUBNETS = [("public", 80), ("devnet-beta", 12), ("private-lab", 5), ("testnet-x", 3)]
OFFER_CONSTRAINTS = [
    "(&(golem.node.debug.subnet={subnet})(golem.srv.comp.expiration>0))",
    "(&(golem.node.debug.subnet={subnet}))",
    "(&(golem.srv.comp.expiration>0)(golem.node.debug.subnet={subnet})"
    "(|(golem.com.payment.platform.erc20-polygon-glm.address=*)(golem.com.payment.platform.erc20-holesky-tglm.address=*)))",
    "(&(golem.node.debug.subnet={subnet})(golem.srv.comp.expiration>0)(!(golem.node.id.name=blocked-requestor)))",
    "()",
]
NOW_MS = 1_800_000_000_000


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def build_offers(count: int, seed: int = 7) -> list[MarketOffer]:
    """count offers as providers publish them, with varied runtimes, subnets, hardware and prices."""
    rng = random.Random(seed)
    offers = []
    for i in range(count):
        provider = "0x" + rng.getrandbits(160).to_bytes(20, "big").hex()
        runtime = _pick(rng, RUNTIMES)
        subnet = _pick(rng, SUBNETS)
        threads = rng.choice([1, 2, 4, 8, 16, 32, 64])
        platform = rng.choice(["erc20-polygon-glm", "erc20-holesky-tglm"])
        props: dict[str, Any] = {
            "golem.inf.cpu.architecture": rng.choice(["x86_64", "x86_64", "x86_64", "aarch64"]),
            "golem.inf.cpu.cores": max(1, threads // 2),
            "golem.inf.cpu.threads": threads,
            "golem.inf.mem.gib": rng.choice([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            "golem.inf.storage.gib": float(rng.choice([2, 10, 50, 100, 500])),
            "golem.runtime.name": runtime,
            "golem.runtime.version": f"0.{rng.randint(1, 4)}.{rng.randint(0, 9)}",
            "golem.runtime.capabilities": rng.choice([[], ["vpn"], ["vpn", "inet"], ["inet", "manifest-support"]]),
            "golem.node.id.name": f"provider-{i}",
            "golem.node.debug.subnet": subnet,
            "golem.srv.caps.multi-activity": True,
            "golem.activity.caps.transfer.protocol": ["http", "https", "gftp"],
            "golem.com.scheme": "payu",
            "golem.com.scheme.payu.debit-note.interval-sec?": 120.0,
            "golem.com.scheme.payu.payment-timeout-sec?": 120.0,
            f"golem.com.payment.platform.{platform}.address": provider,
            "golem.com.payment.protocol.version": 3,
            "golem.com.pricing.model": "linear" if rng.random() < 0.97 else "fixed",
            "golem.com.pricing.model.linear.coeffs": [
                round(rng.uniform(0.005, 0.2), 4) / 3600, round(rng.uniform(0.001, 0.05), 4) / 3600, rng.choice([0.0, 0.0, 0.01]),
            ],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }
        constraints = rng.choice(OFFER_CONSTRAINTS).format(subnet=subnet)
        created = NOW_MS - rng.randint(0, 3_000_000)
        expires = created + 3_600_000
        offer_id = MarketOffer.content_id(provider, props, constraints, "", created, expires)
        offers.append(MarketOffer(offer_id, provider, props, constraints, "", created, expires))
    return offers


def _demand(constraints: str, rank: str) -> Parsed:
    props = {
        "golem.node.debug.subnet": "public",
        "golem.srv.comp.expiration": NOW_MS + 3_600_000,
        "golem.com.payment.platform.erc20-holesky-tglm.address": "0x" + "ab" * 20,
        "golem.com.payment.platform.erc20-polygon-glm.address": "0x" + "ab" * 20,
        "golem.node.id.name": "requestor",
        "golem.srv.comp.task_package": "hash:sha3:0123abcd:http://registry/image",
    }
    requestor = "0x" + "ab" * 20
    demand_id = MarketDemand.content_id(requestor, props, constraints, rank, NOW_MS, NOW_MS + 3_600_000)
    return parse_side(MarketDemand(demand_id, requestor, props, constraints, rank, NOW_MS, NOW_MS + 3_600_000))


def typical_demand() -> Parsed:
    """What yapapi sends for a vm task: runtime, subnet, memory, threads, pricing; cheapest cpu first."""
    return _demand(
        "(&(golem.runtime.name=vm)(golem.node.debug.subnet=public)(golem.inf.mem.gib>=4)"
        "(golem.inf.cpu.threads>=2)(golem.com.pricing.model=linear))",
        "-golem.com.pricing.model.linear.coeffs[0]",
    )


def selective_demand() -> Parsed:
    """A demand for a rare runtime in a small subnet (the index leaves few candidates)."""
    return _demand(
        "(&(golem.runtime.name=vm-nvidia)(golem.node.debug.subnet=devnet-beta)(golem.inf.mem.gib>=8))",
        "-golem.com.pricing.model.linear.coeffs[0]",
    )


def time_match(index: OfferIndex, demand: Parsed, runs: int) -> tuple[float, int]:
    """Median ms of index.match(demand) over runs (after two warm-up runs), and the number matched."""
    for _ in range(2):
        matched = index.match(demand)
    times = []
    gc.disable()
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            matched = index.match(demand)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        gc.enable()
    return statistics.median(times), len(matched)


def matcher_bench(sizes: list[int], runs: int) -> dict[str, Any]:
    """Part 1: index build and match times per index size."""
    out: dict[str, Any] = {}
    for n in sizes:
        offers = build_offers(n)
        index = OfferIndex(max_offers=max(200_000, n))
        t0 = time.perf_counter()
        for offer in offers:
            index.add(parse_side(offer))
        build_s = time.perf_counter() - t0
        typical_ms, typical_n = time_match(index, typical_demand(), runs)
        candidates = len(list(index.candidates(typical_demand())))
        selective_ms, selective_n = time_match(index, selective_demand(), runs)
        label = f"{n // 1000}k"
        out[label] = {
            "offers": n, "build_s": build_s, "typical_ms": typical_ms, "typical_matched": typical_n,
            "typical_candidates": candidates, "selective_ms": selective_ms, "selective_matched": selective_n,
        }
        print(
            f"match {label:>5}: index built in {build_s:.2f} s; typical demand {typical_ms:.1f} ms median "
            f"({candidates} candidates after the index, {typical_n} matched); "
            f"selective demand {selective_ms:.2f} ms ({selective_n} matched)",
            file=sys.stderr,
        )
    return out


# -- part 2: the network -----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def network_rounds(providers: int, agreements: int, warmup: int) -> dict[str, Any]:
    """Part 2: a requestor and `providers` provider nodes; times of `agreements` rounds of subscribe → Approved."""
    from protocol.control import NetStatusRequest
    from tests.integration.harness import Testnet, market_call, wait_for

    base = Path(tempfile.mkdtemp(prefix="loam-bench-market-"))
    net = Testnet(base)
    try:
        requestor = net.add("requestor")
        nodes = []
        for i in range(providers):
            env = {
                "LOAM_PROVIDER__ENABLED": "true",
                "LOAM_PROVIDER__RUNTIME": "wasmtime" if i % 3 == 2 else "vm",
                "LOAM_PROVIDER__CPU_PER_HOUR": f"{0.01 + 0.005 * i:.3f}",
                "LOAM_PROVIDER__MEMORY_GIB": str(2 ** (1 + i % 4)),
                "LOAM_PROVIDER__MAX_AGREEMENTS": "100000",
            }
            nodes.append(net.add(f"provider-{i}", start=False, env=env))
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        wait_for(
            "every offer on the requestor",
            lambda: len({o["provider_id"] for o in requestor.market("known_offers")}) >= providers,
            30,
        )

        def call(method: str, **args: Any) -> Any:
            return market_call(requestor, method, args)

        def next_proposal(sub: str, state: str) -> dict[str, Any]:
            """The first proposal in a state; others (the lower-ranked Initial ones) are dropped."""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for event in call("collect", sub_id=sub, max_events=100, timeout_s=2.0):
                    if event["type"] != "ProposalEvent":
                        raise RuntimeError(f"unexpected event {event}")
                    if event["proposal"]["state"] == state:
                        return event["proposal"]
            raise RuntimeError(f"no {state} proposal within 10 s")

        constraints = "(&(golem.runtime.name=vm)(golem.inf.mem.gib>=2))"
        rank = "-golem.com.pricing.model.linear.coeffs[0]"
        step_names = ("subscribe", "initial", "counter", "draft", "create", "confirm", "approved")
        steps: dict[str, list[float]] = {k: [] for k in step_names}
        totals: list[float] = []
        for i in range(warmup + agreements):
            props = {
                "golem.node.debug.subnet": "public",
                "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000,
                "golem.com.payment.platform.erc20-holesky-tglm.address": requestor.node_id,
            }
            marks = [time.perf_counter()]
            sub = call("subscribe_demand", properties=props, constraints=constraints, rank=rank)
            marks.append(time.perf_counter())
            initial = next_proposal(sub, "Initial")
            marks.append(time.perf_counter())
            call("counter_proposal", sub_id=sub, proposal_id=initial["proposal_id"], properties=props, constraints=constraints)
            marks.append(time.perf_counter())
            draft = next_proposal(sub, "Draft")
            marks.append(time.perf_counter())
            aid = call("create_agreement", proposal_id=draft["proposal_id"], valid_to_ms=int(time.time() * 1000) + 600_000)
            marks.append(time.perf_counter())
            call("confirm_agreement", agreement_id=aid)
            marks.append(time.perf_counter())
            state = call("wait_agreement", agreement_id=aid, timeout_s=10.0)
            marks.append(time.perf_counter())
            if state != "Approved":
                raise RuntimeError(f"agreement {aid} ended {state}")
            call("terminate_agreement", agreement_id=aid, reason={"message": "bench"})
            call("unsubscribe", sub_id=sub)
            if i >= warmup:
                totals.append((marks[-1] - marks[0]) * 1000)
                for name, a, b in zip(steps, marks, marks[1:]):
                    steps[name].append((b - a) * 1000)

        # What one control round trip costs, on its own.
        rtts = []
        for _ in range(50):
            t0 = time.perf_counter()
            requestor.call(NetStatusRequest())
            rtts.append((time.perf_counter() - t0) * 1000)
        noop = []
        for _ in range(50):
            t0 = time.perf_counter()
            requestor.market("subscriptions")
            noop.append((time.perf_counter() - t0) * 1000)
        return {
            "totals": totals,
            "steps": {k: statistics.median(v) for k, v in steps.items()},
            "steps_max": {k: max(v) for k, v in steps.items()},
            "rtt_ms": statistics.median(rtts),
            "market_call_ms": statistics.median(noop),
        }
    finally:
        net.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed match() runs per index size")
    parser.add_argument("--providers", type=int, default=9)
    parser.add_argument("--agreements", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="untimed network rounds first")
    parser.add_argument("--skip-network", action="store_true")
    args = parser.parse_args(argv)

    matcher = matcher_bench([10_000, 100_000], args.runs)
    result: dict[str, Any] = {
        "bench": "market",
        "offers_10k": matcher["10k"]["offers"],
        "match_10k_ms": round(matcher["10k"]["typical_ms"], 2),
        "match_100k_ms": round(matcher["100k"]["typical_ms"], 2),
        "match_selective_10k_ms": round(matcher["10k"]["selective_ms"], 3),
        "match_selective_100k_ms": round(matcher["100k"]["selective_ms"], 3),
    }
    if not args.skip_network:
        net = network_rounds(args.providers, args.agreements, args.warmup)
        totals = net["totals"]
        p50, p99 = statistics.median(totals), _percentile(totals, 0.99)
        print(
            f"demand → Approved over {len(totals)} agreements with {args.providers + 1} nodes: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(totals):.1f} ms",
            file=sys.stderr,
        )
        print(
            "  median per step (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in net["steps"].items()),
            file=sys.stderr,
        )
        print("  max per step (ms):    " + ", ".join(f"{k} {v:.1f}" for k, v in net["steps_max"].items()), file=sys.stderr)
        print(
            f"  a control round trip costs {net['rtt_ms']:.2f} ms (net status), "
            f"{net['market_call_ms']:.2f} ms (a market call); the path makes 7 calls",
            file=sys.stderr,
        )
        result.update(
            nodes=args.providers + 1,
            agreements=len(totals),
            demand_to_agreement_ms_p50=round(p50, 1),
            demand_to_agreement_ms_p99=round(p99, 1),
            control_call_ms=round(net["market_call_ms"], 2),
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
