"""A long-lived service: one activity kept on a provider, commands run on demand with streamed output.

    export YAGNA_APPKEY=... YAGNA_API_URL=... YAGNA_PAYMENT_NETWORK=local
    python examples/service.py --package 'hash:sha3:...:http://...'
    > alice                 # each line typed runs `hello <line>` in the service; empty line or Ctrl-D stops it

If the provider fails, the service moves to another one (`restart`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from requestor import ActivityError, CommandError, Golem, RuntimeEvent, WasmPackage


def show(event: RuntimeEvent) -> None:
    if event.kind in ("stdout", "stderr"):
        print(f"  [{event.kind}] {event.text}", end="" if event.text.endswith("\n") else "\n")


async def main(package: str, budget: str) -> None:
    async with Golem(budget=budget) as golem:
        service = await golem.run_service(WasmPackage(package))
        print(f"service running on {service.agreement.offer.name if service.agreement else '?'}")
        async with service:
            while True:
                line = (await asyncio.to_thread(sys.stdin.readline)).strip()
                if not line:
                    break
                try:
                    await service.exec("hello", line, stream=True, on_event=show)
                except CommandError as exc:
                    print(f"  command failed: {exc}")
                except ActivityError as exc:
                    print(f"  the provider failed ({exc}); moving the service elsewhere")
                    await service.restart()
        print("service stopped")
    print(f"spent {golem.spent} GLM")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--budget", default="1")
    args = parser.parse_args()
    asyncio.run(main(args.package, args.budget))
