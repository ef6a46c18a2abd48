"""How the commands print: one rich console factory (rich is imported when a command prints,
not when the CLI starts) and the one-line "written to" note."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A console without rich's number highlighting (tables of metrics read better plain)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def written(path: Path) -> None:
    click.echo(f"written to {path}")
