"""The tables: ``fbench ablate`` (train or reuse variants, one table), ``fbench leaderboard``
(every stored run) and ``fbench regenerate`` (the committed tables of ``leaderboards/``)."""

from __future__ import annotations

from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.errors import FbenchError

if TYPE_CHECKING:
    from rich.console import Console

    from fbench.report.boards import Board

ALLOW_EDITED = click.option(
    "--allow-edited", is_flag=True,
    help="Read runs whose stored results changed since they finished (their digests.json no "
    "longer matches) instead of refusing them; their rows are marked as edited.")


_EXECUTOR_OPTIONS = (  # where a sweep's missing runs train (see docs/scale.md)
    click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local",
                 show_default=True, help="Train here, as Ray tasks, or as SLURM jobs."),
    click.option("--jobs", type=click.IntRange(min=1), help="local: N runs side by side, each "
                 "in a process with cores/N threads. [default: 1, in this process]"),
    click.option("--ray-address", help="ray: the cluster. [default: $RAY_ADDRESS, else local]"),
    click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True),
                 help="ray, slurm: CPUs per run (its torch threads). [default: 1]"),
    click.option("--gpus-per-run", type=click.FloatRange(min=0),
                 help="ray, slurm: GPUs per run (0.5 shares one on Ray). [default: 0]"),
    click.option("--slurm-partition", help="slurm: the partition to submit to."),
    click.option("--slurm-time", help="slurm: time limit per run (minutes, or HH:MM:SS)."),
    click.option("--slurm-gpus", type=click.IntRange(min=0), help="slurm: GPUs per job."))


def executor_options(command: Any) -> Any:
    """The options above as one ``executor`` (checked before anything slow), left out of the
    table's command line: where runs trained does not change what they are."""
    names = [o(lambda: None).__click_params__[0].name for o in _EXECUTOR_OPTIONS]

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fbench.use.executors import make_executor

        chosen = {n: kwargs.pop(n) for n in names}
        click.get_current_context().params = dict(kwargs)  # what command_line() reads
        return command(*args, **kwargs, executor=make_executor(chosen.pop("executor"), **chosen))

    for option in reversed(_EXECUTOR_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


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
@executor_options
@options.no_progress
def ablate_cmd(names: tuple[str, ...], dataset: str, family: str | None, detector: str | None,
               transforms: str | None, seeds: int, seed: int, reuse: bool,
               data_root: Path | None, dataset_option: tuple[str, ...], set_: tuple[str, ...],
               out: Path, output: Path | None, no_progress: bool, checkpoint: str,
               executor: Any, **settings: Any) -> None:
    """Run an ablation and write its table.

    \b
    fbench ablate xception fad lfs both mix mix-seg --dataset synthetic --epochs 1
    fbench ablate --detector resnet18 --transforms raw dct dft
    """
    from fbench.files import atomic_path
    from fbench.report.ablate import AblationInterrupted, ablate, ablation_markdown
    from fbench.report.console import warnings_in_voice
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
    console = make_console(stderr=True)
    try:
        rows = ablate(variants, base, [seed + i for i in range(seeds)], reuse=reuse,
                      transforms=tf_list, console=console, progress=not no_progress,
                      checkpoint=checkpoint, executor=executor)
    except AblationInterrupted as exc:  # which runs finished, and how to go on
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    if rows.attrs.get("failed") and rows.empty:  # listed above
        raise FbenchError("every run failed.", "fix the cause and run the same command again.")
    with warnings_in_voice(console, set()):
        text = ablation_markdown(rows, spec, options.command_line())
    target = output or out / f"ablation-{get_name}-{dataset}.md"
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    click.echo(text)  # plain: rich would wrap the markdown lines
    click.echo(f"written to {target}")
    if rows.attrs.get("failed"):  # a table without them is written; the shell hears of it
        click.echo("fix the cause and run it again: it trains only the failed runs.", err=True)
        raise SystemExit(1)


def _compare(pair: tuple[Path, Path], resamples: int, allow_edited: bool = False,
             as_json: bool = False) -> None:
    from fbench.report.leaderboard import bootstrap_difference
    from fbench.runs.store import load_run

    a, b = (load_run(p, allow_edited) for p in pair)
    d = bootstrap_difference(a, b, n=resamples)
    if as_json:
        from fbench.cli.output import emit_json

        emit_json({"metric": "macro_f1", "unit": "points", "run_a": a.id, "run_b": b.id,
                   **d, "edited": {r.id: list(r.edited) for r in (a, b) if r.edited}})
        return
    click.echo(f"macro-F1 {a.id} − {b.id}: {d['difference']:+.2f} points, 95% CI "
               f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] ({d['resamples']} "
               f"{'paired ' if d['paired'] else ''}bootstrap resamples of eval images)")
    for run in (a, b):
        if run.edited:
            click.echo(f"EDITED: run {run.id} ({', '.join(run.edited)}): its numbers are not "
                       "what was trained.")


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
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]),
              help="What to write. [default: a table on a terminal; markdown into a pipe or "
              "a file, or csv / html for -o FILE.csv / FILE.html]")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to FILE.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (the rows, or the --compare result) for scripts.")
@click.option("--compare", nargs=2, type=click.Path(path_type=Path), metavar="RUN_A RUN_B",
              help="Difference in macro-F1 of two runs with a 95% bootstrap interval.")
@click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True)
@click.option("--layout", type=click.Choice(["standard", "thesis"]), default="standard",
              show_default=True, help="thesis: the thesis's final-table layout (backbone, head, "
              "fusion, multi-task, ACC, F1, Dice, params) with its numbers as reference.")
@click.option("--checkpoint", type=click.Choice(["selected", "last"]), default="selected",
              show_default=True, help="Each run's model selected on validation, or its last "
              "epoch's (both are stored).")
@ALLOW_EDITED
def leaderboard_cmd(runs_dir: Path, dataset: str | None, fmt: str | None, output: Path | None,
                    as_json: bool, compare: tuple[Path, Path] | None, resamples: int,
                    layout: str, checkpoint: str, allow_edited: bool) -> None:
    """One row per configuration, sorted by macro-F1, recomputed from stored predictions.

    \b
    fbench leaderboard                       # a table on a terminal, markdown into a pipe
    fbench leaderboard -o board.md           # markdown (board.csv: csv, board.html: html)
    fbench leaderboard --json | jq '.rows[0]'
    """
    from fbench.files import atomic_path
    from fbench.report.leaderboard import completed_runs, leaderboard, render

    if as_json and (fmt or layout == "thesis"):
        raise FbenchError("--json is its own format.", "drop --format / --layout thesis.")
    if compare:
        _compare(compare, resamples, allow_edited, as_json)
        return
    if not runs_dir.is_dir():
        raise FbenchError(f"runs directory {runs_dir} does not exist.", "pass --runs DIR.")
    runs = completed_runs(runs_dir, allow_edited)
    board = leaderboard(runs, dataset, checkpoint)
    if board.empty:
        raise FbenchError(f"no completed runs in {runs_dir}"
                          + (f" on dataset {dataset!r}" if dataset else "") + ".")
    console = make_console()
    if as_json:
        text = _board_json(board, checkpoint, dataset)
    elif fmt is None and output is None and layout == "standard" and console.is_terminal:
        _print_board(board, console)
        return
    elif layout == "thesis":
        text = _thesis_layout(runs, dataset, fmt or "md", checkpoint)
    else:
        text = render(board, fmt or _format_of(output), options.command_line())
    if output:
        with atomic_path(output) as tmp:
            tmp.write_text(text)
        click.echo(f"written to {output}")
    else:
        click.echo(text)  # plain: rich would wrap the markdown lines


def _format_of(output: Path | None) -> str:
    """The format a leaderboard is written in without --format: the file's, else markdown."""
    suffix = output.suffix.lower() if output else ""
    return {".csv": "csv", ".html": "html", ".htm": "html"}.get(suffix, "md")


def _print_board(board: Any, console: Console) -> None:
    """The leaderboard as a table on a terminal, its notes below."""
    from fbench.report.console import leaderboard_notes, leaderboard_table

    table, dropped = leaderboard_table(board, console.width)
    console.print(table)
    for note in leaderboard_notes(board, dropped):
        console.print(note)


def _board_json(board: Any, checkpoint: str, dataset: str | None) -> str:
    """The leaderboard's rows (every column of the board, rank first) as one JSON document."""
    from fbench import __version__
    from fbench.cli.output import to_json
    from fbench.report.tables import table_notes

    rows = [{"rank": i, **row} for i, row in enumerate(board.to_dict("records"), start=1)]
    return to_json({"fbench_version": __version__, "command": options.command_line(),
                    "checkpoint": checkpoint, "dataset": dataset, "rows": rows,
                    "notes": table_notes(board)})


def _check(board: Board, boards_file: Path, console: Console, no_progress: bool,
           run_command: Any, start: float, allow_edited: bool = False,
           executor: Any = None) -> bool:
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
                     progress=not no_progress, run_command=run_command,
                     allow_edited=allow_edited, executor=executor)
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
@executor_options
@options.no_progress
@ALLOW_EDITED
@click.pass_context
def regenerate_cmd(ctx: click.Context, files: tuple[str, ...], boards_file: Path,
                   runs_dir: Path, reuse: bool, check: bool, no_progress: bool,
                   allow_edited: bool, executor: Any) -> None:
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
    from fbench.report.console import warnings_in_voice

    # preparation steps run through the group this command was called from
    run_command = partial(run_command_line, ctx.find_root().command)
    console = make_console(stderr=True)
    failed, done, seen = [], [], set()
    try:
        for board in select(load_boards(boards_file), files):
            start = time.perf_counter()
            with warnings_in_voice(console, seen):  # the runs' own print as they happen
                if check:
                    if not _check(board, boards_file, console, no_progress, run_command,
                                  start, allow_edited, executor):
                        failed.append(board.file)
                    done.append(board.file)
                    continue
                text = build(board, boards_file, runs_dir, reuse=reuse, console=console,
                             progress=not no_progress, run_command=run_command,
                             allow_edited=allow_edited, executor=executor)
            with atomic_path(board.file) as tmp:
                tmp.write_text(text)
            done.append(board.file)
            console.print(f"{board.file}: written ({time.perf_counter() - start:.0f} s)")
    # a preparation command runs through click, which turns Ctrl-C into Abort
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:
        _interrupted(exc, done, check)
    if failed:
        raise SystemExit(1)


def _interrupted(exc: BaseException, done: list[Path], check: bool) -> NoReturn:
    """Ctrl-C or SIGTERM in ``fbench regenerate``: which tables are done, which runs
    finished, how to continue; the shell's exit code for the signal, as ``fbench run``."""
    import signal

    from fbench.report.ablate import AblationInterrupted

    if check:
        lines = ["interrupted: a check trains into a scratch directory, removed on the way "
                 "out; run the same command again to check from the start."]
    elif isinstance(exc, AblationInterrupted):
        lines = exc.lines()
    else:
        lines = ["interrupted (no run was training); to continue, run the same command "
                 "again: it reuses every completed run and trains the rest."]
    if done:
        lines.append(f"{'checked' if check else 'written'} before it: "
                     + ", ".join(str(f) for f in done))
    click.echo("\n".join(lines), err=True)
    raise click.exceptions.Exit(128 + int(getattr(exc, "signum", signal.SIGINT))) from None
