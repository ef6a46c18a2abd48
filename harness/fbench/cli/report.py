"""The tables: ``fbench ablate`` (train or reuse variants, one table), ``fbench leaderboard``
(every stored run) and ``fbench regenerate`` (the committed tables of ``leaderboards/``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.errors import FbenchError

if TYPE_CHECKING:
    from rich.console import Console

    from fbench.report.boards import Board


def _variants(names: tuple[str, ...], family: str | None, detector: str | None,
              transforms: str | None) -> tuple[Any, list[tuple[str, str]], str, list[str] | None]:
    """(family spec or None, variants, the name in the table's file name, transforms or None)
    of an ``fbench ablate`` call."""
    from fbench.report.ablate import resolve_variants

    if detector:
        # `--transforms raw dct dft`: the names after the first land in NAMES
        tf_list = [t for part in [transforms or "", *names] for t in part.split(",") if t]
        if not tf_list:
            raise FbenchError("--detector needs --transforms.",
                              "e.g. fbench ablate --detector resnet18 --transforms raw dct dft")
        return None, [(detector, detector)], detector, tf_list
    if not names:
        raise FbenchError("name the variants to ablate, e.g. `fbench ablate fad lfs mix`.",
                          "`fbench list detectors` shows the detectors.")
    spec, variants = resolve_variants(names, family)
    tf_list = [t for t in transforms.split(",") if t] if transforms else None
    return spec, variants, spec.family if spec else "detectors", tf_list


@click.command("ablate")
@click.argument("names", nargs=-1)
@click.option("--dataset", default="synthetic", show_default=True, help="Dataset name.")
@click.option("--family", help="Ablation family the short names belong to (e.g. f3net); "
              "needed only when a name is in several.")
@click.option("--detector", help="Ablate transforms of one detector instead "
              "(with --transforms).")
@click.option("--transforms", help="Transforms to compare for --detector: "
              "`--transforms raw dct dft` (or comma-separated).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per variant (seed, seed+1, ...); tables show mean ± std.")
@click.option("--seed", type=int, default=0, show_default=True, help="First seed.")
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse a stored run with the same configuration instead of training.")
@options.epochs
@options.batch_size
@options.lr
@options.convergence
@options.input_size
@options.device
@options.precision
@options.resample
@options.protocol
@click.option("--checkpoint", type=click.Choice(["selected", "last"]), default="selected",
              show_default=True, help="Table the epoch selected on validation, or the last.")
@options.data_root
@options.dataset_option
@options.set_
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="Runs directory (searched for reusable runs).")
@click.option("--output", "-o", "output", type=click.Path(path_type=Path),
              help="Markdown file for the table [default: <out>/ablation-<name>-<dataset>.md].")
@options.no_progress
def ablate_cmd(names: tuple[str, ...], dataset: str, family: str | None, detector: str | None,
               transforms: str | None, seeds: int, seed: int, reuse: bool,
               data_root: Path | None, dataset_option: tuple[str, ...], set_: tuple[str, ...],
               out: Path, output: Path | None, no_progress: bool, checkpoint: str,
               **settings: Any) -> None:
    """Run an ablation and write its table.

    \b
    fbench ablate xception fad lfs both mix mix-seg --dataset synthetic --epochs 1
    fbench ablate --detector resnet18 --transforms raw dct dft
    """
    from fbench.files import atomic_path
    from fbench.report.ablate import ablate, ablation_markdown
    from fbench.runs.store import prepare_out_dir
    from fbench.train.config import RunConfig, parse_assignments

    spec, variants, get_name, tf_list = _variants(names, family, detector, transforms)
    # unset settings (None) fall to RunConfig's defaults: auto, fp32, bilinear, fbench
    base = RunConfig(dataset=dataset, data_root=str(data_root) if data_root else None,
                     out=str(out), dataset_options=parse_assignments(dataset_option,
                                                                     "--dataset-option"),
                     options=parse_assignments(set_, "--set"),
                     **{k: v for k, v in settings.items() if v is not None})
    prepare_out_dir(out)
    rows = ablate(variants, base, [seed + i for i in range(seeds)], reuse=reuse,
                  transforms=tf_list, console=make_console(stderr=True),
                  progress=not no_progress, checkpoint=checkpoint)
    text = ablation_markdown(rows, spec, options.command_line())
    target = output or out / f"ablation-{get_name}-{dataset}.md"
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    click.echo(text)  # plain: rich would wrap the markdown lines
    click.echo(f"written to {target}")


def _compare(pair: tuple[Path, Path], resamples: int) -> None:
    from fbench.report.leaderboard import bootstrap_difference
    from fbench.runs.store import load_run

    a, b = (load_run(p) for p in pair)
    d = bootstrap_difference(a, b, n=resamples)
    click.echo(f"macro-F1 {a.id} − {b.id}: {d['difference']:+.2f} points, 95% CI "
               f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] ({d['resamples']} "
               f"{'paired ' if d['paired'] else ''}bootstrap resamples of eval images)")


def _thesis_layout(runs: list[Any], dataset: str | None, fmt: str, checkpoint: str) -> str:
    import pandas as pd

    from fbench.report.layout import layout_markdown
    from fbench.report.tables import run_row

    if fmt != "md":
        raise FbenchError("--layout thesis is markdown only.", "drop --format.")
    rows = pd.DataFrame([run_row(r, checkpoint) for r in runs
                         if dataset is None or r.config["dataset"] == dataset])
    return layout_markdown(rows, options.command_line(), by="detector")


@click.command("leaderboard")
@click.option("--runs", "runs_dir", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="Directory of runs.")
@click.option("--dataset", help="Only runs on this dataset.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md",
              show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to FILE.")
@click.option("--compare", nargs=2, type=click.Path(path_type=Path), metavar="RUN_A RUN_B",
              help="Difference in macro-F1 of two runs with a 95% bootstrap interval.")
@click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True)
@click.option("--layout", type=click.Choice(["standard", "thesis"]), default="standard",
              show_default=True, help="thesis: the thesis's final-table layout (backbone, head, "
              "fusion, multi-task, ACC, F1, Dice, params) with its numbers as reference.")
@click.option("--checkpoint", type=click.Choice(["selected", "last"]), default="selected",
              show_default=True, help="Each run's model selected on validation, or its last "
              "epoch's (both are stored).")
def leaderboard_cmd(runs_dir: Path, dataset: str | None, fmt: str, output: Path | None,
                    compare: tuple[Path, Path] | None, resamples: int, layout: str,
                    checkpoint: str) -> None:
    """One row per configuration, sorted by macro-F1, recomputed from stored predictions."""
    from fbench.files import atomic_path
    from fbench.report.leaderboard import completed_runs, leaderboard, render

    if compare:
        _compare(compare, resamples)
        return
    if not runs_dir.is_dir():
        raise FbenchError(f"runs directory {runs_dir} does not exist.", "pass --runs DIR.")
    runs = completed_runs(runs_dir)
    board = leaderboard(runs, dataset, checkpoint)
    if board.empty:
        raise FbenchError(f"no completed runs in {runs_dir}"
                          + (f" on dataset {dataset!r}" if dataset else "") + ".")
    if layout == "thesis":
        text = _thesis_layout(runs, dataset, fmt, checkpoint)
    else:
        text = render(board, fmt, options.command_line())
    if output:
        with atomic_path(output) as tmp:
            tmp.write_text(text)
        click.echo(f"written to {output}")
    else:
        click.echo(text)


def _check(board: Board, boards_file: Path, console: Console, no_progress: bool,
           run_command: Any, start: float) -> bool:
    """Retrain ``board`` into a scratch directory and compare it with the committed file;
    True when every cell is reproduced."""
    import tempfile
    import time

    from fbench.report.boards import build, differences

    if not board.file.is_file():
        raise FbenchError(f"{board.file} does not exist, nothing to check against.",
                          f"run `{board.command(boards_file)}` first.")
    with tempfile.TemporaryDirectory(prefix="fbench-check-") as scratch:
        text = build(board, boards_file, Path(scratch), reuse=False, console=console,
                     progress=not no_progress, run_command=run_command)
    diff = differences(board.file.read_text(), text)
    if diff.empty:
        console.print(f"[green]{board.file}: reproduced[/] "
                      f"({time.perf_counter() - start:.0f} s)")
        return True
    console.print(f"[red]{board.file}: {len(diff)} cell(s) differ[/]")
    click.echo(diff.to_string(index=False))
    return False


@click.command("regenerate")
@click.argument("files", nargs=-1)
@click.option("--boards", "boards_file", type=click.Path(path_type=Path),
              default=Path("leaderboards/boards.toml"), show_default=True,
              help="The TOML file that declares the committed tables.")
@click.option("--runs", "runs_dir", type=click.Path(path_type=Path),
              default=Path("runs/leaderboards"), show_default=True,
              help="Where the runs behind the tables are stored (and reused from).")
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse stored runs with the same configuration instead of training.")
@click.option("--check", is_flag=True,
              help="Retrain into a scratch directory and compare every metric cell with the "
              "committed table instead of writing it; exit 1 when any differs.")
@options.no_progress
@click.pass_context
def regenerate_cmd(ctx: click.Context, files: tuple[str, ...], boards_file: Path,
                   runs_dir: Path, reuse: bool, check: bool, no_progress: bool) -> None:
    """Rebuild the committed leaderboards and ablation tables (all, or the FILES named).

    \b
    fbench regenerate                              # every table in leaderboards/boards.toml
    fbench regenerate leaderboards/synthetic.md    # one table
    fbench regenerate --check leaderboards/smoke-synthetic.md
    """
    import time

    from fbench.cli.plugin_commands import run_command_line
    from fbench.files import atomic_path
    from fbench.report.boards import build, load_boards, select

    # preparation steps run through the group this command was called from
    run_command = partial(run_command_line, ctx.find_root().command)
    console = make_console(stderr=True)
    failed = []
    for board in select(load_boards(boards_file), files):
        start = time.perf_counter()
        if check:
            if not _check(board, boards_file, console, no_progress, run_command, start):
                failed.append(board.file)
            continue
        text = build(board, boards_file, runs_dir, reuse=reuse, console=console,
                     progress=not no_progress, run_command=run_command)
        with atomic_path(board.file) as tmp:
            tmp.write_text(text)
        console.print(f"{board.file}: written ({time.perf_counter() - start:.0f} s)")
    if failed:
        raise SystemExit(1)
