"""Progress for people: a rich progress bar of tasks done and failed, agreements, GLM spent (only on a terminal)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["ProgressView"]


class ProgressView:
    """A live progress bar; every method is a no-op when disabled (stdout not a terminal, or asked so)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self.failed = 0
        self.agreements = 0
        self.spent = Decimal(0)
        self._progress: Any = None
        self._bar: Any = None

    def start(self) -> None:
        if not self.enabled or self._progress is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]tasks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), transient=False,
        )  # fmt: skip
        self._bar = self._progress.add_task("tasks", total=None, detail=self._detail())
        self._progress.start()

    def stop(self) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None

    def add_tasks(self, count: int) -> None:
        self.total += count
        self._refresh()

    def task_done(self) -> None:
        self.done += 1
        self._refresh()

    def task_failed(self) -> None:
        self.failed += 1
        self._refresh()

    def update(self, *, agreements: int | None = None, spent: Decimal | None = None) -> None:
        if agreements is not None:
            self.agreements = agreements
        if spent is not None:
            self.spent = spent
        self._refresh()

    def _detail(self) -> str:
        failed = f" [red]{self.failed} failed[/red]" if self.failed else ""
        return f"{failed} agreements {self.agreements} spent {self.spent.normalize() if self.spent else 0} GLM"

    def _refresh(self) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(
                self._bar, total=self.total or None, completed=self.done + self.failed, detail=self._detail()
            )
