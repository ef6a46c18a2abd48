"""Metrics against scikit-learn on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from fbench.metrics import (
    PROB_COLUMNS,
    choose_threshold,
    compute_metrics,
    equal_error_rate,
    metrics_from_predictions,
    segmentation_scores,
)


@pytest.fixture
def hand_made():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    probs = np.array([
        [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.5, 0.1, 0.4],
        [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1],
        [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7],
    ])
    return labels, probs


def test_multiclass_metrics_match_sklearn(hand_made):
    labels, probs = hand_made
    preds = probs.argmax(1)
    m = compute_metrics(labels, probs)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert m["accuracy"] == pytest.approx(0.7)
    per_class = skm.f1_score(labels, preds, average=None)
    assert [m["f1_real"], m["f1_generated"], m["f1_edited"]] == pytest.approx(per_class)
    assert m["auc_ovr"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"))
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
    assert not m["collapsed"]


def test_binary_view_counts_generated_and_edited_as_forged(hand_made):
    labels, probs = hand_made
    m = compute_metrics(labels, probs, threshold=0.5)
    y, score = (labels != 0).astype(int), 1 - probs[:, 0]
    assert m["binary_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert m["binary_ap"] == pytest.approx(skm.average_precision_score(y, score))
    assert m["binary_f1"] == pytest.approx(skm.f1_score(y, score >= 0.5))


def test_eer_of_perfect_and_inverted_scores():
    y = np.array([0, 0, 1, 1])
    assert equal_error_rate(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0)
    assert equal_error_rate(y, np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(1.0)


def test_threshold_maximises_f1_on_validation():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.45, 0.4, 0.7, 0.9])
    t = choose_threshold(y, score)
    best = max(skm.f1_score(y, score >= s) for s in score)
    assert skm.f1_score(y, score >= t) == pytest.approx(best)


def test_collapse_is_flagged():
    labels = np.array([0] * 8 + [1, 2])
    probs = np.tile([0.9, 0.05, 0.05], (10, 1))
    m = compute_metrics(labels, probs)
    assert m["collapsed"]
    assert m["macro_f1"] == pytest.approx(m["majority_macro_f1"])


def test_dice_and_iou_per_image():
    true = np.zeros((4, 4))
    true[:2, :2] = 1
    pred = np.zeros((4, 4))
    pred[:2, :] = 0.9
    dice, iou = segmentation_scores(pred, true)
    assert dice == pytest.approx(2 * 4 / (8 + 4))
    assert iou == pytest.approx(4 / 8)
    assert segmentation_scores(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)


def test_metrics_recomputed_from_a_predictions_table(hand_made):
    labels, probs = hand_made
    df = pd.DataFrame({"split": ["val"] * 10 + ["eval"] * 10,
                       "label": np.concatenate([labels, labels]),
                       "pred": np.concatenate([probs.argmax(1)] * 2)})
    for c, col in enumerate(PROB_COLUMNS):
        df[col] = np.concatenate([probs[:, c]] * 2)
    m = metrics_from_predictions(df, "eval")
    t = choose_threshold((labels != 0).astype(int), 1 - probs[:, 0])
    assert m["binary_threshold"] == pytest.approx(t)
    assert m["macro_f1"] == pytest.approx(compute_metrics(labels, probs)["macro_f1"])
