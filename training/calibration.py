"""Calibration figures, decision curves and logistic recalibration.

A risk model that ranks well can still be wrong about the risk itself: in
another hospital the disease may be twice as common. These are the figures
that say how wrong, and the one-line fix a hospital applies first:

* **Calibration intercept and slope**: fit ``logit P(y=1) = a + b * logit p``
  by unpenalised logistic regression of the outcome on the model's logit.
  ``b < 1`` means the predictions are too extreme, ``b > 1`` too timid;
  ``a`` shifts the level (with ``b``, not the "in-the-large" intercept).
* **Recalibration**: those same ``a, b`` applied to the model's output.
* **Net benefit** (Vickers & Elkin 2006): at threshold ``t``,
  ``TP/n - FP/n * t / (1 - t)``, against "treat all" and "treat none" (0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

from model.arrays import FloatArray

#: Probabilities are clipped this far from 0 and 1 before taking the logit.
EPS = 1e-6


def logit(p: npt.ArrayLike) -> FloatArray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def calibration_intercept_slope(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[float, float]:
    """``(a, b)`` of the logistic recalibration of the outcome on ``logit p``."""
    t = np.asarray(y).astype(np.int64)
    if np.unique(t).size < 2:
        return float("nan"), float("nan")
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(logit(p)[:, None], t)
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


def separated(y: npt.ArrayLike, p: npt.ArrayLike) -> bool:
    """Whether ``p`` orders the two outcomes apart: every risk of one outcome at or above
    every risk of the other.

    Why: the logistic fit of ``y`` on ``logit p`` then has no maximum (the likelihood
    keeps rising as the slope grows without bound), so the solver stops wherever its
    tolerance lets it and returns numbers that say nothing; a handful of local
    patients is usually so. Ties at the boundary count (quasi-complete separation):
    the maximum is still at an infinite slope.
    """
    t = np.asarray(y).astype(np.int64)
    z = logit(p)
    with_, without = z[t == 1], z[t == 0]
    if not (with_.size and without.size):
        return False
    return bool(with_.min() >= without.max() or without.min() >= with_.max())


def slope_interval(
    p: npt.ArrayLike, intercept: float, slope: float, z: float = 1.96
) -> tuple[float, float]:
    """The Wald 95% interval of a fitted recalibration slope (``p``: the output refitted).

    Why: a hospital with few patients of one outcome gets a slope that the data
    barely determine, and should see how barely before it serves it. The
    standard error is the unpenalised fit's: the inverse of its Fisher
    information at the fitted ``a, b``.
    """
    if not (math.isfinite(intercept) and math.isfinite(slope)):
        return math.nan, math.nan
    t = logit(p)
    q = 1.0 / (1.0 + np.exp(-(intercept + slope * t)))
    w = q * (1.0 - q)
    info = np.array([[w.sum(), (w * t).sum()], [(w * t).sum(), (w * t * t).sum()]])
    try:
        variance = float(np.linalg.inv(info)[1, 1])
    except np.linalg.LinAlgError:  # every patient at the same output: no slope to speak of
        return math.nan, math.nan
    half = z * math.sqrt(max(variance, 0.0))
    return slope - half, slope + half


def recalibrate(p: npt.ArrayLike, intercept: float, slope: float) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-(intercept + slope * logit(p)))))


def reliability_bins(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> list[dict[str, Any]]:
    """Observed frequency per bin of predicted risk (equal-width bins, empty ones left out)."""
    t = np.asarray(y, dtype=np.float64)
    q = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(q, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "n": int(sel.sum()),
                    "mean_predicted": float(q[sel].mean()),
                    "observed": float(t[sel].mean()),
                }
            )
    return out


def net_benefit(
    y: npt.ArrayLike, p: npt.ArrayLike, thresholds: npt.ArrayLike
) -> dict[str, list[float]]:
    """Net benefit of the model, of treating everyone, and of no one, at each threshold."""
    t = np.asarray(y).astype(np.int64)
    q = np.asarray(p, dtype=np.float64)
    th = np.asarray(thresholds, dtype=np.float64)
    n = t.size
    prevalence = t.mean()
    odds = th / (1.0 - th)
    model = [
        float(np.sum((q >= c) & (t == 1)) / n - np.sum((q >= c) & (t == 0)) / n * o)
        for c, o in zip(th, odds, strict=True)
    ]
    treat_all = (prevalence - (1.0 - prevalence) * odds).tolist()
    return {
        "thresholds": th.tolist(),
        "model": model,
        "treat_all": [float(v) for v in treat_all],
        "treat_none": [0.0] * th.size,
    }
