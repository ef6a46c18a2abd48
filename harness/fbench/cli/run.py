"""``fbench run`` (train, select, evaluate, store; or ``--resume``) and ``fbench show``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import fbench.cli.options as options
from fbench.cli.output import console as make_console
from fbench.errors import FbenchError
from fbench.markdown import count

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
@options.cache
@options.protocol
@click.option("--tf32", is_flag=True,
              help="Allow TF32 convolutions/matmuls on CUDA (faster, less exact; off by "
              "default because it moves small spectral features).")
@click.option("--keep-last", is_flag=True,
              help="Keep checkpoints/last.pt (optimizer and RNG state, about twice the model) "
              "after the run completes; by default only best.pt (the model) stays.")
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
@click.option("--workers", type=options.Workers(), metavar="N|auto",
              help=options.WORKERS_HELP + " The run stores the number used. [default: auto]")
@options.channels_last
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model for training (faster steps once compiled; the "
              "first step's compile time is stored apart as compile_warmup_seconds and not "
              "counted in the throughput). Speed only: recorded, not part of the "
              "configuration.")
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
            skip_bad: bool, tf32: bool, keep_last: bool, compile_model: bool,
            resume: Path | None, **flags: Any) -> None:
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
    switches = {"skip_audit": skip_audit, "skip_bad": skip_bad, "tf32": tf32,
                "keep_last": keep_last, "compile": compile_model}
    if resume is not None:
        refuse_changes_on_resume(config_file, flags, assignments, switches)
        _resume(resume, no_progress)
        return
    config = merge_run_config(config_file, flags, assignments, switches)
    console = make_console(stderr=True)
    with console.status("loading plugins, dataset and detector..."):
        from fbench.train.resolve import resolve

        resolved = resolve(config)
    _announce(resolved, console)
    _train(resolved, console, no_progress)


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
                  f"{count(c.epochs, 'epoch')} at most, batch {c.batch_size}, lr {c.lr:g}, "
                  f"seed {c.seed}; "
                  f"protocol {c.protocol}, {c.resample} resize"
                  + (", TF32 allowed" if c.tf32 else "") + (", compiled" if c.compile else ""))


def _train(resolved: ResolvedRun, console: Console, no_progress: bool,
           resume: Path | None = None) -> None:
    """Train (or resume) and show the run; Ctrl-C or SIGTERM ends it with one line that says
    how far it got and how to resume, and the shell's exit code for the signal (130, 143)."""
    from fbench.report.console import warnings_in_voice
    from fbench.runs.writer import RunInterrupted
    from fbench.train.engine import train_and_evaluate

    try:
        with warnings_in_voice(console, set()):
            run_dir = train_and_evaluate(resolved, console=console, progress=not no_progress,
                                         resume=resume)
    except RunInterrupted as exc:
        if int(os.environ.get("RANK", "0")) == 0:  # once under torchrun
            click.echo(str(exc), err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    _finish(run_dir)


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
    from fbench.runs.writer import lock_run
    from fbench.train.resolve import resolve
    from fbench.use.reproduce import run_config

    config_file = run_dir / "config.json"
    if not run_dir.exists():
        raise FbenchError(f"{run_dir} does not exist.", "pass the directory `fbench run` printed.")
    if not config_file.is_file():
        raise FbenchError(f"{run_dir} is not a run directory (no config.json).",
                          "pass the directory `fbench run` printed.")
    # a run another process still writes is refused now, before the dataset loads (the
    # engine takes the lock for the whole run; this only asks early)
    lock_run(run_dir).release()
    _check_resumable(run_dir)
    # the stored settings (config.json's "audit" holds the audit's result, which
    # run_config reads back as the setting, so a resumed run is audited as it was)
    config = run_config(load_run(run_dir))
    # the run stays where it is, whatever directory this is called from
    config = config.replace(out=str(run_dir.parent))
    console = make_console(stderr=True)
    resolved = resolve(config)
    _train(resolved, console, no_progress, resume=run_dir)


def _check_resumable(run_dir: Path) -> None:
    """What the engine would refuse after loading the dataset, said before it loads (the
    dataset can take minutes): a completed run, or one with no epoch saved."""
    from fbench.runs.writer import RunWriter

    writer = RunWriter(run_dir)
    if writer.read_status().get("state") == "completed":
        raise FbenchError(f"run {run_dir} is already completed; nothing to resume.",
                          "start a new run (or `fbench reproduce` it).")
    if not writer.checkpoint_path("last").is_file():
        raise FbenchError(f"run {run_dir} has no checkpoint to resume from (it stopped during "
                          "its first epoch).", "start the run again.")


def show(run_dir: Path, console: Console, allow_edited: bool = False) -> None:
    """Print a stored run: its eval metrics recomputed from predictions, its settings and
    warnings, and any disagreement with the summary it stored. A run edited after it was
    stored is refused unless ``allow_edited`` (then it is shown marked as edited)."""
    from rich.markup import escape

    from fbench.report.console import confusion_table, results_table
    from fbench.runs.store import load_run

    run = load_run(run_dir, allow_edited)
    if run.edited:
        console.print(f"[bold red]EDITED:[/] {escape(', '.join(run.edited))} changed since the run "
                      "stored it (digests.json): these numbers are not what was trained.")
    if run.predictions is None:
        raise _no_predictions(run, run_dir)
    metrics = run.metrics("eval")  # recomputed from predictions.parquet, not read from summary
    cfg = run.config
    # names and paths are text, never rich markup
    console.print(f"run [bold]{escape(run.id)}[/]  "
                  + escape(f"({cfg['detector']} / {cfg['dataset']} / {cfg['transform']}, "
                           f"seed {cfg['seed']}, "
                           f"{cfg.get('n_parameters', 0) / 1e6:.2f} M parameters)"))
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
        console.print(f"[bold yellow]warning:[/] {escape(line)}")
    settings = {k: cfg.get(k) for k in ("protocol", "resample", "tf32") if k in cfg}
    if settings:
        console.print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
                      markup=False)
    drift = _drift(run.summary, metrics)
    if drift:
        console.print(f"[bold red]summary.json disagrees with predictions on "
                      f"{', '.join(drift)}[/]")
    console.print(f"stored in {escape(str(run.path))}")


def _drift(summary: dict[str, Any] | None, metrics: dict[str, Any]) -> list[str]:
    """The headline metrics on which the stored summary and the predictions disagree."""
    stored = (summary or {}).get("eval") or {}
    return [k for k in ("macro_f1", "accuracy", "binary_auc")
            if stored.get(k) is not None and abs(stored[k] - metrics[k]) > 1e-9]


def show_json(run_dir: Path, allow_edited: bool = False) -> dict[str, Any]:
    """What :func:`show` prints, as one JSON-ready document for ``fbench show --json``."""
    from fbench.runs.store import load_run

    run = load_run(run_dir, allow_edited)
    if run.predictions is None:
        raise _no_predictions(run, run_dir)
    cfg, summary = run.config, run.summary or {}
    metrics = run.metrics("eval")
    return {
        "run": run.id, "path": str(run.path), "edited": list(run.edited),
        **{k: cfg.get(k) for k in ("detector", "dataset", "transform", "seed",
                                   "n_parameters", "options")},
        "selected_epoch": summary.get("selected_epoch"), "epochs": summary.get("epochs"),
        "selection": summary.get("selection"), "seconds": summary.get("seconds"),
        "eval": metrics,  # recomputed from predictions.parquet, as show prints it
        "last": ({"epoch": summary["last"]["epoch"], **run.metrics("eval", "last")}
                 if summary.get("last") else None),
        "warnings": list(cfg.get("warnings") or []),
        "settings": {k: cfg.get(k) for k in ("protocol", "resample", "tf32") if k in cfg},
        "summary_disagrees_on": _drift(run.summary, metrics),
    }


def _no_predictions(run: Any, run_dir: Path) -> FbenchError:
    state = run.status.get("state", "unknown")
    return FbenchError(f"run {run_dir} has no predictions (state: {state}"
                      + (f": {run.status['error']}" if run.status.get("error") else "") + ").")


@click.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--allow-edited", is_flag=True,
              help="Show a run whose stored results changed since it finished (its "
              "digests.json no longer matches), marked as edited, instead of refusing it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (settings, recomputed eval metrics, confusion "
              "matrix) for scripts.")
def show_cmd(run_dir: Path, allow_edited: bool, as_json: bool) -> None:
    """Print a stored run's eval metrics, recomputed from its predictions."""
    if not os.path.lexists(run_dir):  # before "not a run directory": there is nothing there
        raise FbenchError(f"{run_dir} does not exist.",
                          "pass a run directory, e.g. runs/<run-id> (`ls runs`).")
    if as_json:
        from fbench.cli.output import emit_json

        emit_json(show_json(run_dir, allow_edited))
        return
    show(run_dir, make_console(), allow_edited)
