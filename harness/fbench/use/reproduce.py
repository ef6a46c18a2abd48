"""Reproducing a stored run: check that the data and the environment are the run's, retrain
with the stored configuration and seed into a new run directory, and compare every metric.

Data: the re-resolved manifest must give the stored split counts and the stored val/eval
rows; where the run stored a dataset fingerprint (``config["dataset_fingerprint"]`` and
``dataset.parquet``, written by :func:`fbench.data.fingerprint.record_dataset`) the manifest
hash and every image's SHA-256 must match. A run without per-image hashes is checked by file
times instead: an image modified after the run started is named. A data mismatch stops the
rerun unless forced.

Environment: fbench, torch and timm versions and the device; a mismatch is shown, and it
turns the expectation from "identical" into "within a tolerance". On CPU the rerun uses the
stored thread count, since float reductions split over another number of threads round
differently.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.data.audit import file_sha256
from fbench.data.fingerprint import (
    DATASET_FILE,
    FINGERPRINT_KEY,
    manifest_sha256,
    resolved_paths,
)
from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

    from fbench.runs.store import Run
    from fbench.train.config import RunConfig
    from fbench.train.resolve import ResolvedRun

EXACT_PACKAGES = ("fbench", "torch", "timm")
SHOWN_PACKAGES = ("fbench", "torch", "timm", "torchvision", "numpy", "opencv-contrib-python")
DEFAULT_TOLERANCE = 0.01
"""Absolute tolerance on metrics (in [0, 1]) and losses when the rerun cannot be expected to be
identical (another device or versions, or forced past a data mismatch)."""
COMPARED_METRICS = ("macro_f1", "accuracy", "f1_real", "f1_generated", "f1_edited", "auc_ovr",
                    "binary_auc", "binary_ap", "binary_eer", "binary_threshold", "binary_f1",
                    "dice_edited", "iou_edited")
_NAMED = 5  # offending images named in a message


# -- the stored configuration ----------------------------------------------------------------

def run_config(run: Run) -> RunConfig:
    """The :class:`RunConfig` a stored run was resolved to (its ``config.json`` holds the
    resolved settings plus metadata such as ``n_parameters``, which are dropped here)."""
    from fbench.train.config import RunConfig

    known = set(RunConfig.__dataclass_fields__)
    data = {k: v for k, v in run.config.items() if k in known}
    from fbench.data.images import stored_resampler

    data["resample"] = stored_resampler(run.config)  # older runs resized with INTER_AREA
    used = run.config.get("detector_options")
    if used is not None:
        # every option as the run used it, so a default changed since (GraftNet's residual,
        # the reference initialisation) does not change the reproduced model; the input size
        # still follows the run's input size unless the user had set it
        given = run.config.get("options") or {}
        data["options"] = {k: v for k, v in used.items()
                           if k != "input_size" or k in given}
    # config.json's "audit" holds the audit's result, not the setting: a dict with
    # skipped=True means --skip-audit, anything else that the audit was on.
    audit = run.config.get("audit")
    if not isinstance(audit, bool):
        data["audit"] = not (isinstance(audit, dict) and audit.get("skipped"))
    return RunConfig.from_dict(data, source=str(run.path / "config.json"))


def resolve_stored(run: Run, **changes: Any) -> ResolvedRun:
    """Resolve a stored run's configuration again (loads its dataset's manifest)."""
    from fbench.train.resolve import resolve

    return resolve(run_config(run).replace(**changes))


# -- dataset fingerprints: fbench.data.fingerprint writes them, reproduce checks them --------

def _split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    return {str(s): {str(k): int(v) for k, v in row.items()}
            for s, row in counts.to_dict(orient="index").items()}


def dataset_differences(run: Run, manifest: pd.DataFrame) -> pd.DataFrame:
    """What differs between the data ``run`` used and ``manifest`` (re-resolved now): one
    row per difference, columns ``check``, ``item``, ``stored``, ``now``. Empty: the same."""
    diffs: list[dict[str, Any]] = []

    def add(check: str, item: str, stored: Any, now: Any) -> None:
        diffs.append({"check": check, "item": item, "stored": str(stored), "now": str(now)})

    stored_counts = run.config.get("split_counts")
    if stored_counts is not None:
        now_counts = _split_counts(manifest)
        for split in sorted(set(stored_counts) | set(now_counts)):
            a, b = stored_counts.get(split, {}), now_counts.get(split, {})
            for label in sorted(set(a) | set(b)):
                if int(a.get(label, 0)) != int(b.get(label, 0)):
                    add("split counts", f"{split}, label {label}", a.get(label, 0),
                        b.get(label, 0))

    if run.predictions is not None:
        cols = ["path", "label", "split"]
        stored_rows = set(map(tuple, run.predictions[cols].astype(str).to_numpy()))
        now = manifest[manifest["split"].isin(["val", "eval"])]
        now_rows = set(map(tuple, now[cols].astype(str).to_numpy()))
        for p, label, split in sorted(stored_rows - now_rows)[:_NAMED]:
            add("val/eval rows", p, f"{split}, label {label}", "absent")
        for p, label, split in sorted(now_rows - stored_rows)[:_NAMED]:
            add("val/eval rows", p, "absent", f"{split}, label {label}")

    fingerprint = run.config.get(FINGERPRINT_KEY) or {}
    if fingerprint.get("manifest_sha256") and \
            fingerprint["manifest_sha256"] != manifest_sha256(manifest):
        add("manifest hash", "manifest rows", fingerprint["manifest_sha256"][:16],
            manifest_sha256(manifest)[:16])
    stored_images = run.path / fingerprint.get("file", DATASET_FILE)
    if stored_images.is_file():
        diffs += _image_hash_differences(pd.read_parquet(stored_images), manifest)
    else:
        diffs += _image_time_differences(run, manifest)
    return pd.DataFrame(diffs, columns=["check", "item", "stored", "now"])


def _image_hash_differences(stored: pd.DataFrame, manifest: pd.DataFrame) -> list[dict]:
    stored_hash = dict(zip(stored["path"], stored["sha256"], strict=True))
    out = []
    for rel, full in zip(manifest["path"], resolved_paths(manifest), strict=True):
        before = stored_hash.get(rel)
        if before is None:
            out.append({"check": "image hash", "item": full, "stored": "absent",
                        "now": "present"})
            continue
        now = file_sha256(full)
        if now != before:
            out.append({"check": "image hash", "item": full, "stored": before[:16],
                        "now": now[:16]})
    return out


def _image_time_differences(run: Run, manifest: pd.DataFrame) -> list[dict]:
    """Without stored hashes, the file times tell what changed after the run started."""
    import datetime as dt

    started = run.status.get("started")
    if started is None:
        return []
    out = []
    for full in resolved_paths(manifest):
        mtime = os.path.getmtime(full)
        if mtime > float(started):
            when = dt.datetime.fromtimestamp(mtime).isoformat(timespec="seconds")
            out.append({"check": "image modified after the run started", "item": full,
                        "stored": "–", "now": when})
    return out


# -- environment -----------------------------------------------------------------------------

def environment_differences(run: Run, device: str) -> pd.DataFrame:
    """The stored environment beside the current one: ``what``, ``stored``, ``now``,
    ``same``, ``exact`` (whether an identical result depends on it)."""
    from fbench.runs.environment import describe_environment

    now = describe_environment(device)
    stored = run.environment or {}
    rows = []
    for name in SHOWN_PACKAGES:
        rows.append((name, (stored.get("packages") or {}).get(name),
                     now["packages"].get(name), name in EXACT_PACKAGES))
    rows += [("device", run.config.get("device", stored.get("device")), device, True),
             ("python", stored.get("python"), now["python"], False),
             ("git commit", stored.get("git_commit"), now["git_commit"], False)]
    return pd.DataFrame([{"what": w, "stored": str(a), "now": str(b), "same": a == b,
                          "exact": e} for w, a, b, e in rows])


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


def expected_agreement(env: pd.DataFrame, device: str, same_data: bool,
                       tolerance: float | None = None) -> tuple[bool, float]:
    """Whether the rerun must be identical, and the tolerance it is held to: identical (0)
    on CPU with the same fbench, torch and timm and the same data; otherwise
    :data:`DEFAULT_TOLERANCE`. A given ``tolerance`` wins."""
    exact = bool(env.loc[env["exact"], "same"].all()) and device == "cpu" and same_data
    tol = float(tolerance) if tolerance is not None else (0.0 if exact else DEFAULT_TOLERANCE)
    return exact, tol


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
    else :data:`DEFAULT_TOLERANCE`. Raises :class:`FbenchError` when the data differ and
    ``force`` is not set."""
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
            named = ", ".join(list(dict.fromkeys(data["item"]))[:_NAMED])
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
