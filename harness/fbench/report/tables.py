"""Tables of runs (ablations, leaderboards), every number recomputed from stored predictions.

A row of a table is one stored run; several seeds of the same configuration aggregate to
mean ± std. Markdown is rendered here (it is fbench's own format, a few lines)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fbench.markdown import to_markdown  # noqa: F401 - re-exported for reports
from fbench.runs.store import Run

# The one definition of "the same configuration" for leaderboards, ablations (reuse of a
# stored run) and seed averaging: every training setting, the detector's options as the run
# used them, and the data's fingerprint. Everything but the seed and where a run is stored.
SETTING_KEYS = ("detector", "dataset", "transform", "protocol", "optimizer", "lr",
                "weight_decay", "batch_size", "epochs", "precision", "tf32", "val_fraction",
                "input_size", "resample", "dataset_options", "transform_options")
# Runs stored before a setting was recorded used what fbench then did.
LEGACY_SETTINGS = {"protocol": "fbench", "tf32": False, "resample": "area",
                   "weight_decay": 1e-4, "optimizer": "adam", "precision": "fp32",
                   "val_fraction": 0.1}
# Settings worth a table column when they differ between the rows of one table.
SHOWN_SETTINGS = ("protocol", "resample", "precision", "tf32", "optimizer", "lr",
                  "weight_decay", "batch_size", "epochs", "input_size", "val_fraction")


def configuration(config: dict[str, Any]) -> dict[str, Any]:
    """A stored (or about to be stored) run config reduced to what makes it a configuration."""
    out = {k: config.get(k, LEGACY_SETTINGS.get(k)) for k in SETTING_KEYS}
    # detector options as the factory got them (defaults included); older runs stored only
    # the options the user gave, so they never pass for a run with today's defaults
    out["detector_options"] = (config["detector_options"] if "detector_options" in config
                               else {"given": config.get("options") or {}})
    fp = config.get("dataset_fingerprint") or {}
    out["data"] = ({k: fp[k] for k in ("images_sha256", "rows_sha256")} if "rows_sha256" in fp
                   else {"data_root": config.get("data_root")})
    return out


def configuration_key(config: dict[str, Any]) -> str:
    """:func:`configuration` as one string: runs with equal keys are seeds of one experiment."""
    return json.dumps(configuration(config), sort_keys=True, default=str)


def run_identity(config: dict[str, Any]) -> str:
    """The configuration and the seed: a stored run with the same identity can be reused."""
    return json.dumps({"configuration": configuration(config), "seed": config.get("seed")},
                      sort_keys=True, default=str)


def setting(config: dict[str, Any], key: str) -> Any:
    return config.get(key, LEGACY_SETTINGS.get(key))


def parameters(config: dict[str, Any]) -> tuple[float, int | None]:
    """Parameters in millions, and the input size they were counted at (None when they do
    not depend on it): the 224 px model's when the run recorded it."""
    if config.get("n_parameters_224") is not None:
        return config["n_parameters_224"] / 1e6, 224
    n = config.get("n_parameters", 0) / 1e6
    return n, config.get("parameters_counted_at")


def _literal(value: Any) -> str:
    """An option value as ``--set`` takes it (``true``, not Python's ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_row(run: Run, checkpoint: str = "selected") -> dict[str, Any]:
    """The numbers of one run, recomputed from its stored predictions of ``checkpoint``
    (``selected``: the epoch chosen on validation; ``last``: the final epoch)."""
    m = run.metrics("eval", checkpoint)
    cfg = run.config
    params, counted_at = parameters(cfg)
    return {
        "run": run.id,
        "detector": cfg["detector"],
        "transform": cfg["transform"],
        "dataset": cfg["dataset"],
        "seed": cfg["seed"],
        "params_m": params,
        "params_at": counted_at,
        "accuracy": 100 * m["accuracy"],
        "macro_f1": 100 * m["macro_f1"],
        "dice": None if m.get("dice_edited") is None else 100 * m["dice_edited"],
        "collapsed": m["collapsed"],
        "checkpoint": checkpoint,
        # what makes two runs the same configuration (seeds of one experiment aggregate)
        "config": configuration_key(cfg),
        "options": ", ".join(f"{k}={_literal(v)}"
                             for k, v in sorted((cfg.get("options") or {}).items())),
        "groups": (cfg.get("groups") or {}).get("origin", "recorded"),
        **{f"setting:{k}": setting(cfg, k) for k in SHOWN_SETTINGS},
    }


def differing_settings(rows: pd.DataFrame) -> list[str]:
    """The settings (of :data:`SHOWN_SETTINGS`) that differ between the rows of a table, so a
    table shows them rather than presenting different experiments as comparable."""
    out = []
    for key in SHOWN_SETTINGS:
        col = f"setting:{key}"
        if col in rows and rows[col].astype(str).nunique() > 1:
            out.append(key)
    return out


def settings_cell(row: Any, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[f'setting:{k}']}" for k in keys)


def table_notes(rows: pd.DataFrame) -> list[str]:
    """Warnings a table must carry about the runs it shows."""
    from fbench.train.resolve import groups_warning

    notes = []
    if "groups" in rows:
        for origin in sorted(set(rows["groups"]) - {"recorded"}):
            n = int((rows["groups"] == origin).sum())
            notes.append(f"**Warning:** in {n} run(s), "
                         + (groups_warning({"origin": origin}) or ""))
    if "params_at" in rows and rows["params_at"].notna().any():
        sizes = sorted({int(v) for v in rows["params_at"].dropna()})
        notes.append("Parameters counted at " + ", ".join(f"{s} px" for s in sizes)
                     + " input (a frequency head's size depends on it).")
    return notes


def aggregate(rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and std (ddof=1; 0 for one seed) of ``metrics`` per ``by`` group, plus ``seeds``;
    descriptive columns (settings, ``params_at``, ``groups``) are carried from the group's
    first run (runs of one configuration share them)."""
    out = []
    carried = [c for c in rows.columns
               if c.startswith("setting:") or c in ("params_at", "groups")]
    for key, part in rows.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key, strict=True))
        rec.update({c: part[c].iloc[0] for c in carried if c not in rec})
        rec["seeds"] = len(part)
        for col in metrics:
            vals = part[col].dropna().astype(float)
            rec[col] = float(vals.mean()) if len(vals) else None
            rec[f"{col}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else (
                0.0 if len(vals) else None)
        if "collapsed" in part:
            rec["collapsed"] = int(part["collapsed"].sum())
        out.append(rec)
    return pd.DataFrame(out)


def fmt_mean_std(mean: float | None, std: float | None, seeds: int, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    if seeds > 1 and std is not None:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"
