"""Leaderboards: one row per configuration (detector, transform, dataset, settings), seeds
aggregated, every number recomputed from the runs' stored predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.report.tables import aggregate, rank, run_row
from fbench.runs.store import Run, iter_runs


def completed_runs(runs_dir: str | Path, allow_edited: bool = False) -> list[Run]:
    """Completed runs under ``runs_dir`` (damaged ones skipped with a warning). An edited run
    (results changed since it was stored) is refused with
    :class:`fbench.runs.digests.EditedRunError`, unless ``allow_edited``: then it is kept and
    its rows are marked."""
    return list(iter_runs(runs_dir, allow_edited=allow_edited))


# The leaderboard's measured columns in order; per-source F1 (``src:<source>``) follows.
METRICS = ("macro_f1", "accuracy", "f1_real", "f1_generated", "f1_edited", "auc", "dice",
           "images_per_s")
# Columns of a leaderboard before its metrics (what ``--format csv`` has always written).
LEADING = ("detector", "transform", "dataset", "params_m", "params_at", "selection", "groups")


def source_f1(ev: pd.DataFrame) -> dict[str, float]:
    """Per-source F1 (percent) of eval predictions. A source holds one label, so its F1 is that
    class's F1 restricted to the source's images plus all images of other labels (the
    detections it competes with)."""
    from sklearn.metrics import f1_score

    out = {}
    for source, part in ev.groupby("source"):
        label = int(part["label"].mode().iat[0])
        sub = pd.concat([part, ev[ev["label"] != label]])
        out[f"src:{source}"] = 100 * float(f1_score(
            sub["label"] == label, sub["pred"] == label, zero_division=0.0))
    return out


def run_record(run: Run, checkpoint: str = "selected") -> dict[str, Any]:
    """A run's leaderboard numbers: its table row (:func:`fbench.report.tables.run_row`)
    extended with per-class F1, AUC, per-source F1 and training throughput, all recomputed
    from its stored predictions of ``checkpoint`` (``selected`` on validation, or ``last``)."""
    m = run.metrics("eval", checkpoint)
    p = run.predictions_of(checkpoint)
    summary = run.summary or {}
    return {
        **run_row(run, checkpoint),
        **{f"f1_{name}": 100 * m[f"f1_{name}"] for name in ("real", "generated", "edited")},
        "auc": None if m["auc_ovr"] is None else 100 * m["auc_ovr"],
        "images_per_s": summary.get("train_images_per_s"),
        "selection": (summary.get("selection", "val macro-F1") if checkpoint == "selected"
                      else "last epoch"),
        **source_f1(p[p["split"] == "eval"]),
    }


def leaderboard(runs: Sequence[Run], dataset: str | None = None,
                checkpoint: str = "selected") -> pd.DataFrame:
    """Rows per configuration (:func:`fbench.report.tables.configuration_key`), seeds
    aggregated (:func:`fbench.report.tables.aggregate`), ranked by mean macro-F1
    (:func:`fbench.report.tables.rank`: descending, ties in a fixed order)."""
    records = [run_record(r, checkpoint) for r in runs
               if dataset is None or r.config["dataset"] == dataset]
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame(records)
    metrics = [*METRICS, *sorted(c for c in df.columns if c.startswith("src:"))]
    board = rank(aggregate(df, ["config"], metrics))
    settings = [c for c in board.columns if c.startswith("setting:")]
    columns = [*LEADING, *settings, "seeds", "runs", "edited_runs", "collapsed", "stopped",
               "not_converged", *(f"{c}{s}" for c in metrics for s in ("", "_std"))]
    board = board[columns].copy()
    # how far each row is from the next: paired bootstrap interval over eval images
    from fbench.report.intervals import adjacent_intervals

    gaps = adjacent_intervals(board, runs, checkpoint)
    for key, col in (("difference", "next_diff"), ("ci_low", "next_low"),
                     ("ci_high", "next_high"), ("tie", "next_tie")):
        board[col] = [g[key] if g else None for g in gaps]
    return board


def bootstrap_difference(a: Run, b: Run, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Macro-F1 of run A minus run B with a 95 % percentile bootstrap interval, resampling eval
    images (paired when both runs scored the same images):
    :func:`fbench.report.intervals.difference_interval` of two single runs."""
    from fbench.report.intervals import difference_interval

    out = difference_interval([a], [b], n=n, seed=seed)
    assert out is not None  # one run per side always agrees with itself
    return out


# The measured columns both renderings show (markdown here, the terminal table in
# report.console): header, board column.
METRIC_HEADERS = (("macro-F1 %", "macro_f1"), ("ACC %", "accuracy"),
                  ("F1 real %", "f1_real"), ("F1 generated %", "f1_generated"),
                  ("F1 edited %", "f1_edited"), ("AUC %", "auc"), ("Dice %", "dice"))
GAP_HEADER = "Δ to next (points, 95% CI)"


def gap_cell(row: Any) -> str:
    """A board row's difference to the next row with its interval
    (:func:`fbench.report.intervals.interval_cell`), ``–`` for the last row."""
    from fbench.report.intervals import interval_cell

    if "next_diff" not in row or pd.isna(row["next_diff"]):
        return "–"
    return interval_cell({"difference": row["next_diff"], "ci_low": row["next_low"],
                          "ci_high": row["next_high"], "tie": bool(row["next_tie"])})


def edited_mark(row: Any) -> str:
    """``(edited)`` or ``(edited: 1 of 3)`` for a row holding edited runs, else ``""``: what
    follows the detector's name (each rendering adds its emphasis)."""
    n = len(row.get("edited_runs") or [])
    if not n:
        return ""
    return "(edited)" if n == row["seeds"] else f"(edited: {n} of {row['seeds']})"


def render(board: pd.DataFrame, fmt: str, command: str) -> str:
    """The leaderboard as markdown, csv or html, with how it was produced at its top."""
    from fbench import __version__
    from fbench.report.tables import (
        convergence_cell,
        differing_settings,
        edited_note,
        fmt_mean_std,
        settings_cell,
        table_notes,
        to_markdown,
    )

    edited = [e for part in board.get("edited_runs", []) for e in part]
    if fmt == "csv":
        # how many of a row's runs were edited (the run names are in the markdown's note)
        counts = [len(e) for e in board["edited_runs"]] if "edited_runs" in board else 0
        return (board.drop(columns=["runs", "edited_runs"], errors="ignore")
                .assign(edited=counts).to_csv(index=False))
    src_cols = [c for c in board.columns if c.startswith("src:") and not c.endswith("_std")]
    # settings that differ between rows get a column: rows are different experiments
    shown = differing_settings(board)
    n_left = 4 + bool(shown)
    (main_header, main_key), *others = METRIC_HEADERS
    header = ["#", "detector", "transform", "dataset", *(["settings"] if shown else []),
              main_header, GAP_HEADER, *(h for h, _ in others),
              *[f"F1 {c.removeprefix('src:')} %" for c in src_cols], "params (M)",
              "train img/s", "seeds", "selection", "collapsed", "stopped"]
    rows = []
    for i, r in board.iterrows():
        s = r["seeds"]
        rows.append([
            i + 1, r["detector"] + (f" *{edited_mark(r)}*" if edited_mark(r) else ""),
            r["transform"], r["dataset"], *([settings_cell(r, shown)] if shown else []),
            fmt_mean_std(r[main_key], r[f"{main_key}_std"], s), gap_cell(r),
            *[fmt_mean_std(r[c], r[f"{c}_std"], s) for _, c in others],
            *[fmt_mean_std(r[c], r[f"{c}_std"], s) for c in src_cols],
            f"{r['params_m']:.2f}", "–" if pd.isna(r["images_per_s"]) else
            f"{r['images_per_s']:.0f}", s, r["selection"],
            f"{r['collapsed']} of {s}" if r["collapsed"] else "no",
            convergence_cell(r["stopped"], r["not_converged"], s),
        ])
    head = (f"<!-- generated by fbench {__version__}; regenerate with: {command} -->\n\n"
            "Eval split; every number recomputed from the runs' stored predictions; model "
            "selected on the validation split; several seeds as mean ± std (sample std). "
            "Δ to next: this row's mean macro-F1 minus the next row's, with the paired "
            "bootstrap 95 % interval over eval images; *tie* where it includes 0.\n\n")
    if fmt == "html":
        frame = pd.DataFrame(rows, columns=header)
        warning = edited_note(edited)
        return (f"<!-- regenerate with: {command} -->\n" + frame.to_html(index=False)
                + (f"\n<p>{warning}</p>\n" if warning else ""))
    notes = "".join(f"\n{n}\n" for n in table_notes(board))
    return head + to_markdown(header, rows, [False] * n_left
                              + [True] * (len(header) - n_left)) + notes
