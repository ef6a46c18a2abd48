"""Figures written as files: a matplotlib figure on the Agg canvas (no window, no pyplot state)
and an atomic save, shared by every module that draws (reports, robustness studies)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def new_figure(width: float, height: float, dpi: int) -> Figure:
    """A new figure on the Agg canvas, without going through pyplot's global state (no window,
    nothing left open between calls)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, output: str | Path) -> Path:
    """Write the figure as PNG atomically (a half-written picture is never left behind)."""
    from fbench.files import atomic_path

    output = Path(output)
    with atomic_path(output) as tmp:
        # format is explicit: the temporary name ends in .tmp, not .png
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return output
