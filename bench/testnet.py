"""Testnet benchmark: `scripts/testnet.sh up` until every offer is visible, then paid demo jobs end to end.

    .venv/bin/python bench/testnet.py                    # 3 providers, 6 tasks
    .venv/bin/python bench/testnet.py --providers 5 --tasks 20

Runs the real script in a temporary directory on free ports (a requestor and N providers,
anvil with the contracts, the demo files), times `up` (the script returns once node-0's
market sees every provider's offer), then runs `--tasks` paid jobs through node-0 (the
same `loam run` path as the demo: demand, agreement, activity with the demo's WASI
programs, results, invoice, payment), `--parallel` at a time, and stops it with `down`.

- up_s: `up` until all offers are visible (the script's own steps are in up_steps_ms)
- first_agreement_ms: from the first job's demand to its first approved agreement
- demo_s: all jobs from the first demand to the last job's results
- tasks_per_s: jobs finished per second over demo_s
- paid_s: from the last job's results until every invoice is settled on the chain

Summary to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from node.quickrun import run_script  # noqa: E402
from protocol.control import ControlCall  # noqa: E402
from tests.integration.harness import free_port  # noqa: E402

SCRIPT = [
    {"deploy": {}},
    {"start": {}},
    {"run": {"entry_point": "hello", "args": ["bench"]}},
]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _testnet(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "testnet.sh"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loam-bench-testnet-"))
    net_dir = work / "net"
    base, api_base = free_port(span=args.providers + 1), free_port(span=args.providers + 1)
    os.environ.setdefault("LOAM_TESTNET_NO_VM", "1")  # time the wasmtime providers the demo uses
    try:
        t0 = time.monotonic()
        up = _testnet("up", "--providers", str(args.providers), "--base-port", str(base), "--api-base-port",
                      str(api_base), "--dir", str(net_dir))  # fmt: skip
        up_s = time.monotonic() - t0
        if up.returncode != 0:
            _say(up.stdout + up.stderr)
            return 1
        steps = dict(line.split() for line in (net_dir / "up-timings").read_text().splitlines() if line.strip())
        _say(f"up: {up_s:.1f} s ({', '.join(f'{k} {v} ms' for k, v in steps.items())})")
        node0 = net_dir / "node-0"
        package = (net_dir / "demo-package").read_text().strip()
        first_agreement: list[float] = []
        lock = threading.Lock()

        def job(i: int) -> tuple[list[dict[str, Any]], str]:
            started = time.monotonic()
            agreement: list[str] = []

            def say(text: str) -> None:
                if text.startswith("agreement ") and "approved by" in text:
                    agreement.append(text.split()[1])
                    with lock:
                        first_agreement.append(time.monotonic() - started)

            results = run_script(node0, "wasmtime", package, SCRIPT, timeout_s=120, budget_glm="1", say=say)
            return results, agreement[0] if agreement else ""

        t_demo = time.monotonic()
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            done = list(pool.map(job, range(args.tasks)))
        demo_s = time.monotonic() - t_demo
        ok = sum(1 for results, _ in done if results and all(r["result"] == "Ok" for r in results))
        _say(f"demo: {ok}/{args.tasks} jobs ok in {demo_s:.1f} s")

        from node.control import ControlClient

        client = ControlClient(node0)
        agreements = {a for _, a in done if a}
        t_pay = time.monotonic()
        deadline = t_pay + 180
        settled = 0
        while time.monotonic() < deadline:
            invoices = client.call(ControlCall("payment", "documents", {"kind": "invoice"}), timeout_s=20).value
            settled = sum(1 for d in invoices if d["status"] == "Settled" and any(d["agreement_id"].startswith(a) for a in agreements))
            if settled >= len(agreements):
                break
            time.sleep(0.5)
        paid_s = time.monotonic() - t_pay
        _say(f"paid: {settled}/{len(agreements)} invoices settled {paid_s:.1f} s after the last results")
        print(json.dumps({
            "bench": "testnet", "providers": args.providers, "tasks": args.tasks, "parallel": args.parallel,
            "up_s": round(up_s, 2), "up_steps_ms": {k: int(v) for k, v in steps.items()},
            "first_agreement_ms": round(min(first_agreement) * 1000) if first_agreement else None,
            "demo_s": round(demo_s, 2), "tasks_ok": ok, "tasks_per_s": round(ok / demo_s, 3) if demo_s else 0.0,
            "paid_s": round(paid_s, 2), "invoices_settled": settled, "cpus": os.cpu_count(),
        }))  # fmt: skip
        return 0 if ok == args.tasks and settled >= len(agreements) else 1
    finally:
        _testnet("down", "--dir", str(net_dir), timeout_s=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
