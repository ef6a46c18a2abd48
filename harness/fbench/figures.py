"""Figures written as files: a matplotlib figure on the Agg canvas (no window, no pyplot state)
and an atomic save in the format the file name asks for (PDF, SVG or PNG), shared by every
module that draws (reports, robustness studies)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fbench.errors import FbenchError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

# Suffix -> matplotlib format. Vector formats first: they are what papers want.
FIGURE_FORMATS: dict[str, str] = {".pdf": "pdf", ".svg": "svg", ".png": "png"}
# Print resolution: PNGs are written at this many dots per inch (also the resolution of the
# raster parts, such as heat maps, embedded in a PDF or SVG).
PNG_DPI = 300


def figure_format(output: str | Path) -> str:
    """The format of a figure file, from its suffix (case-insensitive): ``pdf``, ``svg`` or
    ``png``. Any other suffix is refused before anything is drawn, so that a file called
    ``.pdf`` never holds a PNG."""
    suffix = Path(output).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        known = ", ".join(FIGURE_FORMATS)
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise FbenchError(f"cannot write figure {str(output)!r} ({shown}).",
                          f"name the file with one of {known}.")
    return FIGURE_FORMATS[suffix]


def new_figure(width: float, height: float, dpi: int = PNG_DPI) -> Figure:
    """A new figure on the Agg canvas, without going through pyplot's global state (no window,
    nothing left open between calls)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, output: str | Path, dpi: int | None = None) -> Path:
    """Write the figure atomically (a half-written picture is never left behind) in the format
    of ``output``'s suffix; ``dpi`` (default ``PNG_DPI``) is the PNG resolution, stored in the
    file's pHYs chunk, and that of rasters inside a PDF or SVG."""
    from fbench.files import atomic_path

    output = Path(output)
    fmt = figure_format(output)
    with atomic_path(output) as tmp:
        # format is explicit: the temporary name ends in .tmp, not in the real suffix
        fig.savefig(tmp, format=fmt, dpi=dpi or PNG_DPI)
    return output
