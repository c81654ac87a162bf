"""Run by test_rest_clients in a venv with golem-core 0.7: demand to agreement to activity, a file in and out, the invoice paid.

Only golem-core's public API (GolemNode and its resources, as in its core example); the node
is found through YAGNA_API_URL and YAGNA_APPKEY. Arguments: TASK_PACKAGE INPUT_FILE OUTPUT_FILE.
Prints one JSON line.
"""

import asyncio
import json
import sys
from dataclasses import dataclass

from golem.node import GolemNode
from golem.payload import Payload, constraint, prop
from golem.resources import Deploy, DownloadFile, Run, SendFile, Start


@dataclass
class WasmPayload(Payload):
    package: str = prop("golem.srv.comp.task_package")
    runtime: str = constraint("golem.runtime.name", default="wasmtime")


async def negotiate(demand):
    async for proposal in demand.initial_proposals():
        ours = await proposal.respond()
        try:
            theirs = await asyncio.wait_for(ours.responses().__anext__(), 30)
        except (asyncio.TimeoutError, StopAsyncIteration):
            continue
        agreement = await theirs.create_agreement()
        await agreement.confirm()
        if await agreement.wait_for_approval():
            return agreement


async def accept_invoice(agreement, allocation):
    """Wait for the agreement's invoice (up to a minute) and accept it in full from the allocation; returns it."""
    for _ in range(120):
        if agreement.invoice is not None:
            break
        await asyncio.sleep(0.5)
    invoice = agreement.invoice
    assert invoice is not None, "no invoice arrived"
    await invoice.accept_full(allocation)
    return invoice


async def main(package: str, input_file: str, output_file: str) -> None:
    async with GolemNode() as golem:
        allocation = await golem.create_allocation(1.0, network="local")
        demand = await golem.create_demand(WasmPayload(package=package), allocations=[allocation], subnet="public")
        agreement = await asyncio.wait_for(negotiate(demand), 120)
        activity = await agreement.create_activity()
        batch = await activity.execute_commands(
            Deploy(),
            Start(),
            SendFile(input_file, "/input/data.txt"),
            Run(["wc", "/input/data.txt", "/output/counts.txt"]),
            Run(["hello", "golem-core"]),
            DownloadFile("/output/counts.txt", output_file),
        )
        results = await batch.wait(timeout=120)
        state = (await activity.get_state()).state
        await activity.destroy()
        await agreement.terminate()
        invoice = await accept_invoice(agreement, allocation)
        print(json.dumps({
            "state": state,
            "results": [{"index": r.index, "result": r.result, "stdout": r.stdout} for r in results],
            "invoice": invoice.id,
        }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
