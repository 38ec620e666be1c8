"""What "the same probabilities" means across scoring paths, in one place."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: A few units in the last place of a probability: BLAS groups a row's sums differently
#: for different batch sizes (and the one-row path adds in yet another order).
TOLERANCE = 1e-15


def assert_same_probabilities(got: npt.ArrayLike, expected: npt.ArrayLike) -> None:
    got_a, expected_a = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got_a.shape == expected_a.shape
    assert np.array_equal(np.isnan(got_a), np.isnan(expected_a))
    np.testing.assert_allclose(got_a, expected_a, rtol=0, atol=TOLERANCE)


#: The interval: /predict's one-row pass (``Predictor.risk_one``) and the batch path
#: (``RiskEnsemble.interval``) reach the band's ends by different arithmetic (C-level sums
#: against NumPy's, ``atanh`` against ``log``); measured at most 1.6e-11 apart over 3,000
#: synthetic rows with and without gaps (the default artifact), so 1e-10 is "the same".
INTERVAL_TOLERANCE = 1e-10


def assert_same_intervals(got: npt.ArrayLike, expected: npt.ArrayLike) -> None:
    got_a, expected_a = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got_a.shape == expected_a.shape
    assert np.array_equal(np.isnan(got_a), np.isnan(expected_a))
    np.testing.assert_allclose(got_a, expected_a, rtol=0, atol=INTERVAL_TOLERANCE)
