"""The CLI's drawing of library progress: a rich bar on stderr (stdout stays clean for ``--json``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from arvae_midi.progress import Progress, ProgressFn


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A callback drawing each :class:`Progress` stage as a bar on stderr; None when disabled.

    One bar at a time: a report with a new ``task`` replaces the previous bar. A report's
    ``message`` is printed above the bar and stays; the bars vanish when the block ends.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[detail]}"))  # fmt: skip
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as bar:
        current: dict[str, Any] = {}

        def draw(p: Progress) -> None:
            if p.message:
                bar.console.print(p.message, soft_wrap=True, highlight=False)
            if not p.task:
                return
            task = current.get(p.task)
            if task is None:
                for old in current.values():
                    bar.remove_task(old)
                current.clear()
                task = current[p.task] = bar.add_task(p.task, total=p.total, detail=p.detail)
            bar.update(task, completed=p.completed, total=p.total, detail=p.detail)

        yield draw
