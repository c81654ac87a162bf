"""Run by test_rest_clients in a venv with yapapi 0.13: a task that sends a file, runs a program, fetches the output.

Only yapapi's public API, as its examples use it; the node is found through YAGNA_API_URL
and YAGNA_APPKEY. Arguments: TASK_PACKAGE INPUT_FILE OUTPUT_FILE [poll|stream [LINGER_S]];
with `stream`, yapapi follows each batch as server-sent events instead of polling; the
activity is kept LINGER_S seconds after its batch. Prints one JSON line.
"""

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import timedelta

from yapapi import Golem, Task, WorkContext, events
from yapapi.payload import Payload
from yapapi.props import inf
from yapapi.props.base import constraint, prop


@dataclass
class WasmPayload(Payload):
    package: str = prop("golem.srv.comp.task_package")
    runtime: str = constraint(inf.INF_RUNTIME_NAME, default="wasmtime")


async def main(package: str, input_file: str, output_file: str, mode: str = "poll", linger_s: str = "0") -> None:
    streamed: list = []

    async def worker(ctx: WorkContext, tasks):
        async for task in tasks:
            script = ctx.new_script(timeout=timedelta(minutes=2))
            script.upload_file(input_file, "/input/data.txt")
            counted = script.run("wc", "/input/data.txt", "/output/counts.txt")
            greeted = script.run("hello", task.data)
            script.download_file("/output/counts.txt", output_file)
            yield script
            # Keep the activity a few seconds: the provider sends debit notes, which yapapi accepts.
            await asyncio.sleep(float(linger_s))
            task.accept_result(result={"wc": (await counted).stdout, "hello": (await greeted).stdout})

    async with Golem(
        budget=1.0, subnet_tag="public", payment_driver="erc20", payment_network="local", stream_output=mode == "stream"
    ) as golem:
        golem.add_event_consumer(lambda e: streamed.append(e.output), [events.CommandStdOut])
        results = []
        tasks = [Task(data="yapapi")]
        async for task in golem.execute_tasks(worker, tasks, payload=WasmPayload(package=package), max_workers=1,
                                              timeout=timedelta(minutes=10)):
            results.append(task.result)
    print(json.dumps({"results": results, "streamed": "".join(streamed)}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
