"""Tables of runs (ablations, leaderboards), every number recomputed from stored predictions.

A row of a table is one stored run; several seeds of the same configuration aggregate to
mean ± std. Markdown is rendered here (it is fbench's own format, a few lines)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fbench.store import Run

# The settings that make runs one configuration (everything but the seed and where stored).
CONFIG_KEYS = ("detector", "transform", "dataset", "epochs", "batch_size", "lr", "input_size",
               "options", "dataset_options", "transform_options", "data_root")


def run_row(run: Run) -> dict[str, Any]:
    """The numbers of one run, recomputed from its predictions.parquet."""
    m = run.metrics("eval")
    cfg = run.config
    return {
        "run": run.id,
        "detector": cfg["detector"],
        "transform": cfg["transform"],
        "dataset": cfg["dataset"],
        "seed": cfg["seed"],
        "params_m": cfg.get("n_parameters", 0) / 1e6,
        "accuracy": 100 * m["accuracy"],
        "macro_f1": 100 * m["macro_f1"],
        "dice": None if m.get("dice_edited") is None else 100 * m["dice_edited"],
        "collapsed": m["collapsed"],
        # what makes two runs the same configuration (seeds of one experiment aggregate)
        "config": json.dumps({k: cfg.get(k) for k in CONFIG_KEYS}, sort_keys=True, default=str),
        "options": ", ".join(f"{k}={v}" for k, v in sorted((cfg.get("options") or {}).items())),
    }


def aggregate(rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and std (ddof=1; 0 for one seed) of ``metrics`` per ``by`` group, plus ``seeds``."""
    out = []
    for key, part in rows.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key, strict=True))
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


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]],
                align_right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured markdown table."""
    align_right = align_right or [False] * len(header)
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in align_right) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
