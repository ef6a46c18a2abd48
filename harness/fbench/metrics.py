"""Metrics, computed over a whole split at once (never averaged per batch).

Every function here takes stored predictions (labels, per-class probabilities, predicted
labels) so that a report can recompute any number a run shows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fbench.plugins.specs import LABELS

CLASSES = tuple(LABELS)
PROB_COLUMNS = tuple(f"prob_{LABELS[c]}" for c in CLASSES)


def _safe(fn, *args, **kwargs) -> float | None:
    """A metric that is undefined on this data (e.g. AUC with one class present) is None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(*args, **kwargs))
    except ValueError:
        return None
    return None if np.isnan(value) else value


def majority_macro_f1(labels: np.ndarray) -> float:
    """The macro-F1 of always predicting the most common label: what a collapsed run scores."""
    labels = np.asarray(labels)
    majority = np.bincount(labels, minlength=len(CLASSES)).argmax()
    present = np.unique(labels)
    return float(skm.f1_score(labels, np.full_like(labels, majority), labels=present,
                              average="macro", zero_division=0))


def equal_error_rate(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """The error rate where false-positive and false-negative rates are equal."""
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, _ = skm.roc_curve(y_true, score)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def choose_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The forged-score threshold that maximises binary F1 (chosen on validation)."""
    if len(np.unique(y_true)) < 2:
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y_true, score)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def forged_score(probs: np.ndarray) -> np.ndarray:
    """Binary view: labels 1 and 2 are positive; the score is P(generated) + P(edited)."""
    return 1.0 - np.asarray(probs)[:, 0]


def compute_metrics(labels: Any, probs: Any, preds: Any = None,
                    threshold: float | None = None) -> dict[str, Any]:
    """All classification metrics of one split.

    ``labels``: ``[N]`` true labels; ``probs``: ``[N, 3]`` class probabilities; ``preds``: the
    predicted labels (argmax of probs if omitted); ``threshold``: the binary forged-score
    threshold (chosen on validation); when omitted the binary F1 is not reported.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(1) if preds is None else np.asarray(preds, dtype=np.int64)
    cls = list(CLASSES)
    per_class = skm.f1_score(labels, preds, labels=cls, average=None, zero_division=0)
    present = sorted(set(labels.tolist()))
    out: dict[str, Any] = {
        "n": int(len(labels)),
        # Macro over the labels present in the data: a class absent from a split must not
        # drag the headline down with a meaningless zero.
        "macro_f1": float(skm.f1_score(labels, preds, labels=present, average="macro",
                                       zero_division=0)),
        "accuracy": float(skm.accuracy_score(labels, preds)),
        **{f"f1_{LABELS[c]}": float(per_class[i]) for i, c in enumerate(cls)},
        "auc_ovr": None,
        "confusion_matrix": skm.confusion_matrix(labels, preds, labels=cls).tolist(),
    }
    if len(present) >= 2:
        if len(present) == len(cls):
            out["auc_ovr"] = _safe(skm.roc_auc_score, labels, probs, multi_class="ovr",
                                   labels=cls)
        else:
            sub = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
            out["auc_ovr"] = (_safe(skm.roc_auc_score, labels == present[1], sub[:, 1])
                              if len(present) == 2 else None)

    y_bin = (labels != 0).astype(int)
    score = forged_score(probs)
    out["binary_auc"] = _safe(skm.roc_auc_score, y_bin, score)
    out["binary_ap"] = _safe(skm.average_precision_score, y_bin, score)
    out["binary_eer"] = equal_error_rate(y_bin, score)
    if threshold is not None:
        out["binary_threshold"] = float(threshold)
        out["binary_f1"] = float(skm.f1_score(y_bin, (score >= threshold).astype(int),
                                              zero_division=0))
    majority = majority_macro_f1(labels)
    out["majority_macro_f1"] = majority
    out["collapsed"] = bool(len(np.unique(preds)) == 1 or out["macro_f1"] <= majority + 1e-9)
    return out


def segmentation_scores(pred_mask: np.ndarray, true_mask: np.ndarray,
                        threshold: float = 0.5) -> tuple[float, float]:
    """Dice and IoU of one image's predicted mask (probabilities) against its binary mask.

    Both empty counts as a perfect match (1, 1)."""
    p = np.asarray(pred_mask) >= threshold
    t = np.asarray(true_mask) >= 0.5
    inter = float(np.logical_and(p, t).sum())
    total = float(p.sum() + t.sum())
    union = float(np.logical_or(p, t).sum())
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / union


def val_threshold(predictions: pd.DataFrame) -> float | None:
    """The real-vs-forged threshold on the forged score chosen on the stored ``val`` rows
    (None when there are none): the one rule for runs, reports and ``fbench predict``."""
    val = predictions[predictions["split"] == "val"]
    if not len(val):
        return None
    return choose_threshold((val["label"].to_numpy() != 0).astype(int),
                            forged_score(val[list(PROB_COLUMNS)].to_numpy()))


def metrics_from_predictions(predictions: pd.DataFrame, split: str = "eval",
                             threshold: float | None = None) -> dict[str, Any]:
    """Recompute a split's metrics from a stored ``predictions`` table.

    The binary threshold is re-chosen on the stored ``val`` rows when not given, exactly as the
    run chose it, so a report never trusts a number it cannot re-derive."""
    if threshold is None:
        threshold = val_threshold(predictions)
    rows = predictions[predictions["split"] == split]
    if len(rows) == 0:
        raise ValueError(f"no predictions for split {split!r}")
    out = compute_metrics(rows["label"].to_numpy(), rows[list(PROB_COLUMNS)].to_numpy(),
                          rows["pred"].to_numpy(), threshold=threshold)
    if "dice" in rows.columns:
        edited = rows[(rows["label"] == 2) & rows["dice"].notna()]
        out["dice_edited"] = float(edited["dice"].mean()) if len(edited) else None
        out["iou_edited"] = float(edited["iou"].mean()) if len(edited) else None
    return out
