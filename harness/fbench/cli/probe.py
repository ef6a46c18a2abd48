"""``fbench data probe DATASET``: the shortcut probe (:mod:`fbench.data.probe`) from the command
line. Only click at import, like the rest of the CLI; the probe loads inside the command."""

from __future__ import annotations

import json
from pathlib import Path

import click

import fbench.cli.options as options


@click.command("probe")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="The dataset's directory (a built dataset's --out).")
@options.dataset_option
@click.option("--max-per-class", type=click.IntRange(min=1), default=2000, show_default=True,
              help="At most this many images per split (train+val, eval) and label, chosen "
              "deterministically.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the table as markdown to FILE.md.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def probe_cmd(dataset: str, data_root: Path | None, dataset_option: tuple[str, ...],
              max_per_class: int, as_json: bool, output: Path | None,
              no_progress: bool) -> None:
    """Look for shortcuts in DATASET: for each cheap feature family (colour, file size, native
    size, JPEG quality and format, face found, spectrum energies) fit a logistic regression on
    the train split and print its eval macro-F1 beside chance. A non-spectral family far above
    chance is a cue a detector can win on without looking at forgery. The result is stored with
    the dataset (or in the cache) for `fbench run` to warn with."""
    from rich.console import Console

    from fbench.api import load_dataset
    from fbench.data.probe import (
        images_line,
        probe_markdown,
        probe_table,
        run_probe,
        shortcut_warnings,
    )
    from fbench.progress import make_progress
    from fbench.train.config import parse_assignments

    dataset_options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None,
                            **dataset_options)
    with make_progress(Console(stderr=True), not no_progress) as bar:
        result = run_probe(manifest, max_per_class=max_per_class, progress=bar).to_dict()
    if output is not None:
        output.write_text(probe_markdown(result))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console = Console(highlight=False)
    console.print(probe_table(result))
    console.print(f"{images_line(result)} {result['seconds']:.1f} s.")
    for warning in shortcut_warnings(result, result["margin_threshold"]):
        console.print(f"[bold red]shortcut:[/] {warning}")
    for f in result["families"]:
        if f["note"]:
            console.print(f"{f['family']}: {f['note']}")
    console.print(f"stored in {result['stored_at']}"
                  + (f"; markdown in {output}" if output else "") + ".")
