"""``fbench plot``: pictures of runs and datasets, as PDF, SVG or PNG (by the output's
suffix; PNG at 300 dpi)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import fbench.cli.options as options
from fbench.cli.output import written

FORMATS_HELP = "The suffix picks the format: .pdf, .svg or .png (300 dpi)."


def _output(default: str) -> Callable[[Any], Any]:
    return click.option("--output", "-o", type=click.Path(path_type=Path),
                        help=f"Figure file [default: {default}]. {FORMATS_HELP}")


# Run ids are long and mean nothing in a paper: titles name detectors and datasets unless
# the id is asked for (e.g. to tell apart runs in a lab notebook).
title_run_ids = click.option("--title-run-ids", is_flag=True,
                             help="Add the run ids to titles and legends.")


def _checked(output: Path | None) -> Path | None:
    """``--output`` with its suffix checked before any run is loaded or image read (defaults
    are .png)."""
    from fbench.figures import figure_format

    if output is not None:
        figure_format(output)
    return output


@click.group("plot")
def plot_group() -> None:
    """Pictures of runs and datasets (PDF, SVG or PNG): confusion, curves, spectrum, gradcam."""


@plot_group.command("confusion")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["eval", "val"]), default="eval", show_default=True)
@_output("confusion-<run-id>.png")
@title_run_ids
def plot_confusion_cmd(run_dir: Path, split: str, output: Path | None,
                       title_run_ids: bool) -> None:
    """Confusion matrix of RUN_DIR's eval split, recomputed from its predictions."""
    from fbench.report.plots import plot_confusion
    from fbench.runs.store import load_run

    output = _checked(output)
    run = load_run(run_dir)
    written(plot_confusion(run, output or Path(f"confusion-{run.id}.png"), split,
                           run_ids=title_run_ids))


@plot_group.command("curves")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_output("curves.png")
@title_run_ids
def plot_curves_cmd(run_dirs: tuple[Path, ...], output: Path | None,
                    title_run_ids: bool) -> None:
    """Train loss and validation macro-F1 per epoch of one or more runs."""
    from fbench.report.plots import plot_curves

    target = _checked(output) or Path("curves.png")
    written(plot_curves(list(run_dirs), target, run_ids=title_run_ids))


@plot_group.command("spectrum")
@click.argument("dataset")
@options.data_root
@options.dataset_option
@click.option("--per", type=click.Choice(["class", "source"]), default="class",
              show_default=True, help="One row per class or per source.")
@click.option("--max-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Images sampled per group.")
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Common side the images are resized to.")
@_output("spectrum-<dataset>-<per>.png")
def plot_spectrum_cmd(dataset: str, data_root: Path | None, dataset_option: tuple[str, ...],
                      per: str, max_images: int, size: int, output: Path | None) -> None:
    """Average log-magnitude DCT and DFT spectra of DATASET's grayscale images, on axes in
    cycles/pixel."""
    from fbench.api import load_dataset
    from fbench.report.plots import plot_spectrum
    from fbench.train.config import parse_assignments

    target = _checked(output) or Path(f"spectrum-{dataset}-{per}.png")
    dataset_options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None, **dataset_options)
    written(plot_spectrum(manifest, target, per=per, size=size, max_images=max_images,
                          title=f"{dataset}: average spectra per {per}"))


@plot_group.command("gradcam")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layer", help="Dotted module name to explain [default: the last Conv2d].")
@click.option("--target-class", type=click.IntRange(0, 2),
              help="Class to explain: 0 real, 1 generated, 2 edited [default: predicted].")
@_output("gradcam-<run-id>.png")
@title_run_ids
def plot_gradcam_cmd(run_dir: Path, images: tuple[Path, ...], layer: str | None,
                     target_class: int | None, output: Path | None,
                     title_run_ids: bool) -> None:
    """Grad-CAM of RUN_DIR's selected checkpoint on IMAGES, with a colour scale."""
    from fbench.report.plots import plot_gradcam
    from fbench.runs.store import load_run

    output = _checked(output)
    run = load_run(run_dir)
    written(plot_gradcam(run, list(images), output or Path(f"gradcam-{run.id}.png"),
                         layer=layer, target_class=target_class, run_ids=title_run_ids))
