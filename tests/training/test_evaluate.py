"""The StatLog cost, the metrics and the threshold chosen to minimise cost."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.evaluate import (
    classification_metrics,
    cost_minimising_threshold,
    cross_validate,
    statlog_cost,
)


def test_statlog_cost_weights_missed_disease_five_times() -> None:
    y_true = [1, 1, 0, 0]
    assert statlog_cost(y_true, [1, 1, 0, 0]) == 0.0
    assert statlog_cost(y_true, [0, 1, 0, 0]) == pytest.approx(5 / 4)  # one missed disease
    assert statlog_cost(y_true, [1, 1, 1, 0]) == pytest.approx(1 / 4)  # one false alarm
    assert statlog_cost(y_true, [0, 0, 1, 1]) == pytest.approx((5 + 5 + 1 + 1) / 4)


def test_metrics_match_a_hand_computed_case() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.3, 0.4, 0.2, 0.1])
    m = classification_metrics(y, p, threshold=0.5)
    assert m["confusion_matrix"] == [[3, 0], [1, 2]]
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["statlog_cost"] == pytest.approx(5 / 6)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_cost_minimising_threshold_catches_the_cheap_mistake() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.3, 0.4, 0.2, 0.1])
    thr = cost_minimising_threshold(y, p)
    # Lowering the threshold below 0.3 trades a 5-cost miss for a 1-cost false alarm.
    assert 0.2 < thr <= 0.3
    assert statlog_cost(y, (p >= thr).astype(int)) == pytest.approx(1 / 6)


def test_cross_validate_reports_mean_and_std_per_metric() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = (x[:, 0] + rng.normal(scale=0.5, size=120) > 0).astype(np.int64)
    result = cross_validate(
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        x,
        y,
        n_splits=4,
        n_repeats=2,
        random_state=0,
    )
    assert result["protocol"]["n_folds"] == 8
    for key in ("accuracy", "roc_auc", "statlog_cost", "statlog_cost_tuned", "tuned_threshold"):
        assert 0.0 <= result[key]["mean"] <= 5.0 and result[key]["std"] >= 0.0
    assert result["accuracy"]["mean"] > 0.75
