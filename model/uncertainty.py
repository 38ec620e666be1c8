"""How sure is the risk: an interval from a bootstrap ensemble of networks.

Training stores ``B`` extra networks, each trained by the same recipe on a
bootstrap resample of the training patients (``training/ensemble.py``). For a
patient, each member gives a probability; the interval covers the central
90 % of a normal distribution fitted to the members' log-odds (mean +- 1.645
standard deviations, mapped back to probabilities). It says how much a
different draw of training data of the same size could move the risk; it is
not a prediction interval for the patient's outcome.

Why a normal fit and not the members' 5th-95th percentiles: with the ten
members we can afford to train, the empirical percentiles sit inside the
sample and shrink the interval (mean width 0.162 with 8 members against 0.188
with 20), while the fitted band is nearly unbiased (0.211 against 0.214) with
the same endpoint noise (``python -m training.ensemble``'s figures in
``docs/explanations.md``).

The point estimate stays the served model's (calibrated) probability: the
members only supply the spread. The band is centred on the members' mean
log-odds, so the point estimate can sit off-centre (or, rarely, outside).

Every member marginalises a missing feature exactly as the served
:class:`model.predictor.Predictor` does, over the same background rows, and
passes through the same logistic recalibration. A missing value adds a second
source of doubt: the K background rows that stand in for it give K different
outputs. The band's variance (in log-odds) is therefore the law of total
variance over members x background rows: the variance across members of their
marginalised log-odds (training data), plus the members' mean variance across
the filled-in rows (what the unmeasured values could be). A complete record has
no filled rows, so its band is the members' alone; hiding tests widens it
(``tests/model/test_uncertainty.py``, ``results/intervals.md``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.features import N_FEATURES

#: Share of the members' fitted log-odds distribution the interval covers.
DEFAULT_COVERAGE: Final[float] = 0.9
_EPS: Final[float] = 1e-12
_MAX_LOGIT: Final[float] = math.log((1.0 - _EPS) / _EPS)
#: tanh(z / 2) of the largest log-odds kept: the probability clipped to [_EPS, 1 - _EPS].
_MAX_TANH: Final[float] = 1.0 - 2.0 * _EPS
#: The log-odds of the clipped probabilities ``_EPS``, ``1 - _EPS`` (and ``1e-15``, the
#: recalibration's clip), computed as the probability path computes them, so taking a
#: complete row's log-odds directly clips at the same values.
_LOW_LOGIT: Final[float] = math.log(_EPS) - math.log1p(-_EPS)
_HIGH_LOGIT: Final[float] = math.log(1.0 - _EPS) - math.log1p(-(1.0 - _EPS))
_LOW_LOGIT_15: Final[float] = math.log(1e-15) - math.log1p(-1e-15)
_HIGH_LOGIT_15: Final[float] = math.log(1.0 - 1e-15) - math.log1p(-(1.0 - 1e-15))
ARRAY_NAMES: Final[tuple[str, ...]] = ("W1", "b1", "W2", "b2", "mean", "scale")


#: Row x filling pairs per evaluation of rows with gaps in ``RiskEnsemble.member_spread``:
#: 2,048 x B*hidden floats (1.3 MB with the default model) bound its memory and stay in
#: the core's cache: 1.7x less CPU than 65,536 pairs on a registry with gaps.
_FILLED_ROWS: Final[int] = 2_048

#: Rows per block of ``RiskEnsemble.interval``: 4,096 x B*hidden floats (2.6 MB with the
#: default model) stay near the cache; smaller blocks add per-call overhead.
_BLOCK_ROWS: Final[int] = 4_096

#: Patterns cached per model; at most 2 ** 10 exist (10 features may be missing).
_MAX_PATTERNS: Final[int] = 4096


def pattern_fillings(
    cache: dict[bytes, tuple[FloatArray, FloatArray]],
    background: FloatArray,
    w1: FloatArray,
    missing: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """The distinct background values of the missing features through a first layer
    ``w1``, and their weights; cached in ``cache`` per missingness pattern.

    Background rows that agree on the missing features fill a row identically, so
    each is evaluated once and weighted by its count: 64 rows give 3 fillings when
    only ``thal`` is missing. Shared by the point estimate (``Predictor``) and the
    interval's members, so both marginalise the same way.
    """
    key = missing.tobytes()
    known = cache.get(key)
    if known is None:
        values, counts = np.unique(background[:, missing], axis=0, return_counts=True)
        known = (values @ w1[missing], counts / len(background))
        if len(cache) < _MAX_PATTERNS:
            cache[key] = known
    return known


def recalibrated(p: FloatArray, intercept: float, slope: float) -> FloatArray:
    """The local logistic recalibration ``g`` of (averaged) probabilities:
    ``logit g(p) = a + b logit p``, ``p`` clipped to ``[1e-15, 1 - 1e-15]``; ``p`` itself
    when there is none. One definition for the point estimate (``Predictor``), the
    interval's members and the explanation, so all three apply the same ``g``.
    """
    if intercept == 0.0 and slope == 1.0:
        return p
    q = np.clip(p, 1e-15, 1.0 - 1e-15)
    z = intercept + slope * (np.log(q) - np.log1p(-q))
    return np.asarray(0.5 + 0.5 * np.tanh(0.5 * z))


def _log_odds(p: FloatArray) -> FloatArray:
    """Log-odds of probabilities clipped to ``[_EPS, 1 - _EPS]``, in place (``p`` is
    consumed): the interval's members."""
    np.maximum(p, _EPS, out=p)
    np.minimum(p, 1.0 - _EPS, out=p)
    tail = np.negative(p)
    np.log1p(tail, out=tail)
    logit = np.log(p, out=p)
    logit -= tail
    return logit


def _clipped(v: float, bound: float) -> float:
    """``v`` limited to ``[-bound, bound]``; cheaper than ``min(max(...))`` on floats."""
    return v if -bound <= v <= bound else (bound if v > 0.0 else -bound)


def _mean_and_variance(values: list[float]) -> tuple[float, float]:
    """Mean and sample variance of the members' log-odds, in C-level passes.

    ``sum(v^2) - n mean^2``: the cancellation error (~1e-16 of ``sum(v^2)``) is far
    below what a probability shows; clamped at 0 for equal members.
    """
    n = len(values)
    total = sum(values)
    mean = total / n
    return mean, max(sum(map(operator.mul, values, values)) - total * mean, 0.0) / (n - 1)


@dataclass(frozen=True, eq=False)
class RiskEnsemble:
    """``B`` networks with their scalers folded in, evaluated together in one product.

    ``w1`` is ``13 x (B*hidden)`` (member-major columns), so one ``x @ w1``
    computes every member's hidden layer at once.
    """

    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray
    background: FloatArray
    coverage: float = DEFAULT_COVERAGE
    calibration_intercept: float = 0.0
    calibration_slope: float = 1.0
    _hidden: int = field(init=False, repr=False, default=0)
    #: Standard normal quantile of the band's upper end (1.645 for 90 %).
    _z: float = field(init=False, repr=False, default=0.0)
    #: ``w2`` as a block-diagonal ``(B*hidden) x B`` matrix: every member's output unit
    #: in one product (the /predict path, ``Predictor.risk_one``).
    _w2_block: FloatArray = field(init=False, repr=False, default_factory=lambda: np.empty(0))
    #: Distinct background fillings through ``w1`` per missingness pattern (see
    #: :func:`pattern_fillings`), computed once per model, not per call.
    _patterns: dict[bytes, tuple[FloatArray, FloatArray]] = field(
        init=False, repr=False, default_factory=dict
    )
    #: ``-b1``: ``relu(h + b1) @ w2 = max(h, -b1) @ w2 + b1 @ w2``, one pass less over the
    #: hidden layer (as ``model.predictor._stack`` does); and per member ``b1 @ w2 + b2``.
    _floor: FloatArray = field(init=False, repr=False, default_factory=lambda: np.empty(0))
    _out_bias: FloatArray = field(init=False, repr=False, default_factory=lambda: np.empty(0))
    #: ``1 / B`` and ``1 / (B - 1)`` per member: a row's mean and sample variance over
    #: the members as one matrix-vector product (an ``axis=1`` reduction over 10 values
    #: costs ~7x more per row).
    _mean_weights: FloatArray = field(init=False, repr=False, default_factory=lambda: np.empty(0))
    _var_weights: FloatArray = field(init=False, repr=False, default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        b = self.b2.size
        h = self.w1.shape[1] // b
        block = np.zeros((b * h, b))
        for member in range(b):
            block[member * h : (member + 1) * h, member] = self.w2[member]
        object.__setattr__(self, "_hidden", h)
        object.__setattr__(self, "_z", NormalDist().inv_cdf(0.5 + self.coverage / 2.0))
        object.__setattr__(self, "_w2_block", block)
        object.__setattr__(self, "_floor", -self.b1)
        bias = np.einsum("bh,bh->b", self.b1.reshape(b, h), self.w2) + self.b2
        object.__setattr__(self, "_out_bias", bias)
        object.__setattr__(self, "_mean_weights", np.full(b, 1.0 / b))
        object.__setattr__(self, "_var_weights", np.full(b, 1.0 / max(b - 1, 1)))

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, Any], background: FloatArray, **kwargs: Any
    ) -> RiskEnsemble:
        """Stacked member arrays as training stores them (``W1``: ``B x 13 x hidden``, ...)."""
        w1, b1, w2, b2, mean, scale = (
            np.asarray(arrays[name], dtype=np.float64) for name in ARRAY_NAMES
        )
        n, _, hidden = w1.shape
        folded = w1 / scale[:, :, None]  # each member's scaler folded into its first layer
        b1_folded = b1 - np.einsum("bj,bjh->bh", mean / scale, w1)
        return cls(
            w1=np.ascontiguousarray(folded.transpose(1, 0, 2).reshape(N_FEATURES, n * hidden)),
            b1=b1_folded.reshape(-1),
            w2=w2.reshape(n, hidden),
            b2=b2.reshape(n),
            background=np.asarray(background, dtype=np.float64),
            **kwargs,
        )

    @property
    def size(self) -> int:
        return int(self.b2.size)

    def member_probabilities(self, rows: npt.ArrayLike) -> FloatArray:
        """``n x B``: every member's (recalibrated, marginalised) probability for every row."""
        return self.member_spread(rows)[0]

    def member_spread(self, rows: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """``n x B`` marginalised probabilities, and per row the mean over members of the
        variance, across the background rows, of the recalibrated log-odds of a filled row
        (0 for a complete row: nothing is filled).

        The quantities are those of repeating every row over the K background rows and
        averaging, but that costs K evaluations per row. Here a complete row is evaluated
        once; rows with gaps are grouped by missingness pattern, each row's known features
        go through the first layer once, and only the pattern's *distinct* background
        fillings (:func:`pattern_fillings`, as ``Predictor`` and ``/predict`` use) are
        added, their means weighted by count / K: 3 fillings, not 64, when only ``thal``
        is missing. Results equal the repeated evaluation up to summation order
        (``tests/model/test_uncertainty.py``).
        """
        return self._spread(rows, log_odds=False)

    def _spread(self, rows: npt.ArrayLike, *, log_odds: bool) -> tuple[FloatArray, FloatArray]:
        """:meth:`member_spread`; with ``log_odds`` the members' recalibrated log-odds
        clipped to ``[_LOW_LOGIT, _HIGH_LOGIT]`` (what :meth:`interval` needs) instead of
        their probabilities.

        The log-odds of a complete row are its members' outputs, recalibrated and
        clipped as the probability would have been: going through the probability and
        back (a tanh, a log and a log1p per member) cost half the complete-row interval
        and lost up to ~1e-12 at |log-odds| ~ 17, where ``1 - p`` keeps few digits
        (``/predict``'s ``band_of_logits`` takes the outputs directly too). Rows with
        gaps average probabilities over the fillings, so they keep the round trip.
        """
        x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if x.shape[1] != N_FEATURES:
            raise ValueError(f"expected rows of {N_FEATURES} features, got shape {x.shape}")
        n = x.shape[0]
        missing = np.isnan(x)
        gapped = missing.any(axis=1)
        within = np.zeros(n)
        if not gapped.any():  # the common bulk case: no indexing copies, no groups
            return self._complete(x, log_odds), within
        out = np.empty((n, self.size))
        complete = ~gapped
        if complete.any():
            out[complete] = self._complete(x[complete], log_odds)
        rows_with_gaps = np.flatnonzero(gapped)
        self._marginalise(x, missing, rows_with_gaps, out, within)
        p = self._recalibrated(out[rows_with_gaps])
        out[rows_with_gaps] = _log_odds(p) if log_odds else p
        within *= self.calibration_slope**2
        return out, within

    def _complete(self, x: FloatArray, log_odds: bool) -> FloatArray:
        """Complete rows: every member's recalibrated probability, or its log-odds clipped
        as :meth:`interval` clips the probability (see :meth:`_spread`)."""
        z = self._logits(x @ self.w1)
        if not log_odds:
            return self._recalibrated(self._probabilities(z))
        if self.calibration_intercept != 0.0 or self.calibration_slope != 1.0:
            # The recalibration's own clip of the probability to [1e-15, 1 - 1e-15].
            np.maximum(z, _LOW_LOGIT_15, out=z)
            np.minimum(z, _HIGH_LOGIT_15, out=z)
            z *= self.calibration_slope
            z += self.calibration_intercept
        np.maximum(z, _LOW_LOGIT, out=z)
        np.minimum(z, _HIGH_LOGIT, out=z)
        return z

    def _recalibrated(self, p: FloatArray) -> FloatArray:
        return recalibrated(p, self.calibration_intercept, self.calibration_slope)

    def _logits(self, hidden: FloatArray) -> FloatArray:
        """Every member's raw output log-odds from first-layer products ``hidden``
        (``... x B*hidden``, without ``b1``; overwritten): ``... x B``."""
        np.maximum(hidden, self._floor, out=hidden)
        shape = hidden.shape[:-1]
        # optimize=True: a BLAS contraction, about half the time of einsum's own loop.
        z: FloatArray = np.einsum(
            "rbh,bh->rb", hidden.reshape(-1, self.size, self._hidden), self.w2, optimize=True
        )
        z += self._out_bias
        return z.reshape(*shape, self.size)

    @staticmethod
    def _probabilities(z: FloatArray) -> FloatArray:
        """``sigmoid(z)`` as ``1 / (1 + exp(-z))``, in place (``z`` is consumed).

        NumPy's exp is vectorised, its tanh is not: 2.3x faster, and this is the
        costliest step for rows with gaps (one per member, per row and filling). Equal
        to ``(1 + tanh(z / 2)) / 2`` within 1e-16 (closer for small probabilities);
        ``exp`` overflowing to inf for ``z < -709`` gives the right 0.
        """
        np.negative(z, out=z)
        with np.errstate(over="ignore"):
            np.exp(z, out=z)
        z += 1.0
        np.reciprocal(z, out=z)
        return z

    def _marginalise(
        self,
        x: FloatArray,
        missing: npt.NDArray[np.bool_],
        rows: npt.NDArray[np.intp],
        p: FloatArray,
        within: FloatArray,
    ) -> None:
        """Fill ``p[rows]`` and ``within[rows]`` (raw, before the recalibration) for rows
        with gaps, pattern by pattern over the pattern's distinct fillings.

        A group is evaluated in parts of at most :data:`_FILLED_ROWS` row x filling pairs,
        so memory stays bounded (and cached) whatever the call's size.
        """
        codes = missing[rows] @ (1 << np.arange(N_FEATURES))
        _, first, inverse, counts = np.unique(
            codes, return_index=True, return_inverse=True, return_counts=True
        )
        order = rows[np.argsort(inverse.reshape(-1), kind="stable")]
        ends = np.cumsum(counts)
        for pattern_row, end, count in zip(rows[first], ends, counts, strict=True):
            pattern = missing[pattern_row]
            known = ~pattern
            fillings, weights = pattern_fillings(self._patterns, self.background, self.w1, pattern)
            f = len(weights)
            group = order[end - count : end]
            step = max(1, _FILLED_ROWS // f)
            for i in range(0, len(group), step):
                part = group[i : i + step]
                shape = (len(part), self.size)
                base = x[np.ix_(part, known)] @ self.w1[known]
                # Filling-major (f x r x B): each weighted mean over the fillings is one
                # vector-matrix product.
                z = self._logits(fillings[:, None, :] + base[None, :, :])
                clipped = np.maximum(z, -_MAX_LOGIT)
                np.minimum(clipped, _MAX_LOGIT, out=clipped)
                flat = clipped.reshape(f, -1)
                p[part] = (weights @ self._probabilities(z).reshape(f, -1)).reshape(shape)
                # Weighted variance over the fillings, two passes (no cancellation).
                flat -= weights @ flat
                flat *= flat
                within[part] = (weights @ flat).reshape(shape) @ self._mean_weights

    @property
    def output_block(self) -> FloatArray:
        """Every member's output unit as one block-diagonal ``(B*hidden) x B`` matrix."""
        return self._w2_block

    def band_of_logits(self, logits: list[float]) -> tuple[float, float]:
        """The band of a complete row from the members' raw output log-odds; applies
        the recalibration (to the clipped log-odds). Plain floats: B values cost less
        in Python than in NumPy."""
        band = self._unclipped_band(logits)
        if band is not None:
            return band
        a, b = self.calibration_intercept, self.calibration_slope
        return self._band([a + b * _clipped(v, _MAX_LOGIT) for v in logits])

    def _unclipped_band(
        self, raw: list[float], within: float = 0.0, scale: float = 1.0
    ) -> tuple[float, float] | None:
        """The band of the recalibrated log-odds ``a + b * scale * raw`` when no member
        needs the clip, before or after the recalibration (else None: the caller clips
        member by member).

        The recalibration is linear, so it moves the members' mean and scales their
        spread: the band comes from four C-level passes (min, max, sum, sum of squares)
        instead of a Python-level pass per member (bench/PROFILE.md, section 4).
        """
        a, b = self.calibration_intercept, self.calibration_slope * scale
        low, high, bound = min(raw), max(raw), _MAX_LOGIT / scale
        if not (
            -bound <= low
            and high <= bound
            and -_MAX_LOGIT <= a + b * low <= _MAX_LOGIT
            and -_MAX_LOGIT <= a + b * high <= _MAX_LOGIT
        ):
            return None
        mean, variance = _mean_and_variance(raw)
        return self._ends(a + b * mean, math.sqrt(b * b * variance + within))

    @staticmethod
    def filling_moments(
        z: FloatArray, weights: FloatArray
    ) -> tuple[list[float], list[float], list[float]]:
        """Per column of ``z`` (fillings x networks: raw output log-odds), the weighted
        means over the fillings of ``tanh(z / 2)``, of the clipped ``z`` and of its square.

        One product for all three: on /predict each NumPy call costs more than its
        arithmetic. A network's marginalised probability is ``(1 + mean tanh) / 2``.
        """
        clipped = np.maximum(z, -_MAX_LOGIT)  # ufuncs: np.clip and np.hstack cost more here
        np.minimum(clipped, _MAX_LOGIT, out=clipped)
        columns = np.concatenate((np.tanh(0.5 * z), clipped, clipped * clipped), axis=1)
        moments = (weights @ columns).tolist()
        k = z.shape[1]
        return moments[:k], moments[k : 2 * k], moments[2 * k :]

    def band_of_marginals(
        self, mean_tanh: list[float], z_mean: list[float], z_square: list[float]
    ) -> tuple[float, float]:
        """The band of a row with gaps (the law of total variance over members x
        fillings), from each member's :meth:`filling_moments`: its marginalised
        probability is ``(1 + mean_tanh) / 2``, so its log-odds are
        ``2 atanh(mean_tanh)``, one call instead of a log and a log1p."""
        a, slope = self.calibration_intercept, self.calibration_slope
        # Mean over members of the weighted variance across fillings: E[z^2] - E[z]^2.
        within = (sum(z_square) - sum(map(operator.mul, z_mean, z_mean))) / len(z_mean)
        within *= slope * slope
        if min(mean_tanh) >= -_MAX_TANH and max(mean_tanh) <= _MAX_TANH:
            band = self._unclipped_band(list(map(math.atanh, mean_tanh)), within, scale=2.0)
            if band is not None:
                return band
        two_slope = 2.0 * slope
        members = [
            _clipped(a + two_slope * math.atanh(_clipped(t, _MAX_TANH)), _MAX_LOGIT)
            for t in mean_tanh
        ]
        return self._band(members, within)

    def _band(self, logits: list[float], within: float = 0.0) -> tuple[float, float]:
        """The band from the members' log-odds (and the filled rows' variance)."""
        centre, variance = _mean_and_variance(logits)
        return self._ends(centre, math.sqrt(variance + within))

    def _ends(self, centre: float, sd: float) -> tuple[float, float]:
        """Lower and upper probability of the band ``centre +- z sd`` (log-odds)."""
        spread = self._z * sd
        return 0.5 + 0.5 * math.tanh(0.5 * (centre - spread)), 0.5 + 0.5 * math.tanh(
            0.5 * (centre + spread)
        )

    def interval(self, rows: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Lower and upper end of the band, per row: centre +- z sd in log-odds, where the
        variance is the members' (training data) plus the filled-in rows' (missing values)."""
        x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        lo, hi = np.empty(len(x)), np.empty(len(x))
        # Blocks of rows keep the B*hidden-wide hidden layer and every n x B temporary in
        # the core's cache instead of streaming them through memory: about a quarter of
        # the CPU on complete rows (BENCHMARKS.md, "The interval columns ...").
        for start in range(0, len(x), _BLOCK_ROWS):
            block = slice(start, start + _BLOCK_ROWS)
            logit, within = self._spread(x[block], log_odds=True)
            centre = logit @ self._mean_weights
            logit -= centre[:, None]
            logit *= logit
            within += logit @ self._var_weights
            spread = self._z * np.sqrt(within, out=within)
            lo[block] = 0.5 + 0.5 * np.tanh(0.5 * (centre - spread))
            hi[block] = 0.5 + 0.5 * np.tanh(0.5 * (centre + spread))
        return lo, hi
