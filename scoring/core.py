"""Scoring a validated chunk: probability, class, and the interval when the model has one.

NumPy only, shared by ``heart-score``, :func:`scoring.frame.score_frame` and
the service's columnar batch, so every path computes the same numbers from
the same call (``Predictor.probability`` on the valid rows of the chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.columns import ColumnBatch
from model.predictor import Predictor

IntervalFn = Callable[[FloatArray], Any]

PROBABILITY = "probability"
PREDICTION = "prediction"
LOW = "probability_low"
HIGH = "probability_high"
#: Rows per call of the predictor (see ``_in_slices``).
SLICE_ROWS = 16_384
#: Method names a model with an uncertainty interval may offer (issue 10 adds one).
_INTERVAL_METHODS = ("probability_interval", "interval")


def interval_function(predictor: Predictor) -> IntervalFn | None:
    """The model's interval method, if it has one: the output then gains two columns.

    Probed rather than required, so this code works before and after the
    bootstrap ensemble lands, and with artifacts trained either way.
    """
    for name in _INTERVAL_METHODS:
        method = getattr(predictor, name, None)
        if callable(method):
            has = getattr(predictor, "has_interval", True)
            if has is False:
                return None
            fn: IntervalFn = method
            return fn
    return None


def output_columns(predictor: Predictor) -> list[str]:
    """The score columns, in output order (keys go before them)."""
    names = [PROBABILITY, PREDICTION]
    if interval_function(predictor) is not None:
        names += [LOW, HIGH]
    return names


@dataclass(frozen=True)
class Scores:
    """Scores of one chunk, one value per input row; NaN / -1 where the row was refused."""

    probability: FloatArray
    prediction: npt.NDArray[np.int64]
    valid: npt.NDArray[np.bool_]
    low: FloatArray | None = None
    high: FloatArray | None = None

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        out: dict[str, npt.NDArray[Any]] = {
            PROBABILITY: self.probability,
            PREDICTION: self.prediction,
        }
        if self.low is not None and self.high is not None:
            out[LOW] = self.low
            out[HIGH] = self.high
        return out


def score_batch(predictor: Predictor, batch: ColumnBatch) -> Scores:
    """Score the rows of ``batch`` that passed validation; refused rows get no score."""
    x = batch.x if batch.all_valid else batch.x[batch.valid]
    p = _in_slices(predictor.probability, x)
    interval = interval_function(predictor)
    low = high = None
    if interval is not None:
        parts = [
            _split_bounds(interval(x[i : i + SLICE_ROWS])) for i in range(0, len(x), SLICE_ROWS)
        ]
        low = np.concatenate([np.asarray(a, dtype=np.float64) for a, _ in parts] or [np.empty(0)])
        high = np.concatenate([np.asarray(b, dtype=np.float64) for _, b in parts] or [np.empty(0)])
    if batch.all_valid:
        prediction = (p >= predictor.threshold).astype(np.int64)
        return Scores(p, prediction, batch.valid, low, high)
    n = len(batch.valid)
    full_p = np.full(n, np.nan)
    full_p[batch.valid] = p
    full_class = np.full(n, -1, dtype=np.int64)
    full_class[batch.valid] = p >= predictor.threshold
    if low is not None and high is not None:
        full_low, full_high = np.full(n, np.nan), np.full(n, np.nan)
        full_low[batch.valid], full_high[batch.valid] = low, high
        low, high = full_low, full_high
    return Scores(full_p, full_class, batch.valid, low, high)


def _in_slices(fn: Callable[[FloatArray], Any], x: FloatArray) -> FloatArray:
    """``fn`` over at most ``SLICE_ROWS`` rows at a time, concatenated.

    A row with missing values is averaged over every background row, which
    takes K times its memory; slicing keeps that bounded whatever the chunk.
    """
    if len(x) <= SLICE_ROWS:
        return np.asarray(fn(x), dtype=np.float64) if len(x) else np.empty(0)
    return np.concatenate(
        [
            np.asarray(fn(x[i : i + SLICE_ROWS]), dtype=np.float64)
            for i in range(0, len(x), SLICE_ROWS)
        ]
    )


def _split_bounds(bounds: Any) -> tuple[Any, Any]:
    """Accept ``(low, high)`` or an n x 2 array: the interval's shape is the other issue's."""
    if isinstance(bounds, tuple | list) and len(bounds) == 2:
        return bounds[0], bounds[1]
    array = np.asarray(bounds, dtype=np.float64)
    return array[:, 0], array[:, 1]
