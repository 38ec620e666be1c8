"""Inference without scikit-learn: the trained network as a handful of arrays.

The service calls this on every request, so it is built for that: the
StandardScaler is folded into the first layer once, at construction, so a
prediction is two small matrix products, a ReLU and a sigmoid. No estimator
object, no validation layer, no Python loop over rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.features import N_FEATURES


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
    _b1_list: list[float] = field(init=False, repr=False, default_factory=list)
    _w2_list: list[float] = field(init=False, repr=False, default_factory=list)

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
        z = self.b2
        for h, b, w in zip(np.dot(x, self.w1).tolist(), self._b1_list, self._w2_list, strict=True):
            a = h + b
            if a > 0.0:
                z += a * w
        return 0.5 + 0.5 * math.tanh(0.5 * z)

    def probability(self, rows: npt.ArrayLike) -> FloatArray:
        """Probability of disease for one row (13 values) or a batch (n x 13): a 1-D array."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim == 1:
            return np.array([self.probability_one(x)])
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"expected rows of {N_FEATURES} features, got shape {x.shape}")
        hidden = x @ self.w1
        hidden += self.b1
        np.maximum(hidden, 0.0, out=hidden)
        z = hidden @ self.w2
        z += self.b2
        # tanh form of the sigmoid: one ufunc, no overflow for any z.
        np.multiply(z, 0.5, out=z)
        np.tanh(z, out=z)
        z += 1.0
        z *= 0.5
        return z

    def predict(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Class 1 (disease) where the probability reaches the model's threshold."""
        return (self.probability(rows) >= self.threshold).astype(np.int64)
