"""Tables of runs (ablations, leaderboards), every number recomputed from stored predictions.

The one home of what every table of runs shares: which runs are the same configuration
(:func:`configuration_key`, :func:`run_identity`), a run's row (:func:`run_row`, which the
leaderboard extends), the aggregation of seeds to mean ± std (:func:`aggregate`, with one rule
for a single seed), the order of rows (:func:`rank`), and the cells and notes of a table.
Markdown is fbench's own format, a few lines (:mod:`fbench.markdown`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fbench.markdown import to_markdown  # noqa: F401 - re-exported for reports
from fbench.runs.store import Run
from fbench.train.config import FIXED_EPOCHS

# The one definition of "the same configuration" for leaderboards, ablations (reuse of a
# stored run) and seed averaging: every training setting, the detector's options as the run
# used them, and the data's fingerprint. Everything but the seed and where a run is stored.
SETTING_KEYS = ("detector", "dataset", "transform", "protocol", "optimizer", "lr",
                "weight_decay", "batch_size", "epochs", "precision", "tf32", "val_fraction",
                "input_size", "resample", "dataset_options", "transform_options",
                "schedule", "warmup_epochs", "patience", "min_delta", "collapse_epochs",
                "precise_bn", "clip_grad")
# Runs stored before a setting was recorded used what fbench then did (before schedules:
# a constant rate, every epoch to the ceiling, running BatchNorm statistics, no clipping).
LEGACY_SETTINGS = {"protocol": "fbench", "tf32": False, "resample": "area",
                   "weight_decay": 1e-4, "optimizer": "adam", "precision": "fp32",
                   "val_fraction": 0.1, **FIXED_EPOCHS}
# Settings worth a table column when they differ between the rows of one table.
SHOWN_SETTINGS = ("protocol", "resample", "precision", "tf32", "optimizer", "lr",
                  "weight_decay", "batch_size", "epochs", "input_size", "val_fraction",
                  "schedule", "warmup_epochs", "patience", "precise_bn", "clip_grad")


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
    stopped = (run.summary or {}).get("stopped") or {}
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
        # why training ended (plateau, ceiling, nan, collapse) and whether that is convergence;
        # None for runs stored before fbench recorded it
        "stopped": stopped.get("reason"),
        "converged": stopped.get("converged"),
        "checkpoint": checkpoint,
        # what makes two runs the same configuration (seeds of one experiment aggregate)
        "config": configuration_key(cfg),
        "options": ", ".join(f"{k}={_literal(v)}"
                             for k, v in sorted((cfg.get("options") or {}).items())),
        "groups": (cfg.get("groups") or {}).get("origin", "recorded"),
        # results changed after the run stored them (read with --allow-edited): marked
        "edited": ", ".join(run.edited),
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


def edited_runs(rows: pd.DataFrame) -> list[str]:
    """The runs among ``rows`` (one per run, from :func:`run_row`) read although edited, as
    ``run (files)``."""
    return [f"{r} ({e})" for r, e in zip(rows["run"], rows["edited"], strict=True) if e]


def edited_note(edited: Sequence[str]) -> str | None:
    """The note a table carries when it shows edited runs (``edited``: :func:`edited_runs`)."""
    if not edited:
        return None
    return (f"**Warning: {len(edited)} edited run(s)**, read with --allow-edited: their stored "
            "results no longer match the digests written when they finished, so their numbers "
            "are not what was trained. Rows with such runs are marked *edited*: "
            + "; ".join(f"`{e}`" for e in edited) + ".")


def table_notes(rows: pd.DataFrame) -> list[str]:
    """Warnings a table must carry about the runs it shows (``rows``: one per run, or
    aggregated by :func:`aggregate`)."""
    from fbench.train.resolve import groups_warning

    notes = []
    if "edited_runs" in rows:
        edited = [e for part in rows["edited_runs"] for e in part]
    else:
        edited = edited_runs(rows) if {"edited", "run"} <= set(rows.columns) else []
    note = edited_note(edited)
    if note:
        notes.append(note)
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


# Columns that describe a configuration rather than measure it: carried from a group's first
# run when aggregating (runs of one configuration share them).
DESCRIPTIVE = ("detector", "transform", "dataset", "params_m", "params_at", "selection",
               "groups", "options", "checkpoint")
# The order that breaks ties between rows of equal score, so that two collapsed runs (same
# majority-class score) never swap places between two renderings of one table.
TIE_BREAK = ("detector", "transform", "dataset", "options", "config")


def mean_std(values: Any) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1) of the numbers among ``values``. The one rule for a
    single seed: its std is None (no spread was measured), shown as no ``±`` part."""
    vals = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna()
    vals = vals.astype(float)
    mean = float(vals.mean()) if len(vals) else None
    return mean, (float(vals.std(ddof=1)) if len(vals) > 1 else None)


def aggregate(rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per ``by`` group (in order of first appearance): mean and std of ``metrics``
    (:func:`mean_std`; a metric absent from ``rows`` is None), ``seeds``, the group's ``runs``
    and how many ``collapsed``; descriptive columns (:data:`DESCRIPTIVE`, settings) come from
    the group's first run."""
    out = []
    carried = [c for c in rows.columns if (c.startswith("setting:") or c in DESCRIPTIVE)
               and c not in by and c not in metrics]
    for key, part in rows.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key, strict=True))
        rec.update({c: part[c].iloc[0] for c in carried})
        rec["seeds"] = len(part)
        if "run" in part:
            rec["runs"] = list(part["run"])
        if "collapsed" in part:
            rec["collapsed"] = int(part["collapsed"].astype(bool).sum())
        if "edited" in part and "run" in part:
            rec["edited_runs"] = edited_runs(part)
        if "stopped" in part:
            rec["stopped"] = stop_counts(part["stopped"])
            rec["not_converged"] = int((part["converged"] == False).sum())  # noqa: E712
        for col in metrics:
            rec[col], rec[f"{col}_std"] = mean_std(part[col] if col in part else [])
        out.append(rec)
    return pd.DataFrame(out)


def stop_counts(reasons: Any) -> str:
    """How a configuration's runs ended: ``plateau`` when all alike, else ``plateau 2,
    ceiling 1``; ``–`` where no run recorded it."""
    counts = pd.Series([r for r in reasons if isinstance(r, str)]).value_counts()
    if counts.empty:
        return "–"
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def convergence_cell(stopped: str, not_converged: int, seeds: int) -> str:
    """The ``stopped`` cell of a table: the stop reasons, and how many runs did not converge
    (hit the ceiling still improving, diverged, or collapsed)."""
    if not not_converged:
        return stopped
    return f"{stopped}; **not converged: {not_converged} of {seeds}**"


def rank(table: pd.DataFrame, score: str = "macro_f1") -> pd.DataFrame:
    """Rows by ``score`` (descending, missing last), ties broken by :data:`TIE_BREAK`."""
    if table.empty:
        return table.reset_index(drop=True)
    keys = [score, *(c for c in TIE_BREAK if c in table)]

    def sortable(col: pd.Series) -> pd.Series:
        if col.name == score:
            return pd.to_numeric(col, errors="coerce")
        return col.astype(str)

    return table.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1),
                             na_position="last", kind="stable", key=sortable,
                             ignore_index=True)


def fmt_mean_std(mean: float | None, std: float | None, seeds: int, digits: int = 2) -> str:
    """``mean ± std``; only the mean where no spread was measured (one seed, or one run of
    several that had the metric: std None, or NaN once in a DataFrame); '–' without a mean."""
    if mean is None or pd.isna(mean):
        return "–"
    if seeds > 1 and std is not None and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"
