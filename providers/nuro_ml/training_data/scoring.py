"""Binary-classification metrics every training workload reports, in numpy alone.

One implementation for the boosted-tree workload (``workloads/train_xgboost.py``) and the
PyTorch one (``workloads/train_torch.py``); it imports numpy only, so it also scores on a GPU box
that has PyTorch but no pandas. The definitions follow scikit-learn's: ``roc_auc_score``
(ties share their average rank), ``average_precision_score`` (step-wise area under the
precision-recall curve, tied scores taken as one threshold) and ``log_loss`` (probabilities
clipped to the machine epsilon of their own dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    # Every member of a run of ties [s, e) gets the mean rank (s + 1 + e) / 2.
    run_ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(len(values), np.float64)
    ranks[order] = run_ranks
    return ranks


def _average_precision(labels: np.ndarray, scores: np.ndarray, n_pos: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    ranked_scores, ranked_labels = scores[order], labels[order]
    # One threshold per distinct score: the last index of each run of tied scores.
    last = np.flatnonzero(np.append(ranked_scores[1:] != ranked_scores[:-1], True))
    true_pos = np.cumsum(ranked_labels)[last]
    precision = true_pos / (last + 1)
    recall_step = np.diff(np.concatenate([[0.0], true_pos])) / n_pos
    return float((precision * recall_step).sum())


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Scores of predicted probabilities against 0/1 labels.

    Returns ``rows``, ``positives``, ``auc`` (ROC area), ``average_precision``, ``logloss`` and
    ``accuracy`` (threshold 0.5). ``auc`` and ``average_precision`` are None when the labels hold
    one class only; ``logloss`` and ``accuracy`` are None when there are no rows.
    """
    labels = np.asarray(labels).astype(np.float64).ravel()
    raw = np.asarray(scores)
    if len(labels) != raw.size:
        raise ValueError(f"binary_metrics: {len(labels)} labels but {raw.size} scores")
    eps = float(np.finfo(raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.float64).eps)
    scores = raw.astype(np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    out: dict[str, Any] = {
        "rows": len(labels),
        "positives": n_pos,
        "auc": None,
        "average_precision": None,
        "logloss": None,
        "accuracy": None,
    }
    if len(labels):
        clipped = np.clip(scores, eps, 1 - eps)
        out["logloss"] = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        out["accuracy"] = float(np.mean((scores >= 0.5) == (labels == 1)))
    if n_pos and n_neg:
        ranks = average_ranks(scores)
        out["auc"] = float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        out["average_precision"] = _average_precision(labels, scores, n_pos)
    return out
