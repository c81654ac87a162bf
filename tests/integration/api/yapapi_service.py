"""Run by test_rest_clients in a venv with yapapi 0.13: a service (start, then a run loop) on one provider.

yapapi's Service API as its service examples use it, without a VPN (yapapi_vpn.py has one).
Arguments: TASK_PACKAGE. Prints one JSON line.
"""

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from yapapi import Golem
from yapapi.payload import Payload
from yapapi.props import inf
from yapapi.props.base import constraint, prop
from yapapi.services import Service, ServiceState

PACKAGE = sys.argv[1]
OUTPUTS: list = []


@dataclass
class WasmPayload(Payload):
    package: str = prop("golem.srv.comp.task_package")
    runtime: str = constraint(inf.INF_RUNTIME_NAME, default="wasmtime")


class Greeter(Service):
    @staticmethod
    async def get_payload():
        return WasmPayload(package=PACKAGE)

    async def run(self):
        for i in range(3):
            script = self._ctx.new_script()
            greeted = script.run("hello", f"round-{i}")
            yield script
            OUTPUTS.append((await greeted).stdout)
        while True:  # then idle until the cluster is stopped
            await asyncio.sleep(1)


async def main() -> None:
    async with Golem(budget=1.0, subnet_tag="public", payment_driver="erc20", payment_network="local") as golem:
        cluster = await golem.run_service(Greeter, num_instances=1, expiration=datetime.now(timezone.utc) + timedelta(minutes=15))
        deadline = asyncio.get_running_loop().time() + 180
        while len(OUTPUTS) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
        states = [s.state.value for s in cluster.instances]
        cluster.stop()
        while any(s.state not in (ServiceState.terminated,) for s in cluster.instances):
            if asyncio.get_running_loop().time() > deadline + 60:
                break
            await asyncio.sleep(0.5)
        final = [s.state.value for s in cluster.instances]
    print(json.dumps({"outputs": OUTPUTS, "states": states, "final": final}))


if __name__ == "__main__":
    asyncio.run(main())
