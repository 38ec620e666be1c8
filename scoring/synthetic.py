"""Made-up registries for tests, benchmarks and the runnable examples in the docs.

Values are drawn inside each feature's allowed domain (``model/features.py``),
so a generated row is valid unless asked to be broken: nothing here is
patient data, and nothing about it is realistic beyond the domains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.features import FEATURES

KEY = "patient_id"
#: Gaps as the sites have them, feature sets missing together: the thallium scan; slope,
#: fluoroscopy and scan (Hungarian, Swiss); cholesterol (Swiss). A registry has few patterns.
GAP_PATTERNS: tuple[tuple[str, ...], ...] = (
    ("thal",),
    ("st_slope", "num_major_vessels", "thal"),
    ("serum_cholesterol",),
)


def registry(
    n: int, *, seed: int = 0, missing: float = 0.0, gaps: float = 0.0, start: int = 0
) -> pd.DataFrame:
    """``n`` rows: a ``patient_id`` key, then the 13 features (NaN where "not measured").

    ``missing`` is the chance that a feature which may be missing is missing,
    cell by cell (hundreds of patterns); ``gaps`` the chance that a row lacks
    one of :data:`GAP_PATTERNS` (three patterns, as real registries have).
    ``start`` offsets the ids and the random stream, so chunks of a large file
    can be generated one at a time with flat memory.
    """
    rng = np.random.default_rng([seed, start])
    columns: dict[str, object] = {KEY: np.arange(start, start + n, dtype=np.int64)}
    for f in FEATURES:
        if f.codes:
            values = rng.choice(np.array(f.allowed_values, dtype=np.float64), size=n)
        else:
            values = np.round(rng.uniform(f.minimum, f.maximum, size=n), 1)
        if missing and f.may_be_missing:
            values[rng.random(n) < missing] = np.nan
        columns[f.name] = values
    if gaps:
        kind = np.where(rng.random(n) < gaps, rng.integers(0, len(GAP_PATTERNS), n), -1)
        for k, names in enumerate(GAP_PATTERNS):
            for name in names:
                columns[name][kind == k] = np.nan  # type: ignore[index]
    return pd.DataFrame(columns)
