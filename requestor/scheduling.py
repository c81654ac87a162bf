"""Which task runs where next: the bookkeeping of tasks, retries on other providers, and majority votes.

Pure logic, no I/O: the executor asks `next_for(provider)` and reports what happened.

    book = TaskBook(["a", "b"], redundancy=3, max_attempts=2)
    task = book.next_for("0xprovider1")     # a task this provider has not run yet
    book.succeeded(task, "0xprovider1", "A")
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from requestor.errors import ConfigurationError

__all__ = ["Task", "TaskBook", "majority", "vote_key"]

D = TypeVar("D")

PENDING, DONE, FAILED = "pending", "done", "failed"


def vote_key(value: Any) -> Hashable:
    """What results are compared by: the value if hashable, else its canonical JSON, else its repr."""
    try:
        hash(value)
        return value
    except TypeError:
        try:
            return json.dumps(value, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            return repr(value)


def majority(values: Iterable[Any], needed: int, key: Callable[[Any], Hashable] = vote_key) -> tuple[bool, Any, int]:
    """(found, value, votes): the most common value and whether at least `needed` results agree on it.

    >>> majority([1, 2, 1], 2)
    (True, 1, 2)
    >>> majority(["x", "y"], 2)[0]
    False
    """
    values = list(values)
    if not values:
        return False, None, 0
    counts = Counter(key(v) for v in values)
    top_key, votes = counts.most_common(1)[0]
    winner = next(v for v in values if key(v) == top_key)
    return votes >= needed, winner, votes


@dataclass(eq=False)
class Task(Generic[D]):
    """One unit of work: its input, where it ran, and how it ended."""

    index: int
    data: D
    status: str = PENDING
    result: Any = None
    error: str = ""
    results: list[tuple[str, Any]] = field(default_factory=list)  # (provider id, result) of runs that succeeded
    failures: list[tuple[str, str]] = field(default_factory=list)  # (provider id, why) of runs that failed
    running: set[str] = field(default_factory=set)
    tried: set[str] = field(default_factory=set)  # every provider it ran or runs on
    votes: int = 0

    @property
    def providers(self) -> list[str]:
        """Every provider that ran (or runs) this task, in order."""
        seen = [p for p, _ in self.results] + [p for p, _ in self.failures] + sorted(self.running)
        return list(dict.fromkeys(seen))

    @property
    def attempts(self) -> int:
        return len(self.results) + len(self.failures)

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)


class TaskBook(Generic[D]):
    """Tasks, their runs on providers, retries and votes.

    redundancy k: each task runs on k different providers and the result at least k//2+1 of
    them agree on is taken. max_attempts: runs of a task that may fail (or, with redundancy,
    extra runs to break a tie) before it is given up. A task never runs twice on one provider.
    """

    def __init__(
        self, items: Iterable[D], *, redundancy: int = 1, max_attempts: int = 3,
        key: Callable[[Any], Hashable] = vote_key,
    ) -> None:  # fmt: skip
        if isinstance(redundancy, bool) or not isinstance(redundancy, int) or redundancy < 1:
            raise ConfigurationError(f"redundancy must be a whole number of at least 1, not {redundancy!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be a whole number of at least 1, not {max_attempts!r}")
        if not callable(key):
            raise ConfigurationError("key must be a callable from a result to something comparable")
        self.redundancy = redundancy
        self.max_attempts = max_attempts
        self.needed = redundancy // 2 + 1
        self.max_runs = redundancy + max_attempts - 1
        self._key = key
        self.tasks: list[Task[D]] = [Task(i, d) for i, d in enumerate(items)]
        self._open = 0  # tasks before this index are all finished
        self._finished = 0

    # -- queries -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every task finished (done or failed)."""
        return self._finished == len(self.tasks)

    def _unfinished(self) -> Iterator[Task[D]]:
        while self._open < len(self.tasks) and self.tasks[self._open].finished:
            self._open += 1
        for i in range(self._open, len(self.tasks)):
            task = self.tasks[i]
            if not task.finished:
                yield task

    def counts(self) -> dict[str, int]:
        """Tasks done, failed, running and waiting."""
        out = {"done": 0, "failed": 0, "running": 0, "waiting": 0}
        for t in self.tasks:
            if t.status == DONE:
                out["done"] += 1
            elif t.status == FAILED:
                out["failed"] += 1
            elif t.running:
                out["running"] += 1
            else:
                out["waiting"] += 1
        return out

    def _wanted(self, task: Task[D]) -> int:
        """More runs this task needs started now."""
        if task.finished:
            return 0
        if not task.results and not task.failures and self.redundancy == 1:
            return 0 if task.running else 1  # the common case, without a vote
        top = majority([v for _, v in task.results], self.needed, self._key)[2]
        # Enough runs are under way if, all agreeing with the leader, they would make the majority.
        missing = self.needed - top - len(task.running)
        budget = self.max_runs - task.attempts - len(task.running)
        if len(task.results) + len(task.running) < self.redundancy:
            missing = max(missing, self.redundancy - len(task.results) - len(task.running))
        return max(0, min(missing, budget))

    def next_for(self, provider_id: str) -> Task[D] | None:
        """The first task that needs a run and has not run on this provider; it is marked running there."""
        for task in self._unfinished():
            if provider_id in task.tried:
                continue
            if self._wanted(task) > 0:
                task.running.add(provider_id)
                task.tried.add(provider_id)
                return task
        return None

    def wants(self, provider_id: str) -> bool:
        """Some task needs a run this provider may give (it has not run there)."""
        return any(provider_id not in t.tried and self._wanted(t) > 0 for t in self._unfinished())

    def needs_runs(self) -> bool:
        """Some task needs a run started."""
        return any(self._wanted(t) > 0 for t in self._unfinished())

    # -- reports -----------------------------------------------------------------------------

    def succeeded(self, task: Task[D], provider_id: str, value: Any) -> bool:
        """A run gave a result; True when that finished the task."""
        task.running.discard(provider_id)
        if task.finished:
            return False
        task.results.append((provider_id, value))
        return self._settle(task)

    def failed(self, task: Task[D], provider_id: str, why: str) -> bool:
        """A run failed; True when that finished the task (given up)."""
        task.running.discard(provider_id)
        if task.finished:
            return False
        task.failures.append((provider_id, why))
        return self._settle(task)

    def abandon(self, task: Task[D], why: str) -> None:
        """Give a task up (e.g. no provider left to run it on)."""
        if not task.finished:
            task.status, task.error = FAILED, why
            self._finished += 1

    def _settle(self, task: Task[D]) -> bool:
        found, value, votes = majority([v for _, v in task.results], self.needed, self._key)
        task.votes = votes
        if found:
            task.status, task.result = DONE, value
            self._finished += 1
            return True
        left = self.max_runs - task.attempts - len(task.running)
        if votes + left + len(task.running) < self.needed:
            task.status = FAILED
            self._finished += 1
            if task.results:
                task.error = (
                    f"no {self.needed} of {task.attempts} runs agreed (best: {votes} votes); "
                    f"failures: {'; '.join(w for _, w in task.failures) or 'none'}"
                )
            else:
                task.error = f"failed on {len(task.failures)} providers: " + "; ".join(
                    f"{p[:10]}: {w}" for p, w in task.failures
                )
            return True
        return False
