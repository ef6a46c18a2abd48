"""Reproducing a stored run: check that the data and the environment are the run's, retrain
with the stored configuration and seed into a new run directory, and compare every metric.

Data and environment are checked by :mod:`fbench.use.reproduce_checks`: a data mismatch stops
the rerun unless forced; an environment mismatch is shown, and it turns the expectation from
"identical" into "within a tolerance". On CPU the rerun uses the stored thread count, since
float reductions split over another number of threads round differently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS
from fbench.use.reproduce_checks import (
    NAMED,
    dataset_differences,
    environment_differences,
    expected_agreement,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

    from fbench.runs.store import Run
    from fbench.train.config import RunConfig
    from fbench.train.resolve import ResolvedRun

COMPARED_METRICS = ("macro_f1", "accuracy", "f1_real", "f1_generated", "f1_edited", "auc_ovr",
                    "binary_auc", "binary_ap", "binary_eer", "binary_threshold", "binary_f1",
                    "dice_edited", "iou_edited")


# -- the stored configuration ----------------------------------------------------------------

def run_config(run: Run) -> RunConfig:
    """The :class:`RunConfig` a stored run was resolved to (:meth:`RunConfig.from_stored`)."""
    from fbench.train.config import RunConfig

    return RunConfig.from_stored(run.config, source=str(run.path / "config.json"))


def resolve_stored(run: Run, **changes: Any) -> ResolvedRun:
    """Resolve a stored run's configuration again (loads its dataset's manifest)."""
    from fbench.train.resolve import resolve

    return resolve(run_config(run).replace(**changes))


# -- comparison ------------------------------------------------------------------------------

def _metric_rows(run: Run, prefix: str = "") -> dict[str, Any]:
    from fbench.metrics import metrics_from_predictions

    out: dict[str, Any] = {}
    if run.predictions is None:
        return out
    for split in ("eval", "val"):
        if not (run.predictions["split"] == split).any():
            continue
        m = metrics_from_predictions(run.predictions, split)
        out.update({f"{split} {k}": m.get(k) for k in COMPARED_METRICS if k in m})
    if run.summary and run.summary.get("selected_epoch") is not None:
        out["selected epoch"] = int(run.summary["selected_epoch"])
    for row in run.epochs.to_dict(orient="records"):
        for key, value in row.items():
            if key == "val_macro_f1" or (key.startswith("train_") and key not in
                                         ("train_seconds", "train_images_per_s")):
                out[f"epoch {int(row['epoch'])} {key}"] = value
    return out


def compare_runs(stored: Run, rerun: Run) -> pd.DataFrame:
    """Every metric of two runs side by side (recomputed from their predictions; per-epoch
    losses and validation macro-F1 for the epochs both ran), with ``difference`` = rerun −
    stored, and how the eval predictions differ image by image."""
    a, b = _metric_rows(stored), _metric_rows(rerun)
    keys = [k for k in a if k in b]
    rows = [{"metric": k, "stored": a[k], "rerun": b[k],
             "difference": (None if a[k] is None or b[k] is None
                            else float(b[k]) - float(a[k]))} for k in keys]
    if stored.predictions is not None and rerun.predictions is not None:
        cols = ["path", "pred", *PROB_COLUMNS]
        pa = stored.predictions[stored.predictions["split"] == "eval"][cols]
        pb = rerun.predictions[rerun.predictions["split"] == "eval"][cols]
        joined = pa.merge(pb, on="path", suffixes=("_a", "_b"))
        changed = int((joined["pred_a"] != joined["pred_b"]).sum())
        delta = max((float(np.abs(joined[f"{c}_a"] - joined[f"{c}_b"]).max())
                     for c in PROB_COLUMNS), default=0.0) if len(joined) else 0.0
        rows.append({"metric": "eval images whose class changed", "stored": 0,
                     "rerun": changed, "difference": float(changed)})
        rows.append({"metric": "eval max |probability difference|", "stored": 0.0,
                     "rerun": delta, "difference": delta})
    return pd.DataFrame(rows, columns=["metric", "stored", "rerun", "difference"])


def _moved(row: Any, tolerance: float) -> bool:
    if row["difference"] is None or (isinstance(row["difference"], float)
                                     and math.isnan(row["difference"])):
        # one side undefined (e.g. AUC with one class present) and the other not
        return (row["stored"] is None) != (row["rerun"] is None)
    if row["metric"] == "eval images whose class changed":
        return row["difference"] > (0 if tolerance == 0 else math.inf)
    return abs(row["difference"]) > tolerance


@dataclass
class ReproduceResult:
    run: Run
    rerun: Run | None
    data: pd.DataFrame
    environment: pd.DataFrame
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)
    tolerance: float = 0.0
    exact_expected: bool = True
    forced: bool = False

    @property
    def moved(self) -> pd.DataFrame:
        """The compared rows that differ beyond the tolerance."""
        if self.comparison.empty:
            return self.comparison
        mask = self.comparison.apply(_moved, axis=1, tolerance=self.tolerance)
        return self.comparison[mask.astype(bool)]

    @property
    def ok(self) -> bool:
        return self.rerun is not None and self.moved.empty

    def verdict(self) -> str:
        if self.ok:
            return (f"reproduced: every metric identical to run {self.run.id}"
                    if self.exact_expected else
                    f"reproduced within tolerance {self.tolerance:g} of run {self.run.id}")
        moved = self.moved
        parts = [f"{r.metric} by {r.difference:+.6g} ({_fmt(r.stored)} -> {_fmt(r.rerun)})"
                 if r.difference is not None else
                 f"{r.metric} ({_fmt(r.stored)} -> {_fmt(r.rerun)})"
                 for r in moved.itertuples()]
        return (f"not reproduced: {len(moved)} metric(s) moved beyond tolerance "
                f"{self.tolerance:g}: " + "; ".join(parts[:8])
                + (f"; and {len(parts) - 8} more" if len(parts) > 8 else ""))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def data_table(data: pd.DataFrame) -> Table:
    from rich.table import Table

    t = Table(title="the data differs from the run's", header_style="bold")
    for col in ("check", "item", "stored", "now"):
        t.add_column(col, overflow="fold")
    for row in data.head(20).itertuples(index=False):
        t.add_row(*map(str, row))
    if len(data) > 20:
        t.add_row(f"... and {len(data) - 20} more", "", "", "")
    return t


def environment_table(env: pd.DataFrame) -> Table:
    from rich.table import Table

    t = Table(title="environment", header_style="bold")
    for col in ("", "stored", "now", "same"):
        t.add_column(col)
    for row in env.itertuples(index=False):
        same = "yes" if row.same else ("[bold red]no[/]" if row.exact else "[yellow]no[/]")
        t.add_row(row.what, row.stored, row.now, same)
    return t


def comparison_table(result: ReproduceResult) -> Table:
    from rich.table import Table

    moved = set(result.moved["metric"]) if not result.comparison.empty else set()
    t = Table(title=f"stored run against its rerun (tolerance {result.tolerance:g})",
              header_style="bold")
    for col in ("metric", "stored", "rerun", "difference"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for row in result.comparison.itertuples(index=False):
        style = "bold red" if row.metric in moved else None
        t.add_row(row.metric, _fmt(row.stored), _fmt(row.rerun), _fmt(row.difference),
                  style=style)
    return t


# -- the whole job ---------------------------------------------------------------------------

def reproduce(run: Run | str | Path, *, out: str | Path | None = None, force: bool = False,
              epochs_from_run: bool = False, device: str | None = None,
              tolerance: float | None = None, console: Console | None = None,
              progress: bool = False) -> ReproduceResult:
    """Check data and environment, retrain ``run``'s configuration with its seed into a new
    run directory under ``out`` (default: ``reproduce/`` beside the run), and compare.

    ``epochs_from_run``: train only up to the epoch the run selected (its checkpoint is the
    same one when training is deterministic, since selection keeps the first best epoch);
    ``tolerance``: absolute, default 0 (identical) when the environment matches on CPU,
    else :data:`fbench.use.reproduce_checks.DEFAULT_TOLERANCE`. Raises :class:`FbenchError`
    when the data differ and ``force`` is not set."""
    import torch
    from rich.console import Console

    from fbench.runs.store import Run, load_run
    from fbench.train.engine import resolve_device, train_and_evaluate

    console = console or Console(stderr=True, quiet=True)
    r = run if isinstance(run, Run) else load_run(run)
    if r.predictions is None or not r.summary:
        raise FbenchError(f"run {r.path} did not complete (state: "
                          f"{r.status.get('state', 'unknown')}); there is nothing to compare "
                          "a rerun with.", "reproduce a completed run.")
    cfg = run_config(r)
    if "detector_options" not in r.config:
        console.print("[yellow]warning:[/] this run predates recorded detector options; the "
                      "rerun builds the detector with today's defaults, which may differ from "
                      "the run's (e.g. GraftNet's residual, the F3Net/ResNet initialisation).")
    dev = str(resolve_device(device or cfg.device))
    changes: dict[str, Any] = {
        "out": str(out if out is not None else r.path.parent / "reproduce"),
        "name": f"reproduce-{r.id}", "device": dev,
        # the loader processes the run's machine had (config.json holds what "auto" resolved
        # to there) are no part of the run: this machine resolves its own
        "workers": "auto",
    }
    if epochs_from_run:
        changes["epochs"] = int(r.summary["selected_epoch"])
    resolved = resolve_stored(r, **changes)

    data = dataset_differences(r, resolved.manifest)
    env = environment_differences(r, dev)
    console.print(environment_table(env))
    if not data.empty:
        console.print(data_table(data))
        if not force:
            named = ", ".join(list(dict.fromkeys(data["item"]))[:NAMED])
            raise FbenchError(
                f"the dataset differs from the one run {r.id} used ({len(data)} "
                f"difference(s): {', '.join(sorted(set(data['check'])))}): {named}.",
                "restore the data the run used, or pass --force to retrain on the data as it "
                "is now (the comparison is then no reproduction).")
    exact, tol = expected_agreement(env, dev, data.empty, tolerance)

    threads = (r.environment or {}).get("torch_threads")
    previous = torch.get_num_threads()
    if dev == "cpu" and threads:
        torch.set_num_threads(int(threads))
    try:
        new_dir = train_and_evaluate(resolved, console=console, progress=progress)
    finally:
        torch.set_num_threads(previous)
    rerun = load_run(new_dir)
    return ReproduceResult(run=r, rerun=rerun, data=data, environment=env,
                           comparison=compare_runs(r, rerun), tolerance=tol,
                           exact_expected=exact, forced=force and not data.empty)
