"""The StatLog cost, the metrics and the threshold chosen to minimise cost."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.evaluate import (
    classes_everyone_as,
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


@pytest.mark.parametrize(
    ("y", "p", "expected", "everyone"),
    [
        # 93% diseased, every risk above 1/6: calling everyone diseased is cheapest, and
        # anything up to the lowest risk does that; 1/6 lies there, so 1/6 (not 1e-6).
        ([1] * 13 + [0], np.linspace(0.4, 0.99, 14), 1 / 6, "diseased"),
        # The same, but the lowest risk is below 1/6: halfway between 0 and it.
        ([1, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], 0.05, "diseased"),
        # The one diseased patient has the lowest risk: calling everyone healthy is cheapest.
        ([1] + [0] * 10, [0.01, *np.linspace(0.05, 0.1, 10)], 1 / 6, "healthy"),
        ([1] + [0] * 10, [0.01, *np.linspace(0.05, 0.9, 10)], 0.95, "healthy"),
    ],
)
def test_a_threshold_at_an_end_is_a_meaningful_one(
    y: list[int], p: list[float], expected: float, everyone: str
) -> None:
    thr = cost_minimising_threshold(y, p)
    assert thr == pytest.approx(expected)
    assert classes_everyone_as(thr, p) == everyone
    pred = (np.asarray(p) >= thr).astype(int)
    assert statlog_cost(y, pred) == pytest.approx(
        min(statlog_cost(y, np.ones(len(y))), statlog_cost(y, np.zeros(len(y))))
    )


def test_classes_everyone_as_is_none_when_the_threshold_separates() -> None:
    assert classes_everyone_as(0.5, [0.2, 0.7]) is None
    assert classes_everyone_as(0.7, [0.2, 0.7]) is None  # 0.7 >= 0.7: diseased


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
