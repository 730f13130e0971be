"""The numpy metrics of inferd.tools.metrics give scikit-learn's values on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from inferd.tools import metrics


@pytest.fixture
def classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=300)
    probabilities = rng.dirichlet(np.ones(4), size=300)
    probabilities[np.arange(300), truth] += 0.4 * rng.random(300)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return truth, probabilities.argmax(axis=1), probabilities


def test_classification_metrics_match_scikit_learn(classes):
    truth, predicted, probabilities = classes
    assert metrics.accuracy(truth, predicted) == pytest.approx(sk.accuracy_score(truth, predicted))
    matrix = metrics.confusion(truth, predicted, [0, 1, 2, 3])
    assert matrix.tolist() == sk.confusion_matrix(truth, predicted).tolist()
    scores = metrics.per_class(matrix)
    precision, recall, f1, support = sk.precision_recall_fscore_support(truth, predicted, zero_division=0)
    np.testing.assert_allclose(scores["precision"], precision)
    np.testing.assert_allclose(scores["recall"], recall)
    np.testing.assert_allclose(scores["f1"], f1)
    assert scores["support"].tolist() == support.tolist()
    assert metrics.roc_auc(truth, probabilities) == pytest.approx(
        sk.roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"))
    assert metrics.log_loss(truth, probabilities) == pytest.approx(sk.log_loss(truth, probabilities))


def test_binary_auc_with_ties_matches_scikit_learn():
    truth = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    score = np.array([0.1, 0.4, 0.4, 0.4, 0.9, 0.2, 0.2, 0.7])
    probabilities = np.stack([1 - score, score], axis=1)
    assert metrics.roc_auc(truth, probabilities) == pytest.approx(sk.roc_auc_score(truth, score))


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(5)
    truth = rng.normal(10, 3, size=200)
    predicted = truth + rng.normal(0, 1, size=200)
    found = metrics.regression(truth, predicted)
    assert found["mae"] == pytest.approx(sk.mean_absolute_error(truth, predicted))
    assert found["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, predicted)))
    assert found["r2"] == pytest.approx(sk.r2_score(truth, predicted))


def test_ndcg_matches_scikit_learn_per_query():
    """Gain 2^rel - 1 (LightGBM's and XGBoost's): scikit-learn's linear gain on 2^rel - 1 is the same figure."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(20), 8)
    relevance = rng.integers(0, 4, size=len(groups))
    score = relevance + rng.normal(0, 1.0, size=len(groups))
    expected = np.mean([sk.ndcg_score([2.0 ** relevance[groups == g] - 1], [score[groups == g]], k=5) for g in range(20)])
    assert metrics.ndcg_at(relevance, score, groups, 5) == pytest.approx(expected)


def test_metric_directions():
    assert metrics.higher_is_better("accuracy") is True
    assert metrics.higher_is_better("rmse") is False
    assert metrics.higher_is_better("ndcg@10") is True
    assert metrics.higher_is_better("nonsense") is None
