"""Run by test_rest_clients in a venv with golem-core 0.7: a vm activity from a GVMI image, a file in and out, the invoice paid.

golem-core's RepositoryVmPayload with the image's hash and link (as the image repository
answers them: golem-core finds its own repository through DNS, which a testnet has not).
Arguments: IMAGE_SHA3 IMAGE_URL INPUT_FILE OUTPUT_FILE. Prints one JSON line.
"""

import asyncio
import json
import sys

from golem.node import GolemNode
from golem.payload import RepositoryVmPayload
from golem.resources import Deploy, DownloadFile, Run, SendFile, Start
from golem_core_task import accept_invoice, negotiate


async def main(image_hash: str, image_url: str, input_file: str, output_file: str) -> None:
    payload = RepositoryVmPayload(image_hash=image_hash, image_url=image_url, min_storage_gib=1.0)
    async with GolemNode() as golem:
        allocation = await golem.create_allocation(1.0, network="local")
        demand = await golem.create_demand(payload, allocations=[allocation], subnet="public")
        agreement = await asyncio.wait_for(negotiate(demand), 120)
        activity = await agreement.create_activity()
        batch = await activity.execute_commands(
            Deploy(),
            Start(),
            SendFile(input_file, "/golem/work/data.txt"),
            Run("echo $LOAM_TEST_IMAGE; wc -w < /golem/work/data.txt | tee /golem/work/count.txt"),
            DownloadFile("/golem/work/count.txt", output_file),
        )
        results = await batch.wait(timeout=180)
        await activity.destroy()
        await agreement.terminate()
        await accept_invoice(agreement, allocation)
        print(json.dumps({"results": [{"index": r.index, "result": r.result, "stdout": r.stdout} for r in results]}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
