"""A batch of many tasks with input and output files, across providers, with retries and optional redundancy.

Every input file is sent to a provider (through the `gftp` command and the node), counted
there by the package's `wc` entry point into /output/counts.txt, and that file comes back.

    export YAGNA_APPKEY=... YAGNA_API_URL=... YAGNA_PAYMENT_NETWORK=local
    python examples/batch_files.py --package 'hash:sha3:...:http://...' --data-dir D FILE... [--redundancy 3]

--data-dir is the requestor node's data dir (gftp reaches the node through it); the
package needs the `wc` entry point and `ro:input`, `rw:output` mounts (tests/wasm/wc.c).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from requestor import Golem, Resources, WasmPackage, WorkContext


async def count(ctx: WorkContext, path: Path) -> str:
    out = Path(tempfile.mkdtemp(prefix="loam-batch-")) / "counts.txt"
    script = ctx.script()
    script.send_file(path, "/input/data.txt")
    script.run("wc", "/input/data.txt", "/output/counts.txt")
    script.download_file("/output/counts.txt", out)
    await ctx.run(script)
    return out.read_text().strip()  # "<lines> <words> <bytes>"


async def main(args: argparse.Namespace) -> None:
    files = [Path(f) for f in args.files]
    async with Golem(budget=args.budget, data_dir=args.data_dir, strategy=args.strategy) as golem:
        tasks = golem.execute_tasks(
            count, files, payload=WasmPackage(args.package), resources=Resources(cores=1),
            max_workers=args.workers, redundancy=args.redundancy, timeout_s=120,
        )  # fmt: skip
        async for task in tasks:
            if task.status == "done":
                print(f"{task.data}: {task.result}  (runs on {len(task.providers)} providers, {task.votes} agreeing)")
            else:
                print(f"{task.data}: FAILED: {task.error}")
    print(f"spent {golem.spent} GLM")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--package", required=True)
    parser.add_argument("--data-dir", help="the requestor node's data dir (default $LOAM_DATA_DIR)")
    parser.add_argument("--budget", default="5")
    parser.add_argument("--workers", type=int, default=4, help="providers working at once")
    parser.add_argument("--redundancy", type=int, default=1, help="run each file on k providers, take the majority")
    parser.add_argument("--strategy", choices=["lowest_price", "most_threads"], default="lowest_price")
    asyncio.run(main(parser.parse_args()))
