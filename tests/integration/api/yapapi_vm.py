"""Run by test_rest_clients in a venv with yapapi 0.13: a vm task whose image yapapi resolves in an image repository.

yapapi's `vm.repo()` asks the repository (GET /v1/image/info?hash=…&count=true) and puts the
image's link and hash in the demand; the task sends a file, runs a shell in the container and
fetches the output. Arguments: REPOSITORY_URL IMAGE_SHA3 INPUT_FILE OUTPUT_FILE. Prints one JSON line.
"""

import asyncio
import json
import sys
from datetime import timedelta

from yapapi import Golem, Task, WorkContext
from yapapi.payload import vm


async def main(repository_url: str, image_hash: str, input_file: str, output_file: str) -> None:
    payload = await vm.repo(image_hash=image_hash, repository_url=repository_url, min_mem_gib=0.5, min_storage_gib=1.0)

    async def worker(ctx: WorkContext, tasks):
        async for task in tasks:
            script = ctx.new_script(timeout=timedelta(minutes=3))
            script.upload_file(input_file, "/golem/work/data.txt")
            ran = script.run("/bin/sh", "-c", "echo $LOAM_TEST_IMAGE; wc -w < /golem/work/data.txt | tee /golem/work/count.txt")
            script.download_file("/golem/work/count.txt", output_file)
            yield script
            task.accept_result(result=(await ran).stdout)

    async with Golem(budget=1.0, subnet_tag="public", payment_driver="erc20", payment_network="local") as golem:
        results = []
        async for task in golem.execute_tasks(worker, [Task(data=None)], payload=payload, max_workers=1,
                                              timeout=timedelta(minutes=10)):
            results.append(task.result)
    print(json.dumps({"results": results, "payload": str(payload)}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
