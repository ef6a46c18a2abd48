"""``fbench data``: build a dataset from a recipe, list the recipes, audit a dataset for leaks,
probe it for shortcuts. Plugins add their own subcommands (``data prepare``, ``data
landmarks``) to this group through the ``register_commands`` hook, which is why it is
attached to ``fbench`` eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.cli.probe import probe_cmd
from fbench.errors import FbenchError

if TYPE_CHECKING:
    from rich.console import Console


@click.group("data")
def data_group() -> None:
    """Build, audit and prepare datasets."""


data_group.add_command(probe_cmd)


@data_group.command("build")
@click.argument("recipe")
@click.option("--root", type=click.Path(path_type=Path), required=True,
              help="Directory holding the (prepared) sources; see docs/datasets.md.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Directory to write manifest.parquet and recipe.json into.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the grouped selection and the validation carve.")
@click.option("--scale", type=click.FloatRange(0, 1, min_open=True),
              help="Build a proportionally smaller version (same ratios).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Share of train carved (by group) as validation.")
def data_build_cmd(recipe: str, root: Path, out: Path, seed: int, scale: float | None,
                   val_fraction: float) -> None:
    """Build RECIPE (see `fbench data recipes`) from the sources under --root."""
    from rich.progress import Progress
    from rich.table import Table

    from fbench.data.built import build_dataset
    from fbench.plugins.registry import get_registry

    spec = get_registry().recipe(recipe)
    console = make_console()
    with Progress(console=make_console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"building {recipe}", total=None)
        card = build_dataset(spec, root, out, seed=seed, scale=scale, val_fraction=val_fraction,
                             progress=lambda what, n: bar.update(task, completed=n,
                                                                 description=what))
    table = Table(title=f"recipe {recipe} built into {out}", header_style="bold")
    table.add_column("split")
    table.add_column("source")
    table.add_column("images", justify="right")
    for split, per in card["built"].items():
        for src, n in sorted(per.items()):
            table.add_row(split, src, str(n))
    console.print(table)
    verdict = "passed" if card["audit"]["ok"] else "[bold red]FAILED[/]"
    console.print(f"leakage audit {verdict}: " + ", ".join(
        f"{k} {v}" for k, v in card["audit"].items() if k != "ok"))


@data_group.command("recipes")
def data_recipes_cmd() -> None:
    """List the registered dataset recipes."""
    from rich.table import Table

    from fbench.plugins.registry import get_registry

    table = Table(header_style="bold")
    for col in ("recipe", "summary", "train", "eval", "masks", "plugin"):
        table.add_column(col)
    for name, (r, plugin) in sorted(get_registry().recipes().items()):
        table.add_row(name, r.summary, str(r.total("train")), str(r.total("eval")),
                      "yes" if r.with_masks else "–", plugin)
    make_console().print(table)


def _print_findings(report: Any, console: Console) -> None:
    """One table (its first 20 rows) per kind of leak the audit found."""
    from rich.table import Table

    for title, frame in (("groups in several splits", report.group_leaks),
                         ("identical files in several splits", report.duplicate_leaks),
                         ("near-duplicates across splits", report.near_duplicate_leaks),
                         ("identities in several splits", report.identity_leaks),
                         ("class balance against the recipe", report.balance)):
        if frame.empty:
            console.print(f"{title}: none" if title != "class balance against the recipe"
                          else f"{title}: no recipe to compare with")
            continue
        table = Table(title=f"{title} ({len(frame)} rows)", header_style="bold")
        for col in frame.columns:
            table.add_column(str(col))
        for row in frame.head(20).itertuples(index=False):
            table.add_row(*map(str, row))
        console.print(table)


@data_group.command("audit")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="The dataset's directory (a built dataset's --out).")
@click.option("--near", type=int, default=4, show_default=True,
              help="Hamming distance of perceptual hashes that counts as a near-duplicate.")
@options.dataset_option
def data_audit_cmd(dataset: str, data_root: Path | None, near: int,
                   dataset_option: tuple[str, ...]) -> None:
    """Audit DATASET for leaks between splits; exits non-zero on any offender."""
    from fbench.api import load_dataset
    from fbench.data.audit import audit
    from fbench.train.config import parse_assignments

    dataset_options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None, **dataset_options)
    report = audit(manifest, manifest.attrs.get("expected_balance"), near_threshold=near,
                   balance_tolerance=0.02)
    console = make_console()
    _print_findings(report, console)
    summary = ", ".join(f"{k} {v}" for k, v in report.summary().items())
    if not report.ok:
        raise FbenchError(f"audit of {dataset} failed: {summary}.",
                          "rebuild the dataset with grouped splits.")
    console.print(f"audit of {dataset} passed: {summary}.")


@data_group.command("cache")
@click.argument("dataset")
@click.option("--input-size", type=click.IntRange(min=8), required=True,
              help="Side of the square images to cache: the input size of the runs that will "
              "read it (`fbench run` prints it).")
@options.resample
@options.data_root
@options.dataset_option
@click.option("--threads", type=click.IntRange(min=1),
              help="Decoding threads. [default: one per core]")
@options.no_progress
def data_cache_cmd(dataset: str, input_size: int, resample: str | None, data_root: Path | None,
                   dataset_option: tuple[str, ...], threads: int | None,
                   no_progress: bool) -> None:
    """Decode and resize every image of DATASET once into the decoded-image cache (under
    $FBENCH_CACHE/images), which `fbench run` then reads instead of decoding each epoch
    (--cache auto, the default). Runs with the same images, rows, input size and resampler
    use it; a changed image or row makes it out of date.

    \b
    fbench data cache seg_2 --data-root built/seg_2 --input-size 224
    """
    import time

    from fbench.api import load_dataset
    from fbench.data.cache import build_cache
    from fbench.plugins.registry import get_registry
    from fbench.train.config import parse_assignments

    spec = get_registry().get("dataset", dataset)
    dataset_options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None, **dataset_options)
    start = time.perf_counter()
    cache, built = build_cache(manifest, input_size, resample or "bilinear", spec.has_masks,
                               threads=threads, progress=not no_progress,
                               console=make_console(stderr=True))
    size_mb = sum(f.stat().st_size for f in cache.path.glob("*.npy")) / 2**20
    what = (f"{len(cache)} images, {cache.input_size} px, {cache.resample}"
            + (", with masks" if spec.has_masks else "") + f", {size_mb:.0f} MB")
    console = make_console()
    if built:
        seconds = time.perf_counter() - start
        console.print(f"cached {dataset} ({what}) in {seconds:.1f} s "
                      f"({len(cache) / max(seconds, 1e-9):.0f} images/s): {cache.path}",
                      markup=False, highlight=False)
    else:
        console.print(f"already built: {dataset} ({what}) in {cache.path}",
                      markup=False, highlight=False)
