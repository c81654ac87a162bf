"""Long-lived services: one activity kept running on a provider, commands run on demand, stopped on request.

    async with await golem.run_service(WasmPackage(pkg)) as service:
        out = await service.exec("hello", "world")
        print(out.stdout)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from requestor.activity import Activity, RuntimeEvent
from requestor.errors import ConfigurationError, RequestorError
from requestor.executor import WorkContext
from requestor.payload import Payload, Resources
from requestor.script import Command, CommandResult, Script

if TYPE_CHECKING:
    from requestor.session import Agreement, Demand, Golem

__all__ = ["Service"]


class Service:
    """A service on one provider. `restart()` moves it to another provider (the failed one is avoided)."""

    def __init__(
        self, golem: Golem, payload: Payload, *, resources: Resources | None = None,
        on_start: Callable[[WorkContext], Awaitable[None]] | None = None, provider_timeout_s: float = 120.0,
    ) -> None:  # fmt: skip
        if not isinstance(payload, Payload):
            raise ConfigurationError(f"payload must be a Payload (WasmPackage(...) or VmImage(...)), not {type(payload).__name__}")
        if on_start is not None and not callable(on_start):
            raise ConfigurationError("on_start must be an async function (ctx) -> None")
        self._golem = golem
        self._payload = payload
        self._resources = resources
        self._on_start = on_start
        self._provider_timeout_s = provider_timeout_s
        self._demand: Demand | None = None
        self.agreement: Agreement | None = None
        self.activity: Activity | None = None
        self.providers: list[str] = []  # every provider it ran on, in order

    @property
    def running(self) -> bool:
        return self.activity is not None

    @property
    def provider_id(self) -> str:
        if self.agreement is None:
            raise RequestorError("the service is not running")
        return self.agreement.provider_id

    async def __aenter__(self) -> Service:
        if not self.running:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Agree with a provider, start an activity and run on_start.

        Raises:
            NoProviderError, ActivityError, CommandError, ApiError.
        """
        if self._demand is None:
            self._demand = await self._golem.demand(self._payload, self._resources)
        while True:
            agreement = await self._demand.acquire(set(self.providers), self._provider_timeout_s)
            self.providers.append(agreement.provider_id)
            try:
                activity = await self._golem.start_activity(agreement)
                if self._on_start is not None:
                    await self._on_start(WorkContext(activity, None, 300.0))
            except RequestorError as exc:
                self._golem._log.warning("service_start_failed", provider=agreement.offer.name, error=str(exc))
                await self._golem.terminate(agreement, f"the service did not start: {exc}", failed=True)
                continue
            self.agreement, self.activity = agreement, activity
            return

    async def run(
        self, script: Script, *, timeout_s: float = 300.0, on_event: Callable[[RuntimeEvent], None] | None = None
    ) -> list[CommandResult]:
        """Run a script in the service's activity."""
        if self.activity is None:
            raise RequestorError("the service is not running: start() it first")
        return await self.activity.run(script, timeout_s=timeout_s, on_event=on_event)

    async def exec(self, entry_point: str, *args: str, stream: bool = False, timeout_s: float = 300.0,
                   on_event: Callable[[RuntimeEvent], None] | None = None) -> Command:
        """Run one command; the command, with its output."""
        script = Script()
        command = script.run(entry_point, *args, stream=stream)
        await self.run(script, timeout_s=timeout_s, on_event=on_event)
        return command

    async def restart(self) -> None:
        """Move to another provider: the current agreement ends as failed."""
        await self._end(failed=True)
        await self.start()

    async def stop(self) -> None:
        """End the activity and the agreement, and withdraw the demand (repeats are no-ops)."""
        await self._end(failed=False)
        if self._demand is not None:
            await self._demand.stop()
            self._golem.demands_done(self._demand)
            self._demand = None

    async def _end(self, *, failed: bool) -> None:
        activity, agreement = self.activity, self.agreement
        self.activity = self.agreement = None
        if activity is not None:
            await activity.destroy()
        if agreement is not None:
            await self._golem.terminate(agreement, "the service failed" if failed else "the service stopped", failed=failed)

    def __repr__(self) -> str:
        where = self.agreement.offer.name if self.agreement else "nowhere"
        return f"Service({'running' if self.running else 'stopped'} on {where})"


