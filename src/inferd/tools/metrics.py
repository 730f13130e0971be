"""Metrics in plain numpy: classification, regression and ranking scores with scikit-learn's definitions.

numpy only, so ``inferd evaluate`` needs no scikit-learn; ``tests/unit/tools/test_tools_metrics.py`` checks each
function against scikit-learn on the same arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "roc_auc": True, "log_loss": False,
                    "mae": False, "rmse": False, "r2": True, "ndcg": True, "agreement": True}
"""Every metric a gate may name, and which way is better (NDCG@k is named ``ndcg@K``)."""

LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def higher_is_better(metric: str) -> bool | None:
    """Whether a larger value of ``metric`` is better; None for a name no report gives."""
    return HIGHER_IS_BETTER.get(metric.split("@")[0])


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted)) if len(truth) else float("nan")


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Counts: row = true class, column = predicted class, in the order of ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    rows = np.array([index[t] for t in truth.tolist()], dtype=np.int64)
    cols = np.array([index[p] for p in predicted.tolist()], dtype=np.int64)
    np.add.at(matrix, (rows, cols), 1)
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class from a confusion matrix (0 where undefined, as
    scikit-learn's ``zero_division=0``)."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def roc_auc_binary(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative (ties count half),
    computed from average ranks (the Mann-Whitney U statistic)."""
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(score)
    u = ranks[positive.astype(bool)].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def roc_auc(truth_index: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary: AUC of the second column's probability; multi-class: the unweighted mean of one-vs-rest AUCs
    (scikit-learn's ``multi_class="ovr", average="macro"``)."""
    if probabilities.shape[1] == 2:
        return roc_auc_binary(truth_index == 1, probabilities[:, 1])
    scores = [roc_auc_binary(truth_index == k, probabilities[:, k]) for k in range(probabilities.shape[1])]
    return float(np.mean(scores))


def log_loss(truth_index: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; probabilities are clipped to [eps, 1 - eps] and each row is
    renormalised, as scikit-learn does."""
    p = np.clip(probabilities.astype(np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(truth_index)), truth_index])))


def regression(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² (1 - residual sum of squares / total sum of squares)."""
    t, p = truth.astype(np.float64), predicted.astype(np.float64)
    residual = t - p
    total = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else float("nan")
    return {"mae": float(np.abs(residual).mean()), "rmse": float(np.sqrt((residual**2).mean())), "r2": r2}


def ndcg_at(relevance: np.ndarray, score: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Mean NDCG@k over the groups (queries): gain ``2^rel - 1``, discount ``log2(rank + 1)``, ideal order by
    relevance; a group whose items are all irrelevant counts 1 (nothing to get wrong), as LightGBM does. Ties in
    the score keep input order."""
    values = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        rel = relevance[rows].astype(np.float64)
        ideal = _dcg(np.sort(rel)[::-1], k)
        order = np.argsort(-score[rows].astype(np.float64), kind="stable")
        values.append(1.0 if ideal == 0 else _dcg(rel[order], k) / ideal)
    return float(np.mean(values)) if values else float("nan")


def _dcg(relevance: np.ndarray, k: int) -> float:
    top = relevance[:k]
    return float(((2.0**top - 1.0) / np.log2(np.arange(2, len(top) + 2))).sum())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks
