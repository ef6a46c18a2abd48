"""What is installed: ``fbench list`` (datasets, transforms, detectors) and ``fbench plugins``."""

from __future__ import annotations

import os
from typing import Any

import click

from fbench.cli.output import console as make_console

KINDS = {"datasets": "dataset", "transforms": "transform", "detectors": "detector"}


def _detector_cells(spec: Any) -> list[str]:
    needs = [n for n, flag in (("masks", spec.needs_masks),
                               ("landmarks", spec.needs_landmarks)) if flag]
    return [str(spec.input_size), ", ".join(needs) or "–"]


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(KINDS)))
@click.argument("pattern", required=False)
def list_cmd(kind: str | None, pattern: str | None) -> None:
    """List registered datasets, transforms and detectors (optionally one KIND, filtered by a
    shell PATTERN such as 'f3net-*')."""
    from rich.table import Table

    from fbench.plugins.registry import get_registry

    reg = get_registry()
    console = make_console()
    for k in [kind] if kind else sorted(KINDS):
        singular = KINDS[k]
        table = Table(title=k, title_justify="left", header_style="bold")
        table.add_column("name")
        table.add_column("summary")
        if singular == "detector":
            table.add_column("input")
            table.add_column("needs")
        table.add_column("plugin")
        for name in reg.names(singular, pattern):
            spec = reg.get(singular, name)
            cells = [name, spec.summary]
            if singular == "detector":
                cells += _detector_cells(spec)
            table.add_row(*cells, reg.provider(singular, name))
        console.print(table)


@click.command("plugins")
def plugins_cmd() -> None:
    """List loaded plugins: where each comes from and what it registers."""
    from rich.table import Table

    from fbench.plugins.registry import ENV_LOAD_PLUGINS, get_registry

    table = Table(header_style="bold")
    for col in ("plugin", "package", "version", "datasets", "transforms", "detectors"):
        table.add_column(col)
    for p in get_registry().plugins():
        table.add_row(p.name, (p.distribution or "–") + (" (built-in)" if p.builtin else ""),
                      p.version or "–", ", ".join(p.datasets) or "–",
                      ", ".join(p.transforms) or "–", ", ".join(p.detectors) or "–")
    console = make_console()
    console.print(table)
    if os.environ.get(ENV_LOAD_PLUGINS) is not None:
        console.print(f"{ENV_LOAD_PLUGINS}={os.environ[ENV_LOAD_PLUGINS]!r} restricts which "
                      "external packages load.")
