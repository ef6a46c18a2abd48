"""The interval between adjacent table rows: paired bootstrap over eval images of the
difference in seed-mean macro-F1, computed from confusion counts (checked against sklearn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fbench.metrics import PROB_COLUMNS, compute_metrics
from fbench.report.intervals import (
    adjacent_intervals,
    difference_interval,
    interval_cell,
    macro_f1_of_resamples,
)
from fbench.runs.store import Run

N = 300
LABELS = np.repeat([0, 1, 2], N // 3)


def _run(name: str, preds: np.ndarray, paths: list[str] | None = None) -> Run:
    probs = np.eye(3)[preds] * 0.8 + 0.2 / 3
    frame = pd.DataFrame({"path": paths or [f"img{i:04d}.png" for i in range(N)],
                          "split": "eval", "label": LABELS, "pred": preds,
                          **{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}})
    return Run(path=Path(name), config={}, environment={}, status={"state": "completed"},
               epochs=pd.DataFrame(), predictions=frame, summary={})


def _noisy(rate: float, seed: int) -> np.ndarray:
    """The true labels with ``rate`` of them replaced by a random class."""
    rng = np.random.default_rng(seed)
    preds = LABELS.copy()
    flip = rng.random(N) < rate
    preds[flip] = rng.integers(0, 3, flip.sum())
    return preds


def test_resampled_macro_f1_equals_sklearn():
    rng = np.random.default_rng(1)
    preds = _noisy(0.4, 0)
    codes = (LABELS * 3 + preds)[None]
    idx = rng.integers(0, N, (5, N))
    got = macro_f1_of_resamples(codes, idx, [0, 1, 2])[0]
    want = [f1_score(LABELS[i], preds[i], labels=[0, 1, 2], average="macro", zero_division=0)
            for i in idx]
    assert got == pytest.approx(want, abs=1e-12)


def test_a_clear_gap_is_not_a_tie_and_equals_the_tables_difference():
    good = [_run(f"g{s}", _noisy(0.2, s)) for s in range(3)]
    bad = [_run(f"b{s}", _noisy(0.8, 10 + s)) for s in range(3)]
    d = difference_interval(good, bad)

    def mean_f1(runs):
        return np.mean([compute_metrics(LABELS, r.predictions[list(PROB_COLUMNS)].to_numpy())[
            "macro_f1"] for r in runs])

    assert d["difference"] == pytest.approx(100 * (mean_f1(good) - mean_f1(bad)))
    assert 0 < d["ci_low"] < d["difference"] < d["ci_high"] and not d["tie"]
    assert interval_cell(d).startswith("+") and "tie" not in interval_cell(d)


def test_runs_a_seed_apart_are_a_tie_and_identical_runs_differ_by_zero():
    a = [_run("a", _noisy(0.5, 1))]
    b = [_run("b", _noisy(0.5, 2))]
    d = difference_interval(a, b)
    assert d["tie"] and d["ci_low"] < 0 < d["ci_high"] and interval_cell(d).endswith("tie")
    same = difference_interval(a, a)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0


def test_different_eval_images_are_resampled_apart_and_mixed_seeds_have_no_interval():
    a = [_run("a", _noisy(0.1, 1))]
    b = [_run("b", _noisy(0.7, 1), paths=[f"other{i}.png" for i in range(N)])]
    apart = difference_interval(a, b)
    assert not apart["paired"] and apart["ci_low"] > 0
    # the same predictions on the same eval images: paired, the same difference
    together = difference_interval(a, [_run("b2", _noisy(0.7, 1))])
    assert together["paired"] and together["difference"] == pytest.approx(apart["difference"])
    # "seeds" of one row that scored different images are not one experiment
    assert difference_interval([*a, *b], a) is None
    assert interval_cell(None) == "–"


def test_adjacent_rows_of_a_board():
    runs = [_run("top", _noisy(0.1, 0)), _run("mid", _noisy(0.5, 1)),
            _run("low", _noisy(0.55, 2))]
    board = pd.DataFrame({"runs": [["top"], ["mid"], ["low"]]})
    gaps = adjacent_intervals(board, runs)
    assert len(gaps) == 3 and gaps[-1] is None
    assert not gaps[0]["tie"] and gaps[1]["tie"]
