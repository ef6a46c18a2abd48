"""The one progress bar factory: every long loop in fbench (training, evaluation, predict,
probes, caches, plugin preparation commands) shows the same columns on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.progress import Progress


def make_progress(console: Console | None = None, enabled: bool = True,
                  transient: bool = False) -> Progress:
    """A rich progress bar (description, bar, n of total, ``info`` field, elapsed, remaining)
    on ``console`` (stderr by default); ``enabled=False`` draws nothing. Tasks must pass the
    ``info`` field (``add_task(..., info="")``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console or Console(stderr=True), disable=not enabled, transient=transient,
    )
