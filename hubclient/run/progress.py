"""The one progress display of hub (rich)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True, completed: int = 0, state: bool = False) -> Iterator[tuple[Any, Any]]:
    """The one progress display of hub (rich): yields ``(progress, task)``.

    Args:
        label: what is counted (e.g. ``"logit-lens batches"``).
        total / completed: units in all / already done (resumed runs start part-way).
        enabled: ``--progress/--no-progress``.
        state: add a column showing the task's ``state`` field (remote job states).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    if state:
        columns.append(TextColumn("{task.fields[state]}"))
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        yield bar, bar.add_task(label, total=total, completed=completed, **({"state": ""} if state else {}))
