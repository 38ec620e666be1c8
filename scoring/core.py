"""Scoring a validated chunk: probability, class, and the interval when the model has one.

NumPy only, shared by ``heart-score``, :func:`scoring.frame.score_frame` and
the service's columnar batch, so every path computes the same numbers from
the same calls (``Predictor.probability`` on the valid rows of the chunk, and
:func:`risk_interval`, which ``/predict/batch`` uses too).
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

PROBABILITY = "probability"
PREDICTION = "prediction"
LOW = "probability_low"
HIGH = "probability_high"
#: Rows per call of the predictor (see ``_in_slices``).
SLICE_ROWS = 16_384


def risk_interval(predictor: Predictor, x: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """Lower and upper ends of the model's risk interval for each row of ``x``, or ``None``
    when the artifact has no ensemble.

    The one batch path to the interval: ``RiskEnsemble.interval``, which
    ``/predict/batch`` and every bulk output call through here, and which
    ``/predict`` (``Predictor.risk_one``) equals up to summation order. One call
    for the whole chunk: ``interval`` works in blocks of rows, evaluates a complete
    row once and a row with gaps over its pattern's distinct fillings in bounded
    parts, so its memory does not grow with the chunk or the gaps.
    """
    ensemble = predictor.ensemble
    if ensemble is None:
        return None
    if not len(x):
        return np.empty(0), np.empty(0)
    return _as_floats(ensemble.interval(x))


def _as_floats(bounds: tuple[Any, Any]) -> tuple[FloatArray, FloatArray]:
    return np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)


def output_columns(predictor: Predictor) -> list[str]:
    """The score columns, in output order (keys go before them): the interval's two
    columns only when the artifact has the ensemble that gives one."""
    names = [PROBABILITY, PREDICTION]
    if predictor.ensemble is not None:
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
    interval = risk_interval(predictor, x)
    low, high = interval if interval is not None else (None, None)
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
