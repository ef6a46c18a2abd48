"""The commands that use a stored run: ``fbench predict``, ``fbench robustness`` and
``fbench reproduce``. Like the rest of the CLI, nothing heavy is imported until a command
runs."""

from __future__ import annotations

from pathlib import Path

import click

from fbench.cli.options import command_line
from fbench.errors import FbenchError


def _progress(enabled: bool):  # noqa: ANN202 - rich type imported lazily
    from rich.console import Console

    from fbench.progress import make_progress

    return make_progress(Console(stderr=True), enabled)


def _shown(text: object) -> str:
    """A name from a stranger's folder, safe to print: undecodable bytes and control
    characters escaped (no terminal escape sequences), rich markup characters literal."""
    from rich.markup import escape

    from fbench.use.inputs import display_name

    name = display_name(text) if isinstance(text, (str, Path)) else str(text)
    return escape("".join(c if c.isprintable() else ascii(c)[1:-1] for c in name))


def _check_inputs_exist(paths: tuple[Path, ...]) -> None:
    """Refuse, before the run and its model load, a call none of whose inputs exists (a
    typo); when some exist, each missing one gets its own row, as any bad file does."""
    import os

    from fbench.use.inputs import display_name

    # lexists: a broken link is there (its row says so), a FIFO is never opened by this
    if any(os.path.lexists(p) for p in paths):
        return
    names = ", ".join(display_name(p) for p in paths[:3]) + (
        f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    raise FbenchError(f"{names} {'does' if len(paths) == 1 else 'do'} not exist; nothing to "
                      "score.", "pass image files or folders that exist.")


@click.command("predict")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="FILE.csv or FILE.parquet, one row per image "
              "[default: predictions-<run-id>.csv]. Never inside a run directory; an existing "
              "file only with --force.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--threshold", default="val", show_default=True, metavar="val|FLOAT",
              help="Forged-score threshold of the binary decision: the one the run chose on "
              "its validation split, or a number in [0, 1].")
@click.option("--max-pixels", type=click.IntRange(min=1),
              help="An image whose header claims more pixels is not decoded (its row says so) "
              "[default: 64000000, the limit of fbench run].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--masks", "masks_dir", type=click.Path(path_type=Path),
              help="Directory for the mask PNGs of a detector with a mask head "
              "[default: <output>-masks/ beside the output].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict_cmd(run_dir: Path, paths: tuple[Path, ...], output: Path | None, force: bool,
                threshold: str, max_pixels: int | None, batch_size: int, device: str,
                masks_dir: Path | None, no_progress: bool) -> None:
    """Score image files and folders (recursively) with RUN_DIR's selected checkpoint.

    \b
    fbench predict runs/<run-id> photos/ extra.jpg -o scores.csv

    Files are recognised as images by their first bytes (PNG, JPEG, BMP, TIFF, WebP, GIF,
    PNM, JPEG 2000, Sun raster), whatever their name; other files are skipped and counted.
    FIFOs, sockets and devices are never opened: each gets a row with status "skipped" and
    the reason. A file that cannot be used (zero bytes, truncated, corrupt, over
    --max-pixels) gets a row with status "error" and the reason, and the rest are still
    scored; the command fails only when no image is scored. Names that are not valid UTF-8
    are written with \\xNN escapes.
    """
    from rich.console import Console

    from fbench.runs.store import load_run
    from fbench.use.inputs import display_name
    from fbench.use.predict import (
        STATUS_ERROR,
        STATUS_SCORED,
        STATUS_SKIPPED,
        check_output,
        predict,
        summary_table,
        write_predictions,
    )

    _check_inputs_exist(paths)
    run = load_run(run_dir)
    target = output or Path(f"predictions-{run.id}.csv")
    masks = masks_dir or target.with_name(f"{target.stem}-masks")
    check_output(target, run, force=force, masks_dir=masks)  # before the model loads
    from fbench.report.console import warnings_in_voice

    with _progress(not no_progress) as bar, \
            warnings_in_voice(Console(stderr=True, highlight=False), set()):
        df = predict(run, list(paths), threshold=threshold, batch_size=batch_size,
                     device=device, masks_dir=masks, progress=bar, max_pixels=max_pixels)
    write_predictions(df, target)
    console = Console(highlight=False)
    console.print(summary_table(df))
    err = Console(stderr=True, highlight=False)
    bad = df[df["status"] != STATUS_SCORED]
    for row in bad.head(10).itertuples():
        label = "skipped" if row.status == STATUS_SKIPPED else "bad file"
        err.print(f"[yellow]{label}:[/] {_shown(row.path)}: {_shown(row.error)}")
    if len(bad) > 10:
        err.print(f"[yellow]... and {len(bad) - 10} more (see {_shown(target)})[/]")
    skipped = df.attrs.get("skipped", [])
    if skipped:
        err.print(f"skipped {len(skipped)} file(s) that are not images, e.g. "
                  f"{_shown(skipped[0])}")
    n = int((df["status"] == STATUS_SCORED).sum())
    n_bad = int((df["status"] == STATUS_ERROR).sum())
    if n == 0:
        raise FbenchError(f"no image was scored ({n_bad} bad file(s), {len(skipped)} "
                          f"non-image file(s), {len(bad) - n_bad} special file(s); the "
                          f"reasons are in {display_name(target)}).",
                          "pass image files (PNG, JPEG, ...) or folders that hold some.")
    speed = df.attrs.get("images_per_s")
    console.print(f"{n} image(s) scored" + (f" ({speed:.1f} images/s)" if speed else "")
                  + f"; written to {_shown(target)}"
                  + (f", masks in {_shown(masks)}" if "mask_path" in df.columns else ""))


@click.command("robustness")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--perturb", "-p", "perturbs", multiple=True, required=True,
              metavar="NAME:L1,L2,...",
              help="A perturbation and its levels, repeatable: jpeg:95,75,50 blur:1,2 "
              "noise:0.02,0.05 resize:0.5,0.25 crop:0.9,0.8 (any transform; "
              "NAME:OPTION=L1,L2 sets another option).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the perturbations that draw random numbers (noise).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Evaluation batch size [default: the run's].")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Directory for predictions.parquet, robustness.{csv,md,png,json} "
              "[default: robustness/<run-id>, or robustness/compare-<n>-runs-<first-id>].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def robustness_cmd(run_dirs: tuple[Path, ...], perturbs: tuple[str, ...], seed: int,
                   batch_size: int | None, device: str, out: Path | None,
                   no_progress: bool) -> None:
    """Re-evaluate stored runs on their eval split under perturbations of the eval images.

    \b
    fbench robustness runs/<run-id> --perturb jpeg:95,75,50 --perturb blur:1,2
    fbench robustness runs/<a> runs/<b> --perturb noise:0.02,0.05,0.1   # one plot, two lines

    Every prediction is stored; the table (macro-F1, per-class F1, binary AUC per level) and
    the plot of macro-F1 against level are computed from them.
    """
    from rich.console import Console

    from fbench.runs.store import load_run
    from fbench.use.robustness import parse_perturbation, rich_table
    from fbench.use.robustness import robustness as run_robustness

    runs = [load_run(p) for p in run_dirs]
    parsed = [parse_perturbation(p) for p in perturbs]
    if out is None:
        out = Path("robustness") / (runs[0].id if len(runs) == 1 else
                                    f"compare-{len(runs)}-runs-{runs[0].id}")
    with _progress(not no_progress) as bar:
        result = run_robustness(runs, parsed, out, seed=seed, batch_size=batch_size,
                                device=device, command=command_line(), progress=bar)
    console = Console(highlight=False)
    console.print(rich_table(result["table"], "eval metrics under perturbation (%)"))
    for run_id, same in result["record"]["clean_matches_stored"].items():
        if not same:
            console.print(f"[bold yellow]warning:[/] the clean re-evaluation of {run_id} "
                          "differs from its stored eval predictions (see fbench reproduce).")
    console.print(f"written to {result['out']}: predictions.parquet, robustness.csv, "
                  "robustness.md, robustness.png, robustness.json")


@click.command("reproduce")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--epochs-from-run", is_flag=True,
              help="Train only up to the epoch the run selected (same checkpoint when "
              "training is deterministic; faster).")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Directory that receives the new run [default: reproduce/ beside RUN_DIR].")
@click.option("--force", is_flag=True,
              help="Retrain even when the data differs from the run's.")
@click.option("--device", help="Device for the rerun [default: the run's].")
@click.option("--tolerance", type=click.FloatRange(min=0),
              help="Absolute difference allowed per metric [default: 0 (identical) when the "
              "environment matches on CPU, else 0.01].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def reproduce_cmd(run_dir: Path, epochs_from_run: bool, out: Path | None, force: bool,
                  device: str | None, tolerance: float | None, no_progress: bool) -> None:
    """Check RUN_DIR's data and environment, retrain it with its stored config and seed into
    a new run, and table every metric side by side (stored, rerun, difference).

    Exits 1 when a metric moved beyond the tolerance, and stops before training when the
    data is not the run's (unless --force).
    """
    from rich.console import Console

    from fbench.use.reproduce import comparison_table
    from fbench.use.reproduce import reproduce as run_reproduce

    console = Console(highlight=False)
    result = run_reproduce(run_dir, out=out, force=force, epochs_from_run=epochs_from_run,
                           device=device, tolerance=tolerance,
                           console=Console(stderr=True, highlight=False),
                           progress=not no_progress)
    console.print(comparison_table(result))
    console.print(f"stored: {result.run.path}")
    console.print(f"rerun:  {result.rerun.path}")
    if result.forced:
        console.print("[yellow]forced past a data mismatch: the rerun is not a "
                      "reproduction.[/]")
    if not result.ok:
        console.print(f"[bold red]{result.verdict()}[/]")
        raise SystemExit(1)
    console.print(f"[green]{result.verdict()}[/]")

