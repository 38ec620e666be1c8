"""Exact Shapley values of one prediction: why this patient's risk differs from the average.

The value of a coalition ``S`` of features is *interventional*: the features in
``S`` keep the patient's values, every other feature takes each background
row's value in turn, and the served probability is the average over those rows.
That is exactly how :class:`model.predictor.Predictor` marginalises a feature
that was not measured, over the same background rows, so:

* a missing feature is outside every coalition whatever ``S`` says, its
  marginal contributions are all zero and its Shapley value is exactly 0;
* the value of "every measured feature" is the probability the service answers,
  and the value of the empty coalition (every feature from the background) is
  the base value, so the contributions sum to ``probability - base`` up to
  floating-point rounding (efficiency of the Shapley value).

Calibration: the service answers ``g(mean_k f(x_S, b_k))`` where ``f`` is the
network and ``g`` the logistic recalibration stored in the artifact (identity
when there is none). The value function applies ``g`` after the average, as the
Predictor does, so what is explained is the probability the service answers,
and the base value is ``g`` of the network's average over the background rows.
(The ``shap`` library's exact explainer computes the same numbers when given
``g`` as its link function; ``tests/model/test_explain.py`` checks it.)

Cost. With ``m`` measured features there are ``2^m`` coalitions (8,192 for
13). The first layer is linear, so the pre-activations of every coalition on
every background row are the background's own plus a sum of per-feature shifts,
built by doubling rather than by a matrix product; then a ReLU (fused with the
last addition), the output unit, a sigmoid and a mean over the rows. The
Shapley values are one fixed ``(2^m x m)`` weight matrix applied to the ``2^m``
coalition values. The coalitions run in float32 in blocks that fit in cache;
the final weighting is float64. ``python -m bench.predictor_micro`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import factorial
from typing import Final

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.features import FEATURE_NAMES, N_FEATURES
from model.predictor import Predictor
from model.uncertainty import recalibrated

#: Coalitions evaluated per block (2^7): with the served 64 background rows and 16 hidden
#: units (two seeds) the float32 block is 512 KiB, inside a core's L2 cache (1 MiB on the
#: benchmark machine). Re-timed at 16 units, one pinned core under other load: 2^5 10.4 ms,
#: 2^6 6.0, 2^7 5.8, 2^8 5.4 per patient; 2^7 stays, the larger block's gain is within noise.
CHUNK_BITS: Final[int] = 7


@dataclass(frozen=True)
class Explanation:
    """Shapley contributions of the 13 features (feature order) to one served probability."""

    probability: float
    base_value: float
    #: One value per feature in :data:`model.features.FEATURE_NAMES` order; 0 where missing.
    contributions: FloatArray
    #: Which features were not measured (NaN) and therefore contribute exactly 0.
    missing: npt.NDArray[np.bool_]

    def ranked(self) -> list[tuple[str, float]]:
        """``(name, contribution)`` by decreasing magnitude: the order a person reads it in."""
        order = np.argsort(-np.abs(self.contributions), kind="stable")
        return [(FEATURE_NAMES[j], float(self.contributions[j])) for j in order]


@lru_cache(maxsize=N_FEATURES + 1)
def _coalitions(m: int) -> tuple[npt.NDArray[np.float32], FloatArray]:
    """Membership matrix of the ``2^m`` coalitions, and the Shapley weight matrix.

    ``phi = weights.T @ v``: for coalition ``c`` and player ``j``, the weight is
    ``+|S-1|!(m-|S|)!/m!`` when ``j`` is in ``c`` (``c`` is some ``S + j``) and
    ``-|S|!(m-|S|-1)!/m!`` when it is not (``c`` is some ``S`` without ``j``).
    """
    codes = np.arange(2**m)
    bits = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)
    size = bits.sum(axis=1)
    w = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)] + [0.0])
    plus = w[np.maximum(size - 1, 0)]
    minus = w[np.minimum(size, m)]
    weights = np.where(bits, plus[:, None], -minus[:, None])
    return bits.astype(np.float32), weights


def coalition_values(
    predictor: Predictor, row: npt.ArrayLike
) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Served probability of every coalition of the measured features, and their indices.

    Returns ``(v, present)``: ``v[c]`` is the value of the coalition whose bit
    ``i`` says whether measured feature ``present[i]`` keeps its value.
    """
    x = np.asarray(row, dtype=np.float64)
    if x.shape != (N_FEATURES,):
        raise ValueError(f"expected one row of {N_FEATURES} features, got shape {x.shape}")
    if predictor.background is None:
        raise ValueError(
            "this model has no background rows, so its predictions cannot be explained"
        )
    bg = np.asarray(predictor.background, dtype=np.float64)
    present = np.flatnonzero(~np.isnan(x))
    m = present.size
    k, hidden = bg.shape[0], predictor.n_hidden
    # Hidden-major layout, (hidden, K) per coalition: the output unit is then one
    # (hidden,) @ (C, hidden, K) product. The empty coalition's pre-activations:
    base = (bg @ predictor.w1 + predictor.b1).T.reshape(1, -1)
    # Swapping in the patient's value of feature j moves row k by (x_j - bg_kj) * w1[j].
    delta = (x[present][:, None] - bg[:, present].T)[:, None, :] * predictor.w1[present][:, :, None]
    delta = delta.reshape(m, hidden * k)
    # Coalition c = high * C + low. The pre-activations of all C = 2^low_bits low patterns
    # are built by doubling (each bit adds its delta to the half that has it), likewise
    # the offsets of the high patterns; each block is then one pass over C rows.
    low_bits = min(m, CHUNK_BITS)
    inner = np.zeros((1, hidden * k), dtype=np.float32)
    for d in delta[:low_bits].astype(np.float32):
        inner = np.concatenate([inner, inner + d])
    offsets = base
    for d in delta[low_bits:]:
        offsets = np.concatenate([offsets, offsets + d])
    # relu(inner + off) = max(inner, -off) + off: one pass over the block instead of
    # two, and off's share of the output unit is a constant per background row.
    # 0.5 * z feeds tanh: mean of sigmoids = 0.5 + 0.5 * mean(tanh(z / 2)), no overflow.
    half_w2 = 0.5 * predictor.w2
    consts = np.einsum("chk,h->ck", offsets.reshape(-1, hidden, k), half_w2) + 0.5 * predictor.b2
    consts32, negated = consts.astype(np.float32), (-offsets).astype(np.float32)
    w2 = half_w2.astype(np.float32)
    n_low = inner.shape[0]
    block = np.empty_like(inner)
    z = np.empty((n_low, k), dtype=np.float32)
    average = np.full(k, 1.0 / k, dtype=np.float32)
    raw = np.empty(2**m, dtype=np.float64)
    for high in range(negated.shape[0]):
        np.maximum(inner, negated[high], out=block)
        np.matmul(w2, block.reshape(n_low, hidden, k), out=z)
        z += consts32[high]
        np.tanh(z, out=z)
        raw[high * n_low : (high + 1) * n_low] = z @ average
    raw *= 0.5
    raw += 0.5
    # The Predictor's recalibration g, applied after the background average.
    return recalibrated(raw, predictor.calibration_intercept, predictor.calibration_slope), present


def explain(predictor: Predictor, row: npt.ArrayLike) -> Explanation:
    """Exact interventional Shapley values of the served probability for one patient."""
    x = np.asarray(row, dtype=np.float64)
    v, present = coalition_values(predictor, x)
    _, weights = _coalitions(present.size)
    contributions = np.zeros(N_FEATURES)
    contributions[present] = weights.T @ v
    return Explanation(
        probability=float(v[-1]),
        base_value=float(v[0]),
        contributions=contributions,
        missing=np.isnan(x),
    )
