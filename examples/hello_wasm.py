"""Hello world on wasmtime: one task, one provider, paid from a small budget.

    export YAGNA_APPKEY=$(loam app-key create --data-dir D hello)   # the requestor node's app-key
    export YAGNA_API_URL=http://127.0.0.1:7465                      # its REST API ([api] port)
    export YAGNA_PAYMENT_NETWORK=local                              # the testnet's chain
    python examples/hello_wasm.py --package 'hash:sha3:<sha3-224>:http://127.0.0.1:8080/prog.zip'

The package needs an entry point `hello` (tests/wasm/hello.c; `loam package` builds one).
"""

from __future__ import annotations

import argparse
import asyncio

from requestor import Golem, WasmPackage, WorkContext


async def hello(ctx: WorkContext, name: str) -> str:
    script = ctx.script()
    greeting = script.run("hello", name)
    await ctx.run(script)
    return f"{greeting.stdout.strip()} (from {ctx.provider_name})"


async def main(package: str, budget: str) -> None:
    async with Golem(budget=budget) as golem:
        async for task in golem.execute_tasks(hello, ["world"], payload=WasmPackage(package)):
            print(task.result if task.status == "done" else f"failed: {task.error}")
    print(f"spent {golem.spent} GLM")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="hash:sha3:<sha3-224>:<url> of a WASI package")
    parser.add_argument("--budget", default="1", help="GLM set aside for the run")
    args = parser.parse_args()
    asyncio.run(main(args.package, args.budget))
