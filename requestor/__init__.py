"""Loam's Python requestor library: an asyncio client of a node's Golem REST API.

    from requestor import Golem, WasmPackage, Resources

    async def hello(ctx, name):
        script = ctx.script()
        out = script.run("hello", name)
        await ctx.run(script)
        return out.stdout

    async with Golem(budget=1, payment_network="local") as golem:        # YAGNA_APPKEY, YAGNA_API_URL
        async for task in golem.execute_tasks(hello, ["a", "b"], payload=WasmPackage(pkg)):
            print(task.result)
"""

from __future__ import annotations

from requestor.activity import Activity, RuntimeEvent
from requestor.errors import (
    ActivityError,
    ApiError,
    CommandError,
    ConfigurationError,
    NoMajorityError,
    NoProviderError,
    RequestorError,
    TaskFailedError,
)
from requestor.executor import WorkContext, execute_tasks
from requestor.network import Network
from requestor.payload import Payload, Resources, VmImage, WasmPackage, build_demand, resolve_image, task_package_for
from requestor.scheduling import Task, TaskBook, majority
from requestor.script import Command, CommandResult, Script
from requestor.services import Service
from requestor.session import Agreement, Demand, Golem
from requestor.strategy import Custom, LowestPrice, MostThreads, Prices, ProviderOffer, Strategy
from requestor.tunnel import TunnelWriter

__all__ = [
    "Golem", "Agreement", "Demand", "Activity", "RuntimeEvent", "WorkContext", "execute_tasks", "Service",
    "Network", "TunnelWriter",
    "Payload", "WasmPackage", "VmImage", "Resources", "build_demand", "task_package_for", "resolve_image",
    "Script", "Command", "CommandResult", "Task", "TaskBook", "majority",
    "Strategy", "LowestPrice", "MostThreads", "Custom", "Prices", "ProviderOffer",
    "RequestorError", "ConfigurationError", "ApiError", "CommandError", "ActivityError", "NoProviderError",
    "TaskFailedError", "NoMajorityError",
]
