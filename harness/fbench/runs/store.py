"""The run store: one directory per run, written atomically, read by every report.

    <out>/<run-id>/config.json        the resolved configuration
                   environment.json   versions, git commit, device, plugin providers
                   status.json        running | completed | failed (+ the error)
                   epochs.json        per-epoch train loss and validation metrics
                   predictions.parquet one row per val and eval image
                   summary.json       eval metrics of the selected checkpoint
                   checkpoints/{last,best}.pt

Every file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written file that a report would read.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.files import read_json


def check_out_dir(out: str | Path) -> Path:
    """Refuse an ``--out`` that exists as a file, before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FbenchError(f"--out {out} is a file, not a directory.",
                          "give a directory for runs (it is created if missing).")
    return out


def prepare_out_dir(out: str | Path) -> Path:
    out = check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FbenchError(f"cannot create runs directory {out}: {exc.strerror}.") from None
    return out


def new_run_dir(out: str | Path, detector: str, dataset: str, name: str | None = None) -> Path:
    """Create a fresh, uniquely named run directory (never reuses or touches another run)."""
    out = prepare_out_dir(out)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or f"{detector}-{dataset}")
    for _ in range(100):
        run_dir = out / f"{stamp}-{label}-{secrets.token_hex(3)}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        (run_dir / "checkpoints").mkdir()
        return run_dir
    raise FbenchError(f"could not create a unique run directory in {out}.")


PREDICTIONS = "predictions.parquet"
LAST_PREDICTIONS = "predictions-last.parquet"
"""The last epoch's model's predictions (``predictions.parquet`` holds the selected one's)."""


@dataclass(frozen=True)
class Run:
    """A stored run, read back from its directory."""

    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    status: dict[str, Any]
    epochs: pd.DataFrame
    predictions: pd.DataFrame | None
    summary: dict[str, Any] | None

    @property
    def id(self) -> str:
        return self.path.name

    def predictions_of(self, checkpoint: str = "selected") -> pd.DataFrame:
        """Stored predictions of the ``selected`` checkpoint (chosen on validation) or of the
        ``last`` epoch's model."""
        if checkpoint == "selected":
            preds = self.predictions
        elif checkpoint == "last":
            last = self.path / LAST_PREDICTIONS
            if not last.is_file():
                raise FbenchError(f"run {self.path} stored no last-epoch predictions (it was "
                                  "made by an older fbench).",
                                  "use the selected checkpoint, or rerun it.")
            preds = pd.read_parquet(last)
        else:
            raise FbenchError(f"unknown checkpoint {checkpoint!r}.", "use selected or last.")
        if preds is None:
            raise FbenchError(f"run {self.path} has no predictions (state: "
                              f"{self.status.get('state')}).")
        return preds

    def metrics(self, split: str = "eval", checkpoint: str = "selected") -> dict[str, Any]:
        """Recompute a split's metrics from the stored predictions alone."""
        from fbench.metrics import metrics_from_predictions

        return metrics_from_predictions(self.predictions_of(checkpoint), split)

    def checkpoint(self, which: str = "best") -> Path:
        return self.path / "checkpoints" / f"{which}.pt"


def load_run(path: str | Path) -> Run:
    """Read a run directory. Raises :class:`FbenchError` when it is not one."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FbenchError(f"{p} is not a run directory (no config.json).",
                          "pass a directory under your --out (default: runs/).")
    epochs_file = p / "epochs.json"
    preds_file = p / "predictions.parquet"
    summary_file = p / "summary.json"
    status_file = p / "status.json"
    return Run(
        path=p,
        config=read_json(p / "config.json"),
        environment=read_json(p / "environment.json") if (p / "environment.json").is_file()
        else {},
        status=read_json(status_file) if status_file.is_file() else {},
        epochs=pd.DataFrame(read_json(epochs_file)) if epochs_file.is_file() else pd.DataFrame(),
        predictions=pd.read_parquet(preds_file) if preds_file.is_file() else None,
        summary=read_json(summary_file) if summary_file.is_file() else None,
    )


def _read_state(run_dir: Path) -> tuple[dict[str, Any], str | None] | None:
    """``(config, state)`` of a run directory, or None when its config or status cannot be
    parsed (warned: a damaged run never stops a report over the others)."""
    try:
        config = read_json(run_dir / "config.json")
        status_file = run_dir / "status.json"
        state = read_json(status_file).get("state") if status_file.is_file() else None
    except (OSError, ValueError, AttributeError) as exc:
        warnings.warn(f"skipping damaged run {run_dir}: {exc}", stacklevel=3)
        return None
    return config, state


def iter_run_dirs(runs_dir: str | Path, state: str | None = "completed",
                  newest_first: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Run directories under ``runs_dir`` in name (= start time) order, with their stored
    config, whose status is ``state`` (``None``: any). Cheap: reads two small JSON files per
    run; use :func:`iter_runs` for the whole record."""
    for cfg_file in sorted(Path(runs_dir).glob("*/config.json"), reverse=newest_first):
        read = _read_state(cfg_file.parent)
        if read is not None and (state is None or read[1] == state):
            yield cfg_file.parent, read[0]


def iter_runs(runs_dir: str | Path, state: str | None = "completed") -> Iterator[Run]:
    """Every stored :class:`Run` under ``runs_dir`` whose status is ``state``: the one walk
    of a run store that reports use. A run whose files are damaged (a truncated JSON or
    parquet, a completed run without predictions) is skipped with a warning naming it."""
    for run_dir, _ in iter_run_dirs(runs_dir, state):
        try:
            run = load_run(run_dir)
        except Exception as exc:  # noqa: BLE001 - pyarrow, JSON, OS: all mean "damaged"
            warnings.warn(f"skipping damaged run {run_dir}: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            continue
        if run.status.get("state") == "completed" and run.predictions is None:
            warnings.warn(f"skipping damaged run {run_dir}: completed but no "
                          f"{PREDICTIONS}", stacklevel=2)
            continue
        yield run
