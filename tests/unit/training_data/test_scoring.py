"""The metrics both training workloads report, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nuro_ml.training_data.scoring import average_ranks, binary_metrics

KEYS = {"rows", "positives", "auc", "average_precision", "logloss", "accuracy"}


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    m = binary_metrics(labels, scores)
    assert set(m) == KEYS
    assert (m["rows"], m["positives"]) == (6, 3)
    # Positive/negative pairs ordered correctly: 0.35 beats only 0.1 -> 1 of 3; 0.8, 0.9 beat all.
    assert m["auc"] == pytest.approx(7 / 9)
    # Thresholds 0.9, 0.8, 0.4 (two negatives), 0.35: precision 1, 1, 1/2, 3/5 at recall steps
    # 1/3, 1/3, 0, 1/3.
    assert m["average_precision"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert m["accuracy"] == pytest.approx(5 / 6)
    expected = -np.mean(np.log([0.9, 0.6, 0.35, 0.8, 0.6, 0.9]))
    assert m["logloss"] == pytest.approx(expected)


def test_tied_scores_share_a_threshold() -> None:
    # Every score tied: AUC is chance, and AP is the positive rate whatever order the ties sort in.
    m = binary_metrics(np.array([0, 1, 0, 1]), np.full(4, 0.5))
    assert m["auc"] == pytest.approx(0.5)
    assert m["average_precision"] == pytest.approx(0.5)
    flipped = binary_metrics(np.array([1, 0, 1, 0]), np.full(4, 0.5))
    assert flipped["average_precision"] == m["average_precision"]
    # A positive tied with a negative at the top: precision 1/2 at recall 1/2, then 2/3 at 1.
    m = binary_metrics(np.array([1, 0, 1]), np.array([0.9, 0.9, 0.2]))
    assert m["average_precision"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_one_class_or_no_rows_gives_none_not_a_number() -> None:
    m = binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]))
    assert m["auc"] is None and m["average_precision"] is None
    assert m["accuracy"] == pytest.approx(0.5)
    empty = binary_metrics(np.empty(0), np.empty(0))
    assert empty == {
        "rows": 0,
        "positives": 0,
        "auc": None,
        "average_precision": None,
        "logloss": None,
        "accuracy": None,
    }


def test_certain_wrong_predictions_are_clipped_at_the_scores_precision() -> None:
    labels = np.array([1, 0])
    m32 = binary_metrics(labels, np.array([0.0, 0.0], np.float32))
    m64 = binary_metrics(labels, np.array([0.0, 0.0], np.float64))
    assert m32["logloss"] == pytest.approx(-math.log(np.finfo(np.float32).eps) / 2, rel=1e-6)
    assert m64["logloss"] == pytest.approx(-math.log(np.finfo(np.float64).eps) / 2, rel=1e-6)
    assert math.isfinite(m64["logloss"])


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_length_mismatch_names_both_counts() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2]))
