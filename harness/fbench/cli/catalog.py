"""What is installed: ``fbench list`` (datasets, transforms, detectors) and ``fbench plugins``."""

from __future__ import annotations

import os
from typing import Any

import click

from fbench.cli.output import console as make_console

KINDS = {"datasets": "dataset", "transforms": "transform", "detectors": "detector"}
# `fbench list detector` reads as naturally as `fbench list detectors`: both are accepted
_KIND_WORDS = {**KINDS, **{singular: singular for singular in KINDS.values()}}


def _detector_cells(spec: Any) -> list[str]:
    needs = [n for n, flag in (("masks", spec.needs_masks),
                               ("landmarks", spec.needs_landmarks)) if flag]
    return [str(spec.input_size), ", ".join(needs) or "–"]


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(_KIND_WORDS),
                                                          case_sensitive=False))
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (names, summaries, plugins) for scripts.")
def list_cmd(kind: str | None, pattern: str | None, as_json: bool) -> None:
    """List registered datasets, transforms and detectors (optionally one KIND, singular or
    plural, filtered by a shell PATTERN such as 'f3net-*')."""
    from rich.markup import escape
    from rich.table import Table

    from fbench.plugins.registry import get_registry

    reg = get_registry()
    singulars = [_KIND_WORDS[kind.lower()]] if kind else [KINDS[k] for k in sorted(KINDS)]
    if as_json:
        _emit_list_json(reg, singulars, pattern)
        return
    console = make_console()
    for singular in singulars:
        k = f"{singular}s"
        names = reg.names(singular, pattern)
        if not names:
            # an empty table reads as a broken listing; say what matched nothing
            # (markup off: a pattern such as 'f3net-[ab]*' is not rich markup)
            console.print(f"no {k} match {pattern!r}" if pattern else f"no {k} registered",
                          markup=False)
            continue
        table = Table(title=k, title_justify="left", header_style="bold")
        table.add_column("name", overflow="fold")  # identifiers are never cut to "…"
        table.add_column("summary")
        if singular == "detector":
            table.add_column("input")
            table.add_column("needs")
        table.add_column("plugin", overflow="fold")
        for name in names:
            spec = reg.get(singular, name)
            cells = [escape(name), escape(spec.summary)]
            if singular == "detector":
                cells += _detector_cells(spec)
            table.add_row(*cells, reg.provider(singular, name))
        console.print(table)


def _emit_list_json(reg: Any, singulars: list[str], pattern: str | None) -> None:
    from fbench.cli.output import emit_json

    doc = {}
    for singular in singulars:
        entries = []
        for name in reg.names(singular, pattern):
            spec = reg.get(singular, name)
            entry = {"name": name, "summary": spec.summary,
                     "plugin": reg.provider(singular, name)}
            if singular == "detector":
                entry.update(input_size=spec.input_size, needs_masks=spec.needs_masks,
                             needs_landmarks=spec.needs_landmarks)
            entries.append(entry)
        doc[f"{singular}s"] = entries
    emit_json(doc)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (each plugin and what it registers) for scripts.")
def plugins_cmd(as_json: bool) -> None:
    """List loaded plugins: where each comes from and what it registers."""
    from rich.markup import escape
    from rich.table import Table

    from fbench.plugins.registry import ENV_LOAD_PLUGINS, get_registry

    plugins = get_registry().plugins()
    restriction = os.environ.get(ENV_LOAD_PLUGINS)
    if as_json:
        from dataclasses import asdict

        from fbench.cli.output import emit_json

        emit_json({"plugins": [asdict(p) for p in plugins], ENV_LOAD_PLUGINS: restriction})
        return
    table = Table(header_style="bold")
    for col in ("plugin", "package", "version", "datasets", "transforms", "detectors"):
        # every cell is a name: folded onto the next line when narrow, never cut to "…"
        table.add_column(col, overflow="fold")
    for p in plugins:
        cells = [p.name, (p.distribution or "–") + (" (built-in)" if p.builtin else ""),
                 p.version or "–", ", ".join(p.datasets) or "–",
                 ", ".join(p.transforms) or "–", ", ".join(p.detectors) or "–"]
        table.add_row(*map(escape, cells))  # a name is text, never rich markup
    console = make_console()
    console.print(table)
    if restriction is not None:
        console.print(f"{ENV_LOAD_PLUGINS}={restriction!r} restricts which "
                      "external packages load.", markup=False)
