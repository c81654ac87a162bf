"""An activity on a provider: run scripts in it, polled or streamed, and end it.

    activity = await golem.start_activity(agreement)       # deployed and started
    await activity.run(script, timeout_s=60)                # results in the script's commands
    await activity.destroy()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from requestor.errors import ActivityError, ApiError, CommandError
from requestor.script import CommandResult, Script

if TYPE_CHECKING:
    from requestor.gftp import GftpServer
    from requestor.rest import RestClient
    from requestor.session import Agreement

__all__ = ["Activity", "RuntimeEvent"]

_ENDED = ("Terminated", "Unresponsive")
_POLL_S = 10.0


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """A streamed event of a running batch: started, stdout, stderr or finished."""

    activity_id: str
    index: int
    kind: str
    text: str = ""
    return_code: int | None = None

    @classmethod
    def from_json(cls, activity_id: str, data: dict[str, Any]) -> RuntimeEvent:
        kind_obj = data.get("kind") or {}
        kind = next(iter(kind_obj), "unknown")
        value = kind_obj.get(kind)
        if kind == "finished" and isinstance(value, dict):
            return cls(activity_id, int(data.get("index", -1)), kind, str(value.get("message") or ""), value.get("return_code"))
        return cls(activity_id, int(data.get("index", -1)), kind, value if isinstance(value, str) else "")


class Activity:
    """One activity under an agreement."""

    def __init__(self, rest: RestClient, agreement: Agreement, activity_id: str, gftp: GftpServer | None = None) -> None:
        self._rest = rest
        self.agreement = agreement
        self.activity_id = activity_id
        self._gftp = gftp
        self.destroyed = False

    @property
    def provider_id(self) -> str:
        return self.agreement.provider_id

    def __repr__(self) -> str:
        return f"Activity({self.activity_id[:12]} on {self.agreement.offer.name})"

    async def state(self) -> str:
        """The activity's current state (Ready, Deployed, Terminated, …)."""
        return str((await self._rest.activity.state(self.activity_id))["state"][0])

    async def run(
        self, script: Script, *, timeout_s: float = 300.0, on_event: Callable[[RuntimeEvent], None] | None = None,
    ) -> list[CommandResult]:  # fmt: skip
        """Run a script; its commands get their results. Streams when a command asks to, or on_event is given.

        Raises:
            CommandError: a command failed (the batch stops there).
            ActivityError: the activity ended, or the batch did not finish within timeout_s.
            ApiError: the node refused a call.
        """
        opened: list[str] = []
        try:
            await self._prepare_files(script, opened)
            batch_id = await self._rest.activity.exec(self.activity_id, script.to_json())
            deadline = time.monotonic() + timeout_s
            if script.streaming or on_event is not None:
                await self._stream(script, batch_id, deadline, on_event)
            raw = await self._wait(batch_id, deadline, len(script))
        finally:
            if opened and self._gftp is not None:
                await self._gftp.close_urls(opened)
        results = [CommandResult.from_json(r) for r in raw]
        for result in results:
            if 0 <= result.index < len(script.commands):
                script.commands[result.index].result = result
        for result in results:
            if not result.ok:
                body = script.commands[result.index].body if 0 <= result.index < len(script.commands) else None
                raise CommandError(self.activity_id, result.index, body, result.message, result.stderr)
        if len(results) < len(script):
            raise ActivityError(f"activity {self.activity_id}: batch {batch_id} ended after {len(results)} of {len(script)} commands")
        return results

    async def _prepare_files(self, script: Script, opened: list[str]) -> None:
        if not (script.sends or script.receives):
            return
        if self._gftp is None:
            raise ActivityError(f"activity {self.activity_id}: the script moves local files, but no gftp is set up")
        for send in script.sends:
            body = script.commands[send.index].body["transfer"]
            if not body["from"]:
                body["from"] = await self._gftp.publish(send.local)
                opened.append(body["from"])
        for recv in script.receives:
            body = script.commands[recv.index].body["transfer"]
            body["to"] = await self._gftp.receive(recv.local)
            opened.append(body["to"])

    async def _stream(
        self, script: Script, batch_id: str, deadline: float, on_event: Callable[[RuntimeEvent], None] | None
    ) -> None:
        left = deadline - time.monotonic()
        async for event in self._rest.activity.stream(self.activity_id, batch_id, timeout_s=max(1.0, left)):
            if event.name != "runtime" or not isinstance(event.data, dict):
                continue
            runtime = RuntimeEvent.from_json(self.activity_id, event.data)
            if 0 <= runtime.index < len(script.commands):
                command = script.commands[runtime.index]
                if runtime.kind == "stdout":
                    command.streamed_stdout.append(runtime.text)
                elif runtime.kind == "stderr":
                    command.streamed_stderr.append(runtime.text)
            if on_event is not None:
                on_event(runtime)

    async def _wait(self, batch_id: str, deadline: float, count: int) -> list[dict[str, Any]]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ActivityError(
                    f"activity {self.activity_id} on {self.agreement.offer.name}: batch {batch_id} did not finish in time"
                )
            results = await self._rest.activity.results(self.activity_id, batch_id, timeout_s=min(left, _POLL_S))
            if results and results[-1].get("isBatchFinished"):
                return results
            if results and results[-1].get("result") == "Error":
                return results
            state = await self.state()
            if state in _ENDED:
                # The node answers what it has once the activity is gone.
                if len(results) >= count:
                    return results
                raise ActivityError(f"activity {self.activity_id} on {self.agreement.offer.name} is {state}")

    async def destroy(self) -> None:
        """End the activity (repeats are no-ops; a provider that is gone is not waited for long)."""
        if self.destroyed:
            return
        self.destroyed = True
        try:
            await self._rest.activity.destroy(self.activity_id, timeout_s=5.0)
        except ApiError:
            pass
