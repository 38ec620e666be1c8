"""Evaluation: the usual classification metrics plus the StatLog misclassification cost.

The StatLog project scored this data set with a cost matrix: calling a sick
patient healthy costs 5, the reverse costs 1. With calibrated probabilities
the cost-minimising threshold is therefore 1/6, not 1/2, which is why the
threshold is something we choose and record rather than assume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_val_predict,
)

from model.arrays import FloatArray, IntArray

#: Cost of a missed disease (false negative) and of a false alarm (false positive).
COST_FALSE_NEGATIVE: Final[float] = 5.0
COST_FALSE_POSITIVE: Final[float] = 1.0
SUMMARY_METRICS: Final[tuple[str, ...]] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "statlog_cost",
)


def log_loss_search(
    estimator: BaseEstimator, grid: Mapping[str, list[Any]], *, folds: int = 5, seed: int = 0
) -> GridSearchCV:
    """The hyperparameter search of the multi-site models: stratified, shuffled k-fold CV by
    log loss, which judges the probabilities (ranking and calibration), not one threshold.
    ``bench.sites``' models, the distillation teacher and ``bench.recipes``' references
    are all tuned by this one search, so their figures stay comparable."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return GridSearchCV(estimator, dict(grid), cv=cv, scoring="neg_log_loss")


def statlog_cost(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Average misclassification cost per patient under the StatLog cost matrix."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    fn = np.sum((t == 1) & (p == 0))
    fp = np.sum((t == 0) & (p == 1))
    return float((COST_FALSE_NEGATIVE * fn + COST_FALSE_POSITIVE * fp) / t.size)


def classification_metrics(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, threshold: float = 0.5
) -> dict[str, Any]:
    """All figures we report for one set of predictions, as plain JSON-ready values."""
    t = np.asarray(y_true).astype(np.int64)
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    pred = (p >= threshold).astype(np.int64)
    both_classes = np.unique(t).size == 2
    return {
        "n": int(t.size),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(t, pred)),
        "precision": float(precision_score(t, pred, zero_division=0.0)),
        "recall": float(recall_score(t, pred, zero_division=0.0)),
        "f1": float(f1_score(t, pred, zero_division=0.0)),
        "roc_auc": float(roc_auc_score(t, p)) if both_classes else float("nan"),
        "log_loss": float(log_loss(t, p, labels=[0, 1])),
        "brier": float(brier_score_loss(t, p)),
        "statlog_cost": statlog_cost(t, pred),
        "confusion_matrix": confusion_matrix(t, pred, labels=[0, 1]).tolist(),
    }


def cost_minimising_threshold(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> float:
    """The threshold with the lowest StatLog cost on these predictions.

    Candidates are midpoints between consecutive distinct probabilities, plus
    one at each end: calling every patient diseased, and calling every one
    healthy. Ties go to the threshold closest to the theoretical 1/6, so the
    choice does not drift to an extreme on a flat stretch.

    The data leave an end's threshold anywhere between 0 and the lowest
    probability (or the highest and 1). It is put at 1/6 when 1/6 lies there,
    else halfway, and never at 0 clamped to 1e-6: that served a meaningless
    1e-6 to a site where calling everyone diseased is cheapest (Switzerland, 93%
    diseased), whereas 1/6, the cost-optimal threshold for a calibrated risk,
    still calls a new patient healthy whose risk is below 1/6. Whoever asked
    for the threshold is told when it lands at an end
    (:func:`classes_everyone_as`).
    """
    t = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    distinct = np.unique(p)
    lowest, highest = float(distinct[0]), float(distinct[-1])
    ideal = COST_FALSE_POSITIVE / (COST_FALSE_POSITIVE + COST_FALSE_NEGATIVE)
    everyone_diseased = ideal if ideal <= lowest else lowest / 2.0
    everyone_healthy = ideal if ideal > highest else (highest + 1.0) / 2.0
    candidates = np.concatenate(
        [[everyone_diseased], (distinct[:-1] + distinct[1:]) / 2.0, [everyone_healthy]]
    )
    costs = np.array([statlog_cost(t, (p >= c).astype(np.int64)) for c in candidates])
    best = np.flatnonzero(costs <= costs.min() + 1e-12)
    choice = best[np.argmin(np.abs(candidates[best] - ideal))]
    # An artifact's threshold lies strictly between 0 and 1; only a probability of exactly
    # 0 or 1 at an end could put it there.
    return float(np.clip(candidates[choice], 1e-6, 1.0 - 1e-6))


def classes_everyone_as(threshold: float, proba: npt.ArrayLike) -> str | None:
    """``"diseased"`` or ``"healthy"`` when ``threshold`` gives every patient that class.

    Why: a cost-minimising threshold at an end is a legitimate result (where
    nearly everyone is diseased, calling everyone diseased is cheapest), but
    its yes/no answer then says nothing about these patients, and whoever
    tuned it must hear so rather than find it out in use.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.size and bool(np.all(p >= threshold)):
        return "diseased"
    if p.size and bool(np.all(p < threshold)):
        return "healthy"
    return None


def choose_threshold_by_cv(
    estimator: BaseEstimator,
    x: FloatArray,
    y: IntArray,
    *,
    n_splits: int = 5,
    random_state: int = 0,
) -> float:
    """Cost-minimising threshold from out-of-fold probabilities on training data only."""
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    oof = cross_val_predict(clone(estimator), x, y, cv=cv, method="predict_proba")[:, 1]
    return cost_minimising_threshold(y, oof)


def summarise(folds: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each scalar metric over folds."""
    rows = list(folds)
    out: dict[str, dict[str, float]] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            arr = np.asarray(values, dtype=np.float64)
            out[key] = {"mean": float(np.mean(arr)), "std": float(np.std(arr))}
    return out


def cross_validate(
    make_estimator: Callable[[], BaseEstimator],
    x: FloatArray,
    y: IntArray,
    *,
    n_splits: int = 10,
    n_repeats: int = 5,
    random_state: int = 0,
    tune_threshold: bool = True,
) -> dict[str, Any]:
    """Repeated stratified k-fold, the whole pipeline (scaler included) refitted per fold.

    Reports metrics at 0.5 and, with ``tune_threshold``, the StatLog cost at a
    threshold chosen by inner cross-validation on each *training* fold, so
    the test fold never influences its own threshold.
    """
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=random_state)
    folds: list[dict[str, Any]] = []
    for i, (tr, te) in enumerate(cv.split(x, y)):
        est = make_estimator()
        est.fit(x[tr], y[tr])
        proba = est.predict_proba(x[te])[:, 1]
        result = classification_metrics(y[te], proba, 0.5)
        if tune_threshold:
            thr = choose_threshold_by_cv(make_estimator(), x[tr], y[tr], random_state=i)
            result["tuned_threshold"] = thr
            result["statlog_cost_tuned"] = statlog_cost(y[te], (proba >= thr).astype(np.int64))
        folds.append(result)
    summary: dict[str, Any] = summarise(folds)
    summary["protocol"] = {
        "n_splits": n_splits,
        "n_repeats": n_repeats,
        "random_state": random_state,
        "n_folds": len(folds),
    }
    return summary


def bootstrap_interval(
    y: IntArray, statistic: Callable[[IntArray], float], *, n_boot: int = 1000, seed: int = 0
) -> tuple[list[float], int]:
    """Percentile 95% interval of ``statistic(indices)`` over bootstrap resamples of the
    patients, and how many resamples it rests on.

    A ranking needs both classes, so a one-class resample is skipped: a small
    group's interval then rests on fewer draws rather than on a made-up figure.
    Every bootstrap here goes through this one function, so intervals computed
    with the same seed resample the same patients (a paired difference is one
    more statistic of the same draws).
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        if np.unique(y[idx]).size == 2:
            values.append(statistic(idx))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))], len(values)


def bootstrap_auc_interval(
    y: IntArray, p: FloatArray, *, n_boot: int = 1000, seed: int = 0
) -> list[float]:
    """Percentile 95% interval of the ROC AUC over bootstrap resamples of the patients."""

    def auc(idx: IntArray) -> float:
        return float(roc_auc_score(y[idx], p[idx]))

    return bootstrap_interval(y, auc, n_boot=n_boot, seed=seed)[0]
