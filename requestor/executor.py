"""Many tasks across providers: workers that hold an agreement each, retries elsewhere, votes on results.

    async def count(ctx: WorkContext, path: str) -> int:
        script = ctx.script()
        script.send_file(path, "/input/data.txt")
        words = script.run("wc", "/input/data.txt")
        await ctx.run(script)
        return int(words.stdout.split()[1])

    async for task in golem.execute_tasks(count, paths, payload=WasmPackage(pkg), redundancy=3):
        print(task.data, task.status, task.result)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from requestor.activity import Activity, RuntimeEvent
from requestor.errors import ActivityError, ApiError, ConfigurationError, NoProviderError, RequestorError
from requestor.payload import Payload, Resources
from requestor.scheduling import Task, TaskBook, vote_key as default_vote_key
from requestor.script import CommandResult, Script

if TYPE_CHECKING:
    from requestor.session import Agreement, Demand, Golem

__all__ = ["WorkContext", "execute_tasks"]

D = TypeVar("D")
R = TypeVar("R")


class WorkContext:
    """What a task's work function gets: the activity it runs in, and scripts to run there."""

    def __init__(self, activity: Activity, task: Task[Any] | None, timeout_s: float) -> None:
        self.activity = activity
        self.task = task
        self._timeout_s = timeout_s

    @property
    def provider_id(self) -> str:
        return self.activity.provider_id

    @property
    def provider_name(self) -> str:
        return self.activity.agreement.offer.name

    def script(self) -> Script:
        """A new, empty script."""
        return Script()

    async def run(
        self, script: Script, *, timeout_s: float | None = None, on_event: Callable[[RuntimeEvent], None] | None = None
    ) -> list[CommandResult]:
        """Run a script in this activity; see Activity.run."""
        return await self.activity.run(script, timeout_s=timeout_s or self._timeout_s, on_event=on_event)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{name} must be a whole number of at least {low}, not {value!r}")


def _check_s(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")


async def execute_tasks(
    golem: Golem, work: Callable[[WorkContext, D], Awaitable[R]], data: Iterable[D], *, payload: Payload,
    resources: Resources | None = None, max_workers: int = 4, redundancy: int = 1, max_attempts: int = 3,
    timeout_s: float = 300.0, provider_timeout_s: float = 120.0, vote_key: Callable[[Any], Hashable] | None = None,
    pipeline: int = 1,
) -> AsyncIterator[Task[D]]:  # fmt: skip
    """Run `await work(ctx, item)` for every item; yield each Task when it is done or given up.

    A run that raises (a failed command, a provider that stops answering, a timeout) is
    retried on another provider, at most max_attempts runs per task. With redundancy k, each
    task runs on k different providers and the result a majority (k//2+1) agrees on is taken
    (compared by vote_key, default: the value itself or its JSON); ties get extra runs
    within max_attempts. A provider whose activity failed gets no new agreement this session.
    pipeline: tasks in flight per activity (2 sends a task's batch while the one before runs;
    a task's timeout then includes its wait behind the other).

    Raises:
        ConfigurationError: bad arguments (before anything is negotiated).
    """
    if not callable(work):
        raise ConfigurationError(f"work must be an async function (ctx, item) -> result, not {type(work).__name__}")
    if not isinstance(payload, Payload):
        raise ConfigurationError(f"payload must be a Payload (WasmPackage(...) or VmImage(...)), not {type(payload).__name__}")
    _check_int("max_workers", max_workers, 1)
    _check_int("pipeline", pipeline, 1)
    _check_s("timeout_s", timeout_s)
    _check_s("provider_timeout_s", provider_timeout_s)
    if isinstance(data, (str, bytes)):
        raise ConfigurationError("data must be an iterable of task inputs, not a single string")
    book: TaskBook[D] = TaskBook(data, redundancy=redundancy, max_attempts=max_attempts, key=vote_key or default_vote_key)
    if not book.tasks:
        return
    golem._require_started()
    demand = await golem.demand(payload, resources)
    run = _Run(golem, demand, work, book, timeout_s, provider_timeout_s, pipeline)
    golem.progress.add_tasks(len(book.tasks))
    workers = [asyncio.create_task(run.worker(i), name=f"worker-{i}") for i in range(min(max_workers, len(book.tasks) * redundancy))]
    golem.workers.update(workers)
    try:
        yielded = 0
        while yielded < len(book.tasks):
            getter = asyncio.create_task(run.finished.get())
            alive = [w for w in workers if not w.done()]
            done, _ = await asyncio.wait([getter, *alive], return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yielded += 1
                yield getter.result()
                continue
            getter.cancel()
            for w in done:
                if w.exception() is not None:
                    raise w.exception()  # type: ignore[misc] - a bug in a worker: not to be hidden
            if all(w.done() for w in workers) and run.finished.empty():
                # Every worker ended with tasks left: give them up.
                for task in book.tasks:
                    if not task.finished:
                        book.abandon(task, "no worker left to run it")
                        run.finish(task)
    finally:
        for w in workers:
            w.cancel()
        for w in workers:
            try:
                await w
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - ending
                pass
        golem.workers.difference_update(workers)
        await demand.stop()
        golem.demands_done(demand)


class _Run:
    """One execute_tasks call's shared state."""

    def __init__(
        self, golem: Golem, demand: Demand, work: Callable[[WorkContext, Any], Awaitable[Any]], book: TaskBook[Any],
        timeout_s: float, provider_timeout_s: float, pipeline: int = 1,
    ) -> None:  # fmt: skip
        self.golem = golem
        self.pipeline = pipeline
        self.demand = demand
        self.work = work
        self.book = book
        self.timeout_s = timeout_s
        self.provider_timeout_s = provider_timeout_s
        self.finished: asyncio.Queue[Task[Any]] = asyncio.Queue()
        self.changed = asyncio.Condition()
        self.holding = 0  # workers with an agreement
        self._log = golem._log

    def finish(self, task: Task[Any]) -> None:
        self.finished.put_nowait(task)
        if task.status == "done":
            self.golem.progress.task_done()
        else:
            self.golem.progress.task_failed()
            self._log.warning("task_failed", task=task.index, error=task.error)

    async def _pulse(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _wait_change(self, timeout_s: float = 1.0) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout_s)
            except TimeoutError:
                pass

    async def worker(self, number: int) -> None:
        book = self.book
        while not book.done:
            if not book.needs_runs():
                await self._wait_change()
                continue
            try:
                agreement = await self.demand.acquire(lambda p: not book.wants(p), self.provider_timeout_s)
            except NoProviderError as exc:
                if self.holding == 0:
                    for task in book.tasks:
                        if not task.finished and not task.running:
                            book.abandon(task, f"{exc}; runs so far: {task.attempts}")
                            self.finish(task)
                    await self._pulse()
                continue
            self.holding += 1
            try:
                await self._on_provider(agreement)
            finally:
                self.holding -= 1
                await self._pulse()

    async def _on_provider(self, agreement: Agreement) -> None:
        book, golem = self.book, self.golem
        provider = agreement.provider_id
        try:
            activity = await golem.start_activity(agreement)
        except (RequestorError, TimeoutError) as exc:
            self._log.warning("activity_not_started", provider=agreement.offer.name, error=str(exc))
            await golem.terminate(agreement, f"the activity did not start: {exc}", failed=True)
            return
        fit = [True]

        async def feed() -> None:
            while not book.done and fit[0]:
                task = book.next_for(provider)
                if task is None:
                    if book.needs_runs():
                        return  # what is left must run elsewhere: free this provider for it
                    await self._wait_change()  # runs elsewhere may still fail and come back
                    continue
                if not await self._run_one(activity, task):
                    fit[0] = False
                await self._pulse()

        try:
            # With pipeline > 1 the next task's batch is sent while one runs: the provider runs
            # them one after the other, and the HTTP round trips overlap the work.
            await asyncio.gather(*(feed() for _ in range(self.pipeline)))
        finally:
            healthy = fit[0]
            if not healthy:
                golem.blocked.add(provider)
            # Shielded: when the run ends while a dead provider keeps destroy waiting, the
            # agreement is still terminated (and as failed) rather than left to close().
            await asyncio.shield(self._end(activity, agreement, healthy))

    async def _end(self, activity: Activity, agreement: Agreement, healthy: bool) -> None:
        if healthy:
            await activity.destroy()
            await self.golem.terminate(agreement, "done")
        else:  # the provider may be gone: do not let its destroy hold the termination up
            await self.golem.terminate(agreement, "its activity failed", failed=True)
            await activity.destroy()

    async def _run_one(self, activity: Activity, task: Task[Any]) -> bool:
        """Run a task once; True when the activity is still fit for more."""
        provider = activity.provider_id
        ctx = WorkContext(activity, task, self.timeout_s)
        try:
            value = await asyncio.wait_for(self.work(ctx, task.data), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the work raised, the task is retried elsewhere
            why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RequestorError) else str(exc)
            if isinstance(exc, TimeoutError):
                why = f"no result within {self.timeout_s:g} s"
            self._log.info("task_run_failed", task=task.index, provider=activity.agreement.offer.name, error=why)
            if self.book.failed(task, provider, why):
                self.finish(task)
            if isinstance(exc, (ActivityError, ApiError, TimeoutError)):
                return False
            try:
                return await asyncio.wait_for(activity.state(), 10.0) not in ("Terminated", "Unresponsive")
            except (RequestorError, TimeoutError):
                return False
        if self.book.succeeded(task, provider, value):
            self.finish(task)
        return True
