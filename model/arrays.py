"""The array types every part of the project annotates with, defined once.

Feature matrices, probabilities and weights are float64 throughout (the
scaler, the network and the service never mix precisions); labels are int64.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
