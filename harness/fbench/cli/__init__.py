"""The ``fbench`` command line. Nothing heavy is imported at start: torch, timm and the
detectors load only inside the commands that need them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fbench import __version__
from fbench.errors import FbenchError

KINDS = {"datasets": "dataset", "transforms": "transform", "detectors": "detector"}


def command_line() -> str:
    """The current command, rebuilt from its parsed parameters (what a table header needs to
    say how to regenerate it; independent of how the CLI was launched)."""
    import shlex

    ctx = click.get_current_context()
    parts = ["fbench", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == () or value is False or (
                isinstance(param, click.Option) and value == param.default
                and not param.required):
            continue
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        if isinstance(param, click.Argument):
            parts += [str(v) for v in values]
            continue
        flag = max(param.opts, key=len)
        if param.is_flag and not param.secondary_opts:
            parts.append(flag)
        elif param.is_flag:
            parts.append(flag if value else max(param.secondary_opts, key=len))
        elif param.multiple:
            for v in values:
                parts += [flag, *(map(str, v) if isinstance(v, tuple) else [str(v)])]
        else:
            parts += [flag, *map(str, values)]
    return " ".join(shlex.quote(p) for p in parts)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fbench")
def cli() -> None:
    """fbench: benchmark image-forgery detectors on real, generated (1) and edited (2) faces.

    \b
    Quick start (offline, CPU):
      fbench run --detector resnet18 --dataset synthetic
      fbench list detectors
      fbench show runs/<run-id>
    """


@cli.command("run")
@click.option("--detector", "-d", help="Detector name (see `fbench list detectors`). "
              "[default: resnet18]")
@click.option("--dataset", help="Dataset name (see `fbench list datasets`). [default: synthetic]")
@click.option("--transform", "-t", help="Preprocessing transform; default: the detector's own.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Training epochs; default: the detector's preference, else 10.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Batch size; default: the detector's preference, else 64.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Learning rate (Adam); default: the detector's preference, else 1e-3.")
@click.option("--seed", type=int, help="Seed for data order, validation carving and init. "
              "[default: 0]")
@click.option("--device", help="auto, cpu, cuda or cuda:N. [default: auto]")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              help="bf16 autocast (fast on recent GPUs). [default: fp32]")
@click.option("--input-size", type=click.IntRange(min=8),
              help="Side of the square model input; default: the detector's, but never above "
              "the dataset's native size.")
@click.option("--resample", type=click.Choice(["bilinear", "area"]),
              help="How images are resized to the input size: antialiased bilinear (as "
              "torchvision and the thesis) or OpenCV area. [default: bilinear]")
@click.option("--protocol",
              help="fbench (these defaults and the detector's preferences) or a published "
              "training recipe the detector declares, e.g. thesis (Adam, the thesis's lr and "
              "batch, 30 epochs, 224 px); flags given here still win. [default: fbench]")
@click.option("--tf32", is_flag=True,
              help="Allow TF32 convolutions/matmuls on CUDA (faster, less exact; off by "
              "default because it moves small spectral features).")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Directory that receives the run directory. [default: runs]")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="Directory holding the dataset's files (not needed for synthetic).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="A TOML file with any of these settings; flags given here win.")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
              help="A detector option (its factory's keyword), repeatable: --set depth=thesis.")
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE",
              help="A dataset option, repeatable: --dataset-option n_per_class=500.")
@click.option("--transform-option", multiple=True, metavar="KEY=VALUE",
              help="A transform option, repeatable.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True),
              help="Share of train carved (by group) as validation for model selection. "
              "[default: 0.1]")
@click.option("--workers", type=click.IntRange(min=0),
              help="DataLoader worker processes. [default: 0]")
@click.option("--name", help="A label for the run directory.")
@click.option("--skip-audit", is_flag=True,
              help="Do not audit a built dataset for leaks before training (recorded in the run).")
@click.option("--skip-bad", is_flag=True,
              help="Train without images that fail the pre-run checks (truncated, empty, "
              "unreadable, too large, mismatched mask) instead of stopping; they are counted "
              "in the run.")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
              help="Continue the stopped run in RUN_DIR from its last completed epoch "
              "(model, optimizer, RNG streams, best so far), with its stored settings.")
def run_cmd(config_file: Path | None, set_: tuple[str, ...], dataset_option: tuple[str, ...],
            transform_option: tuple[str, ...], no_progress: bool, skip_audit: bool,
            skip_bad: bool, tf32: bool, resume: Path | None, **flags: Any) -> None:
    """Train a detector on a dataset, select the best epoch on validation, evaluate it on the
    eval split and store the run (config, metrics, predictions, checkpoints).

    \b
    fbench run --detector f3net-mix --dataset seg_2 --data-root data/seg_2
    fbench run --resume runs/20261126-101500-f3net-mix-seg_2-1a2b3c
    torchrun --nproc-per-node 4 -m fbench run --detector f3net-mix --dataset seg_2
    """
    from fbench.train.config import RunConfig, load_config_file, parse_assignments

    if resume is not None:
        given = [k for k, v in flags.items() if v is not None] + [
            n for n, v in (("--set", set_), ("--dataset-option", dataset_option),
                           ("--transform-option", transform_option),
                           ("--config", config_file), ("--tf32", tf32)) if v]
        if given:
            raise FbenchError(f"--resume continues a run with its stored settings; "
                              f"{', '.join(given)} cannot change them.",
                              "drop those options (or start a new run).")
        _resume(resume, no_progress)
        return
    data: dict[str, Any] = RunConfig().to_dict()
    if config_file is not None:
        data.update(RunConfig.from_dict(load_config_file(config_file),
                                        source=str(config_file)).to_dict())
    for key, value in flags.items():
        if value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    if skip_audit:
        data["audit"] = False
    if skip_bad:
        data["skip_bad"] = True
    if tf32:
        data["tf32"] = True
    data["options"] = {**data["options"], **parse_assignments(set_, "--set")}
    data["dataset_options"] = {**data["dataset_options"],
                               **parse_assignments(dataset_option, "--dataset-option")}
    data["transform_options"] = {**data["transform_options"],
                                 **parse_assignments(transform_option, "--transform-option")}
    config = RunConfig.from_dict(data)

    console = _console(stderr=True)
    with console.status("loading plugins, dataset and detector..."):
        from fbench.train.engine import train_and_evaluate
        from fbench.train.resolve import resolve

        resolved = resolve(config)
    c = resolved.config
    skipped = (resolved.preflight or {}).get("skipped", 0)
    if skipped:
        console.print(f"[yellow]--skip-bad:[/] {skipped} bad file(s) left out, e.g. "
                      f"{resolved.preflight['bad'][0]['path']} "
                      f"({resolved.preflight['bad'][0]['reason']}); listed in config.json")
    counts = resolved.manifest["split"].value_counts()
    console.print(f"[bold]{c.detector}[/] on [bold]{c.dataset}[/] (transform {c.transform}, "
                  f"{resolved.input_size}px): train {counts.get('train', 0)}, "
                  f"val {counts.get('val', 0)}, eval {counts.get('eval', 0)} images; "
                  f"{c.epochs} epochs, batch {c.batch_size}, lr {c.lr:g}, seed {c.seed}; "
                  f"protocol {c.protocol}, {c.resample} resize"
                  + (", TF32 allowed" if c.tf32 else ""))
    run_dir = train_and_evaluate(resolved, console=console, progress=not no_progress)
    _finish(run_dir)


def _finish(run_dir: Path) -> None:
    """Show the run (once, from rank 0 under torchrun) and leave the process group."""
    from fbench.train.distributed import DistContext, cleanup

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        _show(run_dir, _console())
    cleanup(DistContext(world, rank))


def _resume(run_dir: Path, no_progress: bool) -> None:
    from fbench.runs.store import load_run
    from fbench.train.engine import train_and_evaluate
    from fbench.train.resolve import resolve
    from fbench.use.reproduce import run_config

    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FbenchError(f"{run_dir} is not a run directory (no config.json).",
                          "pass the directory `fbench run` printed.")
    # the stored settings (config.json's "audit" holds the audit's result, which
    # run_config reads back as the setting, so a resumed run is audited as it was)
    config = run_config(load_run(run_dir))
    # the run stays where it is, whatever directory this is called from
    config = config.replace(out=str(run_dir.parent))
    console = _console(stderr=True)
    resolved = resolve(config)
    done = train_and_evaluate(resolved, console=console, progress=not no_progress,
                              resume=run_dir)
    _finish(done)


def _show(run_dir: Path, console: Console) -> None:
    from fbench.report.console import confusion_table, results_table
    from fbench.runs.store import load_run

    run = load_run(run_dir)
    if run.predictions is None:
        state = run.status.get("state", "unknown")
        raise FbenchError(f"run {run_dir} has no predictions (state: {state}"
                          + (f": {run.status['error']}" if run.status.get("error") else "") + ").")
    metrics = run.metrics("eval")  # recomputed from predictions.parquet, not read from summary
    cfg = run.config
    console.print(f"run [bold]{run.id}[/]  ({cfg['detector']} / {cfg['dataset']} / "
                  f"{cfg['transform']}, seed {cfg['seed']}, "
                  f"{cfg.get('n_parameters', 0) / 1e6:.2f} M parameters)")
    if run.summary:
        console.print(f"selected epoch {run.summary['selected_epoch']} of "
                      f"{run.summary['epochs']} by {run.summary['selection']}; "
                      f"{run.summary['seconds']:.0f} s")
    console.print(results_table(metrics, "eval split (recomputed from predictions.parquet)"))
    console.print(confusion_table(metrics["confusion_matrix"]))
    if (run.summary or {}).get("last"):
        last = run.metrics("eval", "last")
        console.print(f"last epoch ({run.summary['last']['epoch']}): eval macro-F1 "
                      f"{last['macro_f1']:.4f}, accuracy {last['accuracy']:.4f} "
                      "(recomputed from predictions-last.parquet)")
    for line in cfg.get("warnings") or []:
        console.print(f"[bold yellow]warning:[/] {line}")
    settings = {k: cfg.get(k) for k in ("protocol", "resample", "tf32") if k in cfg}
    if settings:
        console.print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if run.summary:
        stored = run.summary["eval"]
        drift = [k for k in ("macro_f1", "accuracy", "binary_auc")
                 if stored.get(k) is not None and abs(stored[k] - metrics[k]) > 1e-9]
        if drift:
            console.print(f"[bold red]summary.json disagrees with predictions on "
                          f"{', '.join(drift)}[/]")
    console.print(f"stored in {run.path}")


@cli.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
def show_cmd(run_dir: Path) -> None:
    """Print a stored run's eval metrics, recomputed from its predictions."""
    _show(run_dir, _console())


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(KINDS)))
@click.argument("pattern", required=False)
def list_cmd(kind: str | None, pattern: str | None) -> None:
    """List registered datasets, transforms and detectors (optionally one KIND, filtered by a
    shell PATTERN such as 'f3net-*')."""
    from fbench.plugins.registry import get_registry

    reg = get_registry()
    console = _console()
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
                needs = [n for n, flag in (("masks", spec.needs_masks),
                                           ("landmarks", spec.needs_landmarks)) if flag]
                cells += [str(spec.input_size), ", ".join(needs) or "–"]
            table.add_row(*cells, reg.provider(singular, name))
        console.print(table)


@cli.command("plugins")
def plugins_cmd() -> None:
    """List loaded plugins: where each comes from and what it registers."""
    from fbench.plugins.registry import ENV_LOAD_PLUGINS, get_registry

    table = Table(header_style="bold")
    for col in ("plugin", "package", "version", "datasets", "transforms", "detectors"):
        table.add_column(col)
    for p in get_registry().plugins():
        table.add_row(p.name, (p.distribution or "–") + (" (built-in)" if p.builtin else ""),
                      p.version or "–", ", ".join(p.datasets) or "–",
                      ", ".join(p.transforms) or "–", ", ".join(p.detectors) or "–")
    console = _console()
    console.print(table)
    if os.environ.get(ENV_LOAD_PLUGINS) is not None:
        console.print(f"{ENV_LOAD_PLUGINS}={os.environ[ENV_LOAD_PLUGINS]!r} restricts which "
                      "external packages load.")


@cli.command("ablate")
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
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True))
@click.option("--input-size", type=click.IntRange(min=8))
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True)
@click.option("--resample", type=click.Choice(["bilinear", "area"]), default="bilinear",
              show_default=True, help="How images are resized (see fbench run --help).")
@click.option("--protocol", default="fbench", show_default=True,
              help="Training recipe for every variant (fbench, or thesis: the thesis's own).")
@click.option("--checkpoint", type=click.Choice(["selected", "last"]), default="selected",
              show_default=True, help="Table the epoch selected on validation, or the last.")
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
              help="An option for every variant's factory.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="Runs directory (searched for reusable runs).")
@click.option("--output", "-o", "output", type=click.Path(path_type=Path),
              help="Markdown file for the table [default: <out>/ablation-<name>-<dataset>.md].")
@click.option("--no-progress", is_flag=True)
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
    from fbench.report.ablate import ablate, ablation_markdown, resolve_variants
    from fbench.runs.store import atomic_path, prepare_out_dir
    from fbench.train.config import RunConfig, parse_assignments

    tf_list: list[str] | None = None
    if detector:
        # `--transforms raw dct dft`: the names after the first land in NAMES
        tf_list = [t for part in [transforms or "", *names] for t in part.split(",") if t]
        if not tf_list:
            raise FbenchError("--detector needs --transforms.",
                              "e.g. fbench ablate --detector resnet18 --transforms raw dct dft")
        spec, variants = None, [(detector, detector)]
        get_name = detector
    else:
        if not names:
            raise FbenchError("name the variants to ablate, e.g. `fbench ablate fad lfs mix`.",
                              "`fbench list detectors` shows the detectors.")
        spec, variants = resolve_variants(names, family)
        get_name = spec.family if spec else "detectors"
        if transforms:
            tf_list = [t for t in transforms.split(",") if t]
    base = RunConfig(dataset=dataset, data_root=str(data_root) if data_root else None,
                     out=str(out), dataset_options=parse_assignments(dataset_option,
                                                                     "--dataset-option"),
                     options=parse_assignments(set_, "--set"),
                     **{k: v for k, v in settings.items() if v is not None})
    prepare_out_dir(out)
    console = _console(stderr=True)
    rows = ablate(variants, base, [seed + i for i in range(seeds)], reuse=reuse,
                  transforms=tf_list, console=console, progress=not no_progress,
                  checkpoint=checkpoint)
    text = ablation_markdown(rows, spec, command_line())
    target = output or out / f"ablation-{get_name}-{dataset}.md"
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    click.echo(text)  # plain: rich would wrap the markdown lines
    click.echo(f"written to {target}")


@cli.command("leaderboard")
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
    from fbench.report.leaderboard import bootstrap_difference, completed_runs, leaderboard, render
    from fbench.runs.store import atomic_path, load_run

    if compare:
        a, b = (load_run(p) for p in compare)
        d = bootstrap_difference(a, b, n=resamples)
        click.echo(f"macro-F1 {a.id} − {b.id}: {d['difference']:+.2f} points, 95% CI "
                   f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] ({d['resamples']} "
                   f"{'paired ' if d['paired'] else ''}bootstrap resamples of eval images)")
        return
    if not runs_dir.is_dir():
        raise FbenchError(f"runs directory {runs_dir} does not exist.", "pass --runs DIR.")
    runs = completed_runs(runs_dir)
    board = leaderboard(runs, dataset, checkpoint)
    if board.empty:
        raise FbenchError(f"no completed runs in {runs_dir}"
                          + (f" on dataset {dataset!r}" if dataset else "") + ".")
    if layout == "thesis":
        if fmt != "md":
            raise FbenchError("--layout thesis is markdown only.", "drop --format.")
        import pandas as pd

        from fbench.report.layout import layout_markdown
        from fbench.report.tables import run_row

        rows = pd.DataFrame([run_row(r, checkpoint) for r in runs
                             if dataset is None or r.config["dataset"] == dataset])
        text = layout_markdown(rows, command_line(), by="detector")
    else:
        text = render(board, fmt, command_line())
    if output:
        with atomic_path(output) as tmp:
            tmp.write_text(text)
        click.echo(f"written to {output}")
    else:
        click.echo(text)


def run_fbench(command: str) -> None:
    """Run one ``fbench ...`` command line in this process (a board's preparation step)."""
    import shlex

    add_plugin_commands()  # plugin commands (e.g. `data landmarks`); adding twice is harmless
    args = shlex.split(command)
    if not args or args[0] != "fbench":
        raise FbenchError(f"board preparation {command!r} is not an fbench command.")
    try:
        cli.main(args[1:], prog_name="fbench", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise FbenchError(f"board preparation {command!r} failed (exit {exc.code}).") \
                from None



@cli.command("regenerate")
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
@click.option("--no-progress", is_flag=True)
def regenerate_cmd(files: tuple[str, ...], boards_file: Path, runs_dir: Path, reuse: bool,
                   check: bool, no_progress: bool) -> None:
    """Rebuild the committed leaderboards and ablation tables (all, or the FILES named).

    \b
    fbench regenerate                              # every table in leaderboards/boards.toml
    fbench regenerate leaderboards/synthetic.md    # one table
    fbench regenerate --check leaderboards/smoke-synthetic.md
    """
    import tempfile
    import time

    from fbench.files import atomic_path
    from fbench.report.boards import build, differences, load_boards, select

    console = _console(stderr=True)
    failed = []
    for board in select(load_boards(boards_file), files):
        start = time.perf_counter()
        if check:
            if not board.file.is_file():
                raise FbenchError(f"{board.file} does not exist, nothing to check against.",
                                  f"run `{board.command(boards_file)}` first.")
            with tempfile.TemporaryDirectory(prefix="fbench-check-") as scratch:
                text = build(board, boards_file, Path(scratch), reuse=False, console=console,
                             progress=not no_progress, run_command=run_fbench)
            diff = differences(board.file.read_text(), text)
            if diff.empty:
                console.print(f"[green]{board.file}: reproduced[/] "
                              f"({time.perf_counter() - start:.0f} s)")
            else:
                failed.append(board.file)
                console.print(f"[red]{board.file}: {len(diff)} cell(s) differ[/]")
                click.echo(diff.to_string(index=False))
            continue
        text = build(board, boards_file, runs_dir, reuse=reuse, console=console,
                     progress=not no_progress, run_command=run_fbench)
        with atomic_path(board.file) as tmp:
            tmp.write_text(text)
        console.print(f"{board.file}: written ({time.perf_counter() - start:.0f} s)")
    if failed:
        raise SystemExit(1)


@cli.command("bench")
@click.option("--detector", "-d", "detectors", multiple=True, required=True,
              help="Detector to measure (repeat for several: one row each).")
@click.option("--dataset", default="synthetic", show_default=True,
              help="Dataset whose images feed the data pipeline and the batches.")
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
              help="An option for the detector's factory.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--input-size", type=click.IntRange(min=8),
              help="Input side in pixels [default: the detector's, capped at the dataset's].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Memory format [default: channels_last on CUDA only].")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training steps per timed round.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed rounds (bare loop and fbench step alternate; the median counts).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes.")
@click.option("--cache-images/--no-cache-images", default=None,
              help="Keep decoded, resized images in memory [default: for small datasets].")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Also write the table as markdown (with the command at its top).")
def bench_cmd(detectors: tuple[str, ...], dataset: str, data_root: Path | None,
              dataset_option: tuple[str, ...], set_: tuple[str, ...], device: str,
              batch_size: int, input_size: int | None, precision: str,
              channels_last: bool | None, compile_model: bool, steps: int, rounds: int,
              warmup: int, workers: int, cache_images: bool | None,
              output: Path | None) -> None:
    """Measure images/s of the data pipeline, of the bare model step and of fbench's own
    training step side by side; print the harness overhead (fbench step / bare loop, goal
    <= 1.05), data/model throughput ratio, peak memory and achieved TFLOP/s.

    \b
    fbench bench -d resnet18 -d f3net-mix --device cpu --batch-size 8
    fbench bench -d f3net-mix --device cuda --batch-size 32 --input-size 224 --compile
    """
    import tempfile

    from fbench.report.console import bench_markdown, bench_table
    from fbench.train.config import RunConfig, parse_assignments
    from fbench.use.bench import run_bench

    console = _console(stderr=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="fbench-bench-") as scratch:
        for det in detectors:
            config = RunConfig(
                detector=det, dataset=dataset, device=device, batch_size=batch_size,
                input_size=input_size, precision=precision, workers=workers,
                cache_images=cache_images, out=scratch,
                data_root=str(data_root) if data_root else None,
                dataset_options=parse_assignments(dataset_option, "--dataset-option"),
                options=parse_assignments(set_, "--set"))
            with console.status(f"measuring {det}..."):
                results.append(run_bench(config, steps=steps, warmup=warmup, rounds=rounds,
                                         channels_last=channels_last,
                                         compile_model=compile_model))
    _console().print(bench_table(results))
    if output:
        from fbench.files import atomic_path

        with atomic_path(output) as tmp:
            tmp.write_text(bench_markdown(results, command_line()))
        click.echo(f"written to {output}")


@cli.group("plot")
def plot_group() -> None:
    """Pictures (PNG) of runs and datasets: confusion, curves, spectrum, gradcam."""


def _written(path: Path) -> None:
    click.echo(f"written to {path}")


@plot_group.command("confusion")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["eval", "val"]), default="eval", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="PNG file [default: confusion-<run-id>.png].")
def plot_confusion_cmd(run_dir: Path, split: str, output: Path | None) -> None:
    """Confusion matrix of RUN_DIR's eval split, recomputed from its predictions."""
    from fbench.report.plots import plot_confusion
    from fbench.runs.store import load_run

    run = load_run(run_dir)
    _written(plot_confusion(run, output or Path(f"confusion-{run.id}.png"), split))


@plot_group.command("curves")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("curves.png"),
              show_default=True, help="PNG file.")
def plot_curves_cmd(run_dirs: tuple[Path, ...], output: Path) -> None:
    """Train loss and validation macro-F1 per epoch of one or more runs."""
    from fbench.report.plots import plot_curves

    _written(plot_curves(list(run_dirs), output))


@plot_group.command("spectrum")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE")
@click.option("--per", type=click.Choice(["class", "source"]), default="class",
              show_default=True, help="One row per class or per source.")
@click.option("--max-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Images sampled per group.")
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Common side the images are resized to.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="PNG file [default: spectrum-<dataset>-<per>.png].")
def plot_spectrum_cmd(dataset: str, data_root: Path | None, dataset_option: tuple[str, ...],
                      per: str, max_images: int, size: int, output: Path | None) -> None:
    """Average log-magnitude DCT and DFT spectra of DATASET's grayscale images."""
    from fbench.api import load_dataset
    from fbench.report.plots import plot_spectrum
    from fbench.train.config import parse_assignments

    options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None, **options)
    target = output or Path(f"spectrum-{dataset}-{per}.png")
    _written(plot_spectrum(manifest, target, per=per, size=size, max_images=max_images,
                           title=f"{dataset}: average spectra per {per}"))


@plot_group.command("gradcam")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layer", help="Dotted module name to explain [default: the last Conv2d].")
@click.option("--target-class", type=click.IntRange(0, 2),
              help="Class to explain: 0 real, 1 generated, 2 edited [default: predicted].")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="PNG file [default: gradcam-<run-id>.png].")
def plot_gradcam_cmd(run_dir: Path, images: tuple[Path, ...], layer: str | None,
                     target_class: int | None, output: Path | None) -> None:
    """Grad-CAM of RUN_DIR's selected checkpoint on IMAGES."""
    from fbench.report.plots import plot_gradcam
    from fbench.runs.store import load_run

    run = load_run(run_dir)
    _written(plot_gradcam(run, list(images), output or Path(f"gradcam-{run.id}.png"),
                          layer=layer, target_class=target_class))


@cli.group("data")
def data_group() -> None:
    """Build, audit and prepare datasets."""


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

    from fbench.data.built import build_dataset
    from fbench.plugins.registry import get_registry

    spec = get_registry().recipe(recipe)
    console = _console()
    with Progress(console=_console(stderr=True), transient=True) as bar:
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


def _attach_probe() -> None:
    from fbench.cli.probe import probe_cmd

    data_group.add_command(probe_cmd)


_attach_probe()


@data_group.command("recipes")
def data_recipes_cmd() -> None:
    """List the registered dataset recipes."""
    from fbench.plugins.registry import get_registry

    table = Table(header_style="bold")
    for col in ("recipe", "summary", "train", "eval", "masks", "plugin"):
        table.add_column(col)
    for name, (r, plugin) in sorted(get_registry().recipes().items()):
        table.add_row(name, r.summary, str(r.total("train")), str(r.total("eval")),
                      "yes" if r.with_masks else "–", plugin)
    _console().print(table)


@data_group.command("audit")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="The dataset's directory (a built dataset's --out).")
@click.option("--near", type=int, default=4, show_default=True,
              help="Hamming distance of perceptual hashes that counts as a near-duplicate.")
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE")
def data_audit_cmd(dataset: str, data_root: Path | None, near: int,
                   dataset_option: tuple[str, ...]) -> None:
    """Audit DATASET for leaks between splits; exits non-zero on any offender."""
    from fbench.api import load_dataset
    from fbench.data.audit import audit
    from fbench.train.config import parse_assignments

    options = parse_assignments(dataset_option, "--dataset-option")
    manifest = load_dataset(dataset, str(data_root) if data_root else None, **options)
    report = audit(manifest, manifest.attrs.get("expected_balance"), near_threshold=near,
                   balance_tolerance=0.02)
    console = _console()
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
    summary = ", ".join(f"{k} {v}" for k, v in report.summary().items())
    if not report.ok:
        raise FbenchError(f"audit of {dataset} failed: {summary}.",
                          "rebuild the dataset with grouped splits.")
    console.print(f"audit of {dataset} passed: {summary}.")


def add_plugin_commands() -> None:
    """Let plugins add commands (e.g. ``fbench data prepare ...``). Plugin modules are light
    (no torch at import), so this keeps ``fbench --help`` fast."""
    from fbench.plugins.registry import get_registry

    try:
        get_registry().hook.register_commands(cli=cli)
    except FbenchError as exc:  # a broken plugin must not take the whole CLI down
        _console(stderr=True).print(f"[yellow]warning:[/] {exc.format_message()}")


# predict, robustness, reproduce: the commands that use a stored run (fbench/cli/use.py)
from fbench.cli import use as cli_use  # noqa: E402  (after `cli` exists; light: click only)

cli_use.attach(cli)


def main() -> None:
    add_plugin_commands()
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
