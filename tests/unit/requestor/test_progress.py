"""The progress bar: silent when disabled, counts tasks, agreements and GLM when shown."""

from __future__ import annotations

from decimal import Decimal

from requestor.progress import ProgressView


def test_a_disabled_view_draws_nothing_but_still_counts() -> None:
    view = ProgressView(enabled=False)
    view.start()
    view.add_tasks(3)
    view.task_done()
    view.task_failed()
    view.update(agreements=2, spent=Decimal("0.25"))
    view.stop()
    assert (view.total, view.done, view.failed, view.agreements, view.spent) == (3, 1, 1, 2, Decimal("0.25"))
    assert view._progress is None


def test_an_enabled_view_shows_done_failed_agreements_and_spent(capsys) -> None:  # type: ignore[no-untyped-def]
    view = ProgressView(enabled=True)
    view.start()
    view.add_tasks(4)
    view.task_done()
    view.task_failed()
    view.update(agreements=3, spent=Decimal("1.50"))
    detail = view._detail()
    view.stop()
    assert "1 failed" in detail and "agreements 3" in detail and "spent 1.5 GLM" in detail
    assert "2/4" in capsys.readouterr().out
