"""Inference without scikit-learn: the trained network as a handful of arrays.

The service calls this on every request, so it is built for that: the
StandardScaler is folded into the first layer once, at construction, so a
prediction is two small matrix products, a ReLU and a sigmoid. No estimator
object, no validation layer, no Python loop over rows.

Missing values (NaN: not measured) are *marginalised*: the probability is the
network's output averaged over the K background rows stored in the artifact,
each row supplying the values that are missing, the patient's own values kept
for everything else. That is the expected risk given what was measured (with
the missing values drawn from their training distribution), not the risk of
a patient whose missing tests happen to be "normal". Complete rows never touch
the background, so their path costs what it always did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.features import N_FEATURES
from model.uncertainty import RiskEnsemble, pattern_fillings, recalibrated


@dataclass(frozen=True, eq=False)
class Predictor:
    """Probabilities of heart disease from raw (unscaled) feature rows.

    ``w1``/``b1`` already include the scaler: ``(x - mean) / scale @ W1 + b1``
    equals ``x @ (W1 / scale[:, None]) + (b1 - (mean / scale) @ W1)``.
    """

    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: float
    threshold: float = 0.5
    model_version: str = "unversioned"
    #: Everything else the artifact records (metrics, hyperparameters, ...): the model card.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Training-set mean and standard deviation of each feature, for drift monitoring.
    feature_mean: FloatArray = field(default_factory=lambda: np.zeros(N_FEATURES))
    feature_scale: FloatArray = field(default_factory=lambda: np.ones(N_FEATURES))
    #: K x 13 raw rows whose values stand in for missing ones (``None``: NaN is refused).
    background: FloatArray | None = None
    #: Logistic recalibration of the output: ``logit p' = intercept + slope * logit p``.
    calibration_intercept: float = 0.0
    calibration_slope: float = 1.0
    #: Bootstrap networks behind the risk interval (``None``: the artifact has none).
    ensemble: RiskEnsemble | None = None
    _b1_list: list[float] = field(init=False, repr=False, default_factory=list)
    _w2_list: list[float] = field(init=False, repr=False, default_factory=list)
    #: Per missingness pattern: the background's distinct fillings, as hidden-layer
    #: contributions, and their weights (see ``_pattern``).
    _patterns: dict[bytes, tuple[FloatArray, FloatArray]] = field(
        init=False, repr=False, default_factory=dict
    )
    _recalibrated: bool = field(init=False, repr=False, default=False)
    #: The served network and the ensemble's members side by side (see :func:`_stack`).
    _stacked: tuple[FloatArray, FloatArray, FloatArray] | None = field(
        init=False, repr=False, default=None
    )
    _stacked_patterns: dict[bytes, tuple[FloatArray, FloatArray]] = field(
        init=False, repr=False, default_factory=dict
    )

    @classmethod
    def from_network(
        cls,
        coefs: tuple[FloatArray, FloatArray],
        intercepts: tuple[FloatArray, FloatArray],
        mean: FloatArray,
        scale: FloatArray,
        **kwargs: Any,
    ) -> Predictor:
        """Fold a fitted scaler (``mean``, ``scale``) into the first layer of the network."""
        w1, w2 = (np.asarray(c, dtype=np.float64) for c in coefs)
        b1, b2 = (np.asarray(b, dtype=np.float64).reshape(-1) for b in intercepts)
        mean = np.asarray(mean, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        w1_folded = w1 / scale[:, None]
        b1_folded = b1 - (mean / scale) @ w1
        return cls(
            w1=np.ascontiguousarray(w1_folded),
            b1=b1_folded,
            w2=np.ascontiguousarray(w2.reshape(-1)),
            b2=float(b2[0]),
            feature_mean=mean,
            feature_scale=scale,
            **kwargs,
        )

    def __post_init__(self) -> None:
        # Python floats for the single-row path: after the first layer, 8 hidden units
        # are cheaper as plain arithmetic than as NumPy calls, whose dispatch costs
        # the same whatever the array size, and the service scores one row per request
        # (BENCHMARKS.md, "The predictor alone"; bench/PROFILE.md, change 1).
        object.__setattr__(self, "_b1_list", [float(v) for v in self.b1])
        object.__setattr__(self, "_w2_list", [float(v) for v in self.w2])
        if self.background is not None:
            bg = np.asarray(self.background, dtype=np.float64)
            if bg.ndim != 2 or bg.shape[1] != N_FEATURES or bg.shape[0] < 1:
                raise ValueError(f"background must be K x {N_FEATURES}, got shape {bg.shape}")
            if not np.all(np.isfinite(bg)):
                raise ValueError("background rows must be complete and finite")
            object.__setattr__(self, "background", bg)
        identity = self.calibration_intercept == 0.0 and self.calibration_slope == 1.0
        object.__setattr__(self, "_recalibrated", not identity)
        if self.ensemble is not None:
            object.__setattr__(self, "_stacked", _stack(self, self.ensemble))

    @property
    def n_hidden(self) -> int:
        return int(self.w1.shape[1])

    def probability_one(self, row: npt.ArrayLike) -> float:
        """Probability of disease for one row of 13 raw values, as a float.

        Same arithmetic as :meth:`probability` with one NumPy call instead of
        about ten; the output unit sums in another order (differences ~1e-16).
        """
        x = np.asarray(row, dtype=np.float64)
        if x.shape != (N_FEATURES,):
            raise ValueError(f"expected one row of {N_FEATURES} features, got shape {x.shape}")
        hidden = np.dot(x, self.w1).tolist()
        if hidden[0] != hidden[0]:  # NaN in the row propagates to every hidden unit
            return self._marginal_one(x)
        z = self.b2
        for h, b, w in zip(hidden, self._b1_list, self._w2_list, strict=True):
            a = h + b
            if a > 0.0:
                z += a * w
        if self._recalibrated:
            z = self.calibration_intercept + self.calibration_slope * z
        return 0.5 + 0.5 * math.tanh(0.5 * z)

    def risk_one(self, row: FloatArray) -> tuple[float, float, float, bool]:
        """Probability, risk interval (lower, upper) and completeness of one row, in one
        pass over every network. Needs an ensemble (else :meth:`probability_one`).

        The /predict path. The served network and the B members share every NumPy
        call (:func:`_stack`: ``max(x @ w1, floor) @ w2``), so the interval widens a
        few products instead of adding a second round of calls: at this size a call's
        dispatch costs more than its arithmetic. A row with gaps is filled from its
        pattern's distinct background fillings, through the same stacked layers. Equal
        to :meth:`probability` and ``ensemble.interval`` up to summation order.
        """
        ensemble, stacked = self.ensemble, self._stacked
        if ensemble is None or stacked is None:
            raise ValueError("this model has no ensemble, so it gives no risk interval")
        w1, floor, w2 = stacked
        hidden = row @ w1
        if hidden[0] == hidden[0]:  # no NaN anywhere in the row: it is complete
            np.maximum(hidden, floor, out=hidden)
            point, *members = (hidden @ w2).tolist()
            if self._recalibrated:
                point = self.calibration_intercept + self.calibration_slope * point
            lo, hi = ensemble.band_of_logits(members)
            return 0.5 + 0.5 * math.tanh(0.5 * point), lo, hi, True
        missing = np.isnan(row)
        assert self.background is not None  # an ensemble is stored only with background rows
        fillings, weights = pattern_fillings(self._stacked_patterns, self.background, w1, missing)
        filled = fillings + np.where(missing, 0.0, row) @ w1
        np.maximum(filled, floor, out=filled)
        z = filled @ w2  # (distinct fillings, 1 + B): every network's output per filling
        mean_tanh, z_mean, z_square = ensemble.filling_moments(z, weights)
        point = 0.5 + 0.5 * mean_tanh[0]  # the marginal probability of the served network
        if self._recalibrated:
            point = float(self._recalibrate_mean(np.array([point]))[0])
        lo, hi = ensemble.band_of_marginals(mean_tanh[1:], z_mean[1:], z_square[1:])
        return point, lo, hi, False

    def probability(self, rows: npt.ArrayLike) -> FloatArray:
        """Probability of disease for one row (13 values) or a batch (n x 13): a 1-D array."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim == 1:
            return np.array([self.probability_one(x)])
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"expected rows of {N_FEATURES} features, got shape {x.shape}")
        hidden = x @ self.w1
        incomplete = np.isnan(hidden[:, 0])  # NaN anywhere in a row reaches every unit
        hidden += self.b1
        np.maximum(hidden, 0.0, out=hidden)
        z = hidden @ self.w2
        z += self.b2
        if self._recalibrated:
            z *= self.calibration_slope
            z += self.calibration_intercept
        p = _sigmoid_inplace(z)
        if incomplete.any():
            p[incomplete] = self._marginal(x[incomplete])
        return p

    def _marginal(self, x: FloatArray) -> FloatArray:
        """Rows with NaN: the output averaged over the background rows' values for the gaps.

        Rows are grouped by which features they lack, and each group is scored
        against its pattern's distinct background fillings (``_pattern``) in one
        vectorised step: a registry has a handful of patterns, and a pattern of
        coded features has a handful of distinct fillings, not K.
        """
        if self.background is None:
            raise ValueError(
                "this model has no background rows, so it cannot predict without every value"
            )
        missing = np.isnan(x)
        hidden = np.where(missing, 0.0, x) @ self.w1  # (m, hidden): the measured values' part
        hidden += self.b1
        codes = missing @ _PATTERN_BITS
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.diff(sorted_codes, prepend=-1))
        p = np.empty(len(x))
        for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
            rows = order[start:end]
            p[rows] = self._filled_tanh_mean(hidden[rows], missing[rows[0]])
        p *= 0.5
        p += 0.5
        return self._recalibrate_mean(p)

    def _marginal_one(self, x: FloatArray) -> float:
        """:meth:`_marginal` of one row, the /predict path, without the grouping."""
        if self.background is None:
            return float(self._marginal(x[None, :])[0])  # raises the explanation
        missing = np.isnan(x)
        hidden = np.dot(np.where(missing, 0.0, x), self.w1)
        hidden += self.b1
        p = 0.5 + 0.5 * self._filled_tanh_mean(hidden[None, :], missing)
        return float(self._recalibrate_mean(p)[0])

    def _filled_tanh_mean(self, hidden: FloatArray, missing: npt.NDArray[np.bool_]) -> FloatArray:
        """Per row of ``hidden`` (measured values' part, bias added; all rows lack
        ``missing``): the mean over the pattern's fillings of tanh(z / 2).

        The mean of sigmoids is 0.5 + 0.5 * that mean; the mean is a matrix product.
        """
        fillings, weights = self._pattern(missing)
        # (rows, fillings, hidden): each filling completes each row of the group.
        filled = hidden[:, None, :] + fillings
        np.maximum(filled, 0.0, out=filled)
        # As one (rows * fillings, hidden) matrix: one BLAS call, not one per row.
        z = (filled.reshape(-1, filled.shape[2]) @ self.w2).reshape(len(hidden), -1)
        z += self.b2
        z *= 0.5
        np.tanh(z, out=z)
        return np.asarray(z @ weights)

    def _recalibrate_mean(self, p: FloatArray) -> FloatArray:
        """The local recalibration applied to a marginalised (averaged) probability."""
        return recalibrated(p, self.calibration_intercept, self.calibration_slope)

    def _pattern(self, missing: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        assert self.background is not None
        return pattern_fillings(self._patterns, self.background, self.w1, missing)

    def predict(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Class 1 (disease) where the probability reaches the model's threshold."""
        return (self.probability(rows) >= self.threshold).astype(np.int64)


def _stack(
    predictor: Predictor, ensemble: RiskEnsemble
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Every network in three NumPy calls per row: ``max(x @ w1, floor) @ w2``.

    The first layers sit side by side and the output units form one
    block-diagonal matrix (column 0 is the served network, column 1 + m the
    ensemble's member m). ``relu(h + b1) = max(h, -b1) + b1``, so the first
    layer's bias becomes the ReLU's floor and its ``b1 @ w2`` share joins the
    output bias, carried by one more unit whose input column is zero and whose
    floor is 1. On /predict each NumPy call costs more than its arithmetic.
    """
    h = predictor.n_hidden
    w1 = np.hstack([predictor.w1, ensemble.w1, np.zeros((N_FEATURES, 1))])
    b1 = np.concatenate([predictor.b1, ensemble.b1])
    w2 = np.zeros((h + ensemble.w1.shape[1], 1 + ensemble.size))
    w2[:h, 0] = predictor.w2
    w2[h:, 1:] = ensemble.output_block
    bias = b1 @ w2 + np.concatenate([[predictor.b2], ensemble.b2])
    return np.ascontiguousarray(w1), np.concatenate([-b1, [1.0]]), np.vstack([w2, bias])


#: Bit j set when feature j is missing: a row's missingness pattern as one integer.
_PATTERN_BITS: Final[npt.NDArray[np.int64]] = 1 << np.arange(N_FEATURES, dtype=np.int64)


def _sigmoid_inplace(z: FloatArray) -> FloatArray:
    """tanh form of the sigmoid: one ufunc, no overflow for any z; overwrites ``z``."""
    z = np.asarray(z, dtype=np.float64)
    np.multiply(z, 0.5, out=z)
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z
