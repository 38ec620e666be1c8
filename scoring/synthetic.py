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


def registry(n: int, *, seed: int = 0, missing: float = 0.0, start: int = 0) -> pd.DataFrame:
    """``n`` rows: a ``patient_id`` key, then the 13 features (NaN where "not measured").

    ``missing`` is the chance that a feature which may be missing is missing.
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
    return pd.DataFrame(columns)
