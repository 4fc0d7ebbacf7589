"""The one progress-callback type: the library reports, only the CLI draws.

Long library calls (training, dataset builds, evaluation, plots, export, calibration) take
``progress: ProgressFn | None`` and call it with a :class:`Progress` now and then; they never
draw anything. The CLI passes a callback that draws a bar on stderr
(:func:`arvae_midi.commands._progress.progress_bar`); tests and scripts pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``completed`` of ``total`` units of ``task`` done (``total`` None: not known yet).

    A report with a new ``task`` starts a new stage (a new bar). ``detail`` is shown beside the
    bar (e.g. running loss terms); ``message``, when given, is a line to keep on the console
    above the bar (e.g. an epoch's summary). A report with an empty ``task`` only carries its
    message.
    """

    task: str
    completed: int = 0
    total: int | None = None
    detail: str = ""
    message: str | None = None


#: What every library function that reports progress takes.
ProgressFn = Callable[[Progress], None]


def _ignore(_: Progress) -> None:
    """Report nowhere."""


def reporter(progress: ProgressFn | None) -> ProgressFn:
    """``progress``, or (None) a callback that ignores every report."""
    return progress if progress is not None else _ignore
