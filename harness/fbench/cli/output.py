"""How the commands print: one rich console factory (rich is imported when a command prints,
not when the CLI starts), the one JSON document of ``--json`` and the one-line "written to"
note."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

# The width of a console that writes to a pipe or a file. Nothing there has a width to fit,
# and a table cut to 80 columns ellipsises names (`fbench plugins | cat` showed
# `fbench-tin…`, `fbench list | grep NAME` missed names): lines are as long as their content.
PIPE_WIDTH = 100_000


def console(stderr: bool = False) -> Console:
    """A console without rich's number highlighting (tables of metrics read better plain).
    On a terminal it fits the terminal; piped or redirected it never wraps or cuts a line."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)


def _plain(value: Any) -> Any:
    """``value`` as what JSON holds: numpy and pandas scalars as numbers, NaN and NA as null
    (``json.dumps`` would write ``NaN``, which strict parsers refuse), tuples and arrays as
    lists, paths and anything else as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    try:
        import pandas as pd

        if pd.isna(value):  # pd.NA, pd.NaT
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


def to_json(obj: Any) -> str:
    """``obj`` as one JSON document (see :func:`_plain` for what becomes what)."""
    return json.dumps(_plain(obj), indent=2, ensure_ascii=False)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as the one JSON document of a ``--json`` command: it alone goes to stdout
    (warnings and errors go to stderr), so ``fbench ... --json | jq`` always parses."""
    click.echo(to_json(obj))


def written(path: Path) -> None:
    click.echo(f"written to {path}")
