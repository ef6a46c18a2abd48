"""How far apart two rows of a table really are: the paired bootstrap 95 % interval of the
difference in mean macro-F1 between two configurations (each the mean over its seeds),
resampling eval images (the same images for every run of both rows). Rows whose interval
includes 0 are ties: the table cannot tell them apart on this eval set.

The resampling is ``scipy.stats.bootstrap`` over image indices with a vectorised statistic:
each resample's macro-F1 comes from confusion counts, not a Python loop, so a table of a dozen
rows with three seeds each takes about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fbench.metrics import CLASSES
from fbench.runs.store import Run

N_CLASSES = len(CLASSES)


def _eval_codes(runs: Sequence[Run], checkpoint: str) -> tuple[list[str], np.ndarray,
                                                                 np.ndarray] | None:
    """``(paths, labels, codes [k, N])`` of the runs' eval predictions in path order, with
    ``code = label * 3 + pred``; None when the runs did not score the same images."""
    paths, labels, codes = None, None, []
    for run in runs:
        p = run.predictions_of(checkpoint)
        ev = p[p["split"] == "eval"].sort_values("path")
        if paths is None:
            paths, labels = ev["path"].tolist(), ev["label"].to_numpy(np.int64)
        elif ev["path"].tolist() != paths:
            return None
        codes.append(labels * N_CLASSES + ev["pred"].to_numpy(np.int64))
    return paths, labels, np.stack(codes)


def macro_f1_of_resamples(codes: np.ndarray, idx: np.ndarray,
                          present: Sequence[int]) -> np.ndarray:
    """Macro-F1 (over the ``present`` labels, as :func:`fbench.metrics.compute_metrics`) of
    every run ``[k, N]`` on every resample of image indices ``[B, N]``: ``[k, B]``."""
    k, b = len(codes), len(idx)
    picked = codes[:, idx]  # [k, B, N]
    offsets = (np.arange(k * b) * N_CLASSES**2).reshape(k, b, 1)
    counts = np.bincount((picked + offsets).ravel(), minlength=k * b * N_CLASSES**2)
    conf = counts.reshape(k, b, N_CLASSES, N_CLASSES).astype(np.float64)  # [true, pred]
    tp = np.diagonal(conf, axis1=2, axis2=3)
    denom = 2 * tp + (conf.sum(2) - tp) + (conf.sum(3) - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1[..., list(present)].mean(-1)


def difference_interval(a: Sequence[Run], b: Sequence[Run], checkpoint: str = "selected",
                        n: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Mean macro-F1 of runs ``a`` minus that of runs ``b`` (percent) with its bootstrap 95 %
    percentile interval; ``tie`` when the interval includes 0. Paired (the same resampled
    images for both sides) when both sides scored the same eval images, else each side
    resampled on its own (``paired`` False). None when the runs of one side disagree on their
    eval images (they are not seeds of one experiment)."""
    from scipy.stats import bootstrap

    sides = [_eval_codes(a, checkpoint), _eval_codes(b, checkpoint)]
    if sides[0] is None or sides[1] is None:
        return None
    (pa, la, ca), (pb, lb, cb) = sides
    present_a, present_b = sorted(set(la.tolist())), sorted(set(lb.tolist()))
    paired = pa == pb

    def statistic(ia: np.ndarray, ib: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
        ia = np.atleast_2d(ia)
        ib = ia if ib is None else np.atleast_2d(ib)
        return (macro_f1_of_resamples(ca, ia, present_a).mean(0)
                - macro_f1_of_resamples(cb, ib, present_b).mean(0))

    data = ((np.arange(len(la)),) if paired
            else (np.arange(len(la)), np.arange(len(lb))))
    full = float(statistic(*data)[0])
    res = bootstrap(data, statistic, n_resamples=n, batch=250, vectorized=True,
                    paired=False, method="percentile", confidence_level=0.95,
                    rng=np.random.default_rng(seed))
    lo, hi = (float(v) for v in res.confidence_interval)
    return {"difference": 100 * full, "ci_low": 100 * lo, "ci_high": 100 * hi,
            "tie": bool(lo <= 0 <= hi), "paired": paired, "resamples": n}


def adjacent_intervals(board: pd.DataFrame, runs: Sequence[Run],
                       checkpoint: str = "selected") -> list[dict[str, Any] | None]:
    """For each row of a ranked ``board`` (with its ``runs`` ids), the interval of its
    difference to the next row (None for the last row, or where no pairing is possible)."""
    by_id = {r.id: r for r in runs}
    out: list[dict[str, Any] | None] = []
    rows = board["runs"].tolist()
    for upper, lower in zip(rows, rows[1:], strict=False):
        out.append(difference_interval([by_id[i] for i in upper], [by_id[i] for i in lower],
                                       checkpoint))
    return [*out, None] if rows else out


def interval_cell(interval: dict[str, Any] | None) -> str:
    """``+3.20 [0.81, 5.93]`` (percentage points, the tables' one precision), with ``tie``
    when the interval includes 0; ``–`` without one."""
    if interval is None:
        return "–"
    cell = (f"{interval['difference']:+.2f} [{interval['ci_low']:.2f}, "
            f"{interval['ci_high']:.2f}]")
    return f"{cell} tie" if interval["tie"] else cell
