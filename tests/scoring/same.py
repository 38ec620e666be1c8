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
