"""``fbench run`` (train, select, evaluate, store; or ``--resume``) and ``fbench show``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.errors import FbenchError

if TYPE_CHECKING:
    from rich.console import Console

    from fbench.train.resolve import ResolvedRun


@click.command("run")
@click.option("--detector", "-d", help="Detector name (see `fbench list detectors`). "
              "[default: resnet18]")
@click.option("--dataset", help="Dataset name (see `fbench list datasets`). [default: synthetic]")
@click.option("--transform", "-t", help="Preprocessing transform; default: the detector's own.")
@options.epochs
@options.batch_size
@options.lr
@options.convergence
@click.option("--seed", type=int, help="Seed for data order, validation carving and init. "
              "[default: 0]")
@options.device
@options.precision
@options.input_size
@options.resample
@options.protocol
@click.option("--tf32", is_flag=True,
              help="Allow TF32 convolutions/matmuls on CUDA (faster, less exact; off by "
              "default because it moves small spectral features).")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Directory that receives the run directory. [default: runs]")
@options.data_root
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="A TOML file with any of these settings; flags given here win.")
@options.set_
@options.dataset_option
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
    from fbench.cli.config_merge import merge_run_config, refuse_changes_on_resume

    assignments = {"--set": set_, "--dataset-option": dataset_option,
                   "--transform-option": transform_option}
    switches = {"skip_audit": skip_audit, "skip_bad": skip_bad, "tf32": tf32}
    if resume is not None:
        refuse_changes_on_resume(config_file, flags, assignments, switches)
        _resume(resume, no_progress)
        return
    config = merge_run_config(config_file, flags, assignments, switches)
    console = make_console(stderr=True)
    with console.status("loading plugins, dataset and detector..."):
        from fbench.train.engine import train_and_evaluate
        from fbench.train.resolve import resolve

        resolved = resolve(config)
    _announce(resolved, console)
    run_dir = train_and_evaluate(resolved, console=console, progress=not no_progress)
    _finish(run_dir)


def _announce(resolved: ResolvedRun, console: Console) -> None:
    """One line of what is about to be trained (and what --skip-bad left out)."""
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


def _finish(run_dir: Path) -> None:
    """Show the run (once, from rank 0 under torchrun) and leave the process group."""
    from fbench.train.distributed import DistContext, cleanup

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        show(run_dir, make_console())
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
    console = make_console(stderr=True)
    resolved = resolve(config)
    done = train_and_evaluate(resolved, console=console, progress=not no_progress,
                              resume=run_dir)
    _finish(done)


def show(run_dir: Path, console: Console) -> None:
    """Print a stored run: its eval metrics recomputed from predictions, its settings and
    warnings, and any disagreement with the summary it stored."""
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


@click.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
def show_cmd(run_dir: Path) -> None:
    """Print a stored run's eval metrics, recomputed from its predictions."""
    show(run_dir, make_console())
