"""Leaderboards: one row per configuration (detector, transform, dataset, settings), seeds
aggregated, every number recomputed from the runs' stored predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbench.metrics import PROB_COLUMNS, compute_metrics
from fbench.report.tables import SHOWN_SETTINGS, configuration_key, parameters, setting
from fbench.runs.store import Run, load_run


def completed_runs(runs_dir: str | Path) -> list[Run]:
    out = []
    for cfg in sorted(Path(runs_dir).glob("*/config.json")):
        status = cfg.parent / "status.json"
        if status.is_file() and json.loads(status.read_text()).get("state") == "completed":
            out.append(load_run(cfg.parent))
    return out


def run_record(run: Run, checkpoint: str = "selected") -> dict[str, Any]:
    """A run's leaderboard numbers, recomputed from its stored predictions of ``checkpoint``
    (``selected`` on validation, or ``last`` epoch)."""
    m = run.metrics("eval", checkpoint)
    p = run.predictions_of(checkpoint)
    ev = p[p["split"] == "eval"]
    params, counted_at = parameters(run.config)
    rec: dict[str, Any] = {
        "run": run.id,
        "config": configuration_key(run.config),
        **{k: run.config.get(k) for k in ("detector", "transform", "dataset", "seed")},
        "params_m": params, "params_at": counted_at,
        "groups": (run.config.get("groups") or {}).get("origin", "recorded"),
        **{f"setting:{k}": setting(run.config, k) for k in SHOWN_SETTINGS},
        "macro_f1": 100 * m["macro_f1"], "accuracy": 100 * m["accuracy"],
        "f1_real": 100 * m["f1_real"], "f1_generated": 100 * m["f1_generated"],
        "f1_edited": 100 * m["f1_edited"],
        "auc": None if m["auc_ovr"] is None else 100 * m["auc_ovr"],
        "dice": None if m.get("dice_edited") is None else 100 * m["dice_edited"],
        "images_per_s": (run.summary or {}).get("train_images_per_s"),
        "selection": ((run.summary or {}).get("selection", "val macro-F1")
                      if checkpoint == "selected" else "last epoch"),
        "collapsed": bool(m["collapsed"]),
    }
    # Per-source F1: a source holds one label, so its F1 is that class's F1 restricted to
    # the source's images plus all images of other labels (the detections it competes with).
    for source, part in ev.groupby("source"):
        label = int(part["label"].mode().iat[0])
        others = ev[ev["label"] != label]
        sub = pd.concat([part, others])
        y = (sub["label"] == label).to_numpy()
        pred = (sub["pred"] == label).to_numpy()
        tp = float((y & pred).sum())
        denom = float(y.sum() + pred.sum())
        rec[f"src:{source}"] = 100 * 2 * tp / denom if denom else 0.0
    return rec


def leaderboard(runs: Sequence[Run], dataset: str | None = None,
                checkpoint: str = "selected") -> pd.DataFrame:
    """Rows per configuration (:func:`fbench.report.tables.configuration_key`), sorted by mean
    macro-F1 (descending)."""
    records = [run_record(r, checkpoint) for r in runs
               if dataset is None or r.config["dataset"] == dataset]
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame(records)
    metric_cols = ["macro_f1", "accuracy", "f1_real", "f1_generated", "f1_edited", "auc",
                   "dice", "images_per_s", *sorted(c for c in df.columns if c.startswith("src:"))]
    rows = []
    for _, part in df.groupby("config", sort=False):
        first = part.iloc[0]
        rec: dict[str, Any] = {k: first[k] for k in ("detector", "transform", "dataset",
                                                     "params_m", "params_at", "selection",
                                                     "groups")}
        rec.update({k: first[k] for k in first.index if k.startswith("setting:")})
        rec["seeds"] = len(part)
        rec["runs"] = list(part["run"])
        rec["collapsed"] = int(part["collapsed"].sum())
        for col in metric_cols:
            vals = pd.to_numeric(part[col], errors="coerce").dropna() if col in part else []
            rec[col] = float(np.mean(vals)) if len(vals) else None
            rec[f"{col}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        rows.append(rec)
    return pd.DataFrame(rows).sort_values("macro_f1", ascending=False, ignore_index=True)


def bootstrap_difference(a: Run, b: Run, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Macro-F1 of run A minus run B with a 95 % bootstrap interval, resampling eval images
    (paired when both runs scored the same images)."""
    pa = a.predictions[a.predictions["split"] == "eval"].sort_values("path")
    pb = b.predictions[b.predictions["split"] == "eval"].sort_values("path")
    paired = pa["path"].tolist() == pb["path"].tolist()
    rng = np.random.default_rng(seed)

    def f1(df: pd.DataFrame, idx: np.ndarray) -> float:
        sub = df.iloc[idx]
        return compute_metrics(sub["label"].to_numpy(), sub[list(PROB_COLUMNS)].to_numpy(),
                               sub["pred"].to_numpy())["macro_f1"]

    full = f1(pa, np.arange(len(pa))) - f1(pb, np.arange(len(pb)))
    diffs = []
    for _ in range(n):
        ia = rng.integers(0, len(pa), len(pa))
        ib = ia if paired else rng.integers(0, len(pb), len(pb))
        diffs.append(f1(pa, ia) - f1(pb, ib))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": 100 * full, "ci_low": 100 * float(lo), "ci_high": 100 * float(hi),
            "paired": paired, "resamples": n}


def render(board: pd.DataFrame, fmt: str, command: str) -> str:
    """The leaderboard as markdown, csv or html, with how it was produced at its top."""
    from fbench import __version__
    from fbench.report.tables import (
        differing_settings,
        fmt_mean_std,
        settings_cell,
        table_notes,
        to_markdown,
    )

    if fmt == "csv":
        return board.drop(columns=["runs"]).to_csv(index=False)
    src_cols = [c for c in board.columns if c.startswith("src:") and not c.endswith("_std")]
    # settings that differ between rows get a column: rows are different experiments
    shown = differing_settings(board)
    n_left = 4 + bool(shown)
    header = ["#", "detector", "transform", "dataset", *(["settings"] if shown else []),
              "macro-F1 %", "ACC %", "F1 real",
              "F1 generated", "F1 edited", "AUC %", "Dice %",
              *[c.removeprefix("src:") for c in src_cols], "params (M)", "train img/s",
              "seeds", "selection", "collapsed"]
    rows = []
    for i, r in board.iterrows():
        s = r["seeds"]
        rows.append([
            i + 1, r["detector"], r["transform"], r["dataset"],
            *([settings_cell(r, shown)] if shown else []),
            *[fmt_mean_std(r[c], r[f"{c}_std"], s) for c in
              ("macro_f1", "accuracy", "f1_real", "f1_generated", "f1_edited", "auc", "dice")],
            *[fmt_mean_std(r[c], r[f"{c}_std"], s, 1) for c in src_cols],
            f"{r['params_m']:.2f}", "–" if r["images_per_s"] is None else
            f"{r['images_per_s']:.0f}", s, r["selection"],
            f"{r['collapsed']} of {s}" if r["collapsed"] else "no",
        ])
    head = (f"<!-- generated by fbench {__version__}; regenerate with: {command} -->\n\n"
            "Eval split; every number recomputed from the runs' stored predictions; model "
            "selected on the validation split; several seeds as mean ± std (sample std).\n\n")
    if fmt == "html":
        frame = pd.DataFrame(rows, columns=header)
        return f"<!-- regenerate with: {command} -->\n" + frame.to_html(index=False)
    notes = "".join(f"\n{n}\n" for n in table_notes(board))
    return head + to_markdown(header, rows, [False] * n_left
                              + [True] * (len(header) - n_left)) + notes
