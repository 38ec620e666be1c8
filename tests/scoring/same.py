"""What "the same probabilities" means across scoring paths, in one place."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from model.features import FEATURE_NAMES, FEATURES

ARROW = "application/vnd.apache.arrow.stream"
CODED = {f.name for f in FEATURES if f.codes}


def as_json(row: pd.Series) -> dict[str, Any]:
    """A patient as the JSON API wants it: coded features as integers, null where missing."""
    return {
        k: None if pd.isna(row[k]) else int(row[k]) if k in CODED else float(row[k])
        for k in FEATURE_NAMES
    }


#: A few units in the last place of a probability: BLAS groups a row's sums differently
#: for different batch sizes (and the one-row path adds in yet another order).
TOLERANCE = 1e-15


def _assert_close(got: npt.ArrayLike, expected: npt.ArrayLike, tolerance: float) -> None:
    got_a, expected_a = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got_a.shape == expected_a.shape
    assert np.array_equal(np.isnan(got_a), np.isnan(expected_a))
    np.testing.assert_allclose(got_a, expected_a, rtol=0, atol=tolerance)


def assert_same_probabilities(got: npt.ArrayLike, expected: npt.ArrayLike) -> None:
    _assert_close(got, expected, TOLERANCE)


#: The interval: /predict's one-row pass (``Predictor.risk_one``) and the batch path
#: (``RiskEnsemble.interval``) reach the band's ends by different arithmetic (C-level sums
#: against NumPy's, ``atanh`` against ``log``); measured at most 1.6e-11 apart over 3,000
#: synthetic rows with and without gaps (the default artifact), so 1e-10 is "the same".
INTERVAL_TOLERANCE = 1e-10


def assert_same_intervals(got: npt.ArrayLike, expected: npt.ArrayLike) -> None:
    _assert_close(got, expected, INTERVAL_TOLERANCE)
