"""The single definition of the 13 Statlog (Heart) features.

Everything that needs to know about a feature reads it from here: the data
loader (column order and range checks), training (names in the artifact), the
service's Pydantic schemas (descriptions, units, bounds, examples) and the
docs. Keeping it in one place is what lets a test prove they all agree.

The order is the column order of ``data/heart.dat``. The bounds of the
continuous features are *plausible physiological* limits, deliberately wider
than what the 270 patients show, so that a real patient is never refused while
a typo (a cholesterol of 2400, an age of 650) is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray

FeatureKind = Literal["continuous", "binary", "ordinal", "nominal"]


@dataclass(frozen=True)
class Feature:
    """One input column: what it means, its unit, and which values are acceptable."""

    name: str
    description: str
    unit: str | None
    kind: FeatureKind
    minimum: float
    maximum: float
    example: float
    #: For coded features, the allowed codes and what each one means.
    codes: Mapping[int, str] = field(default_factory=dict)

    @property
    def is_coded(self) -> bool:
        """Binary, ordinal and nominal features only take the listed integer codes."""
        return bool(self.codes)

    @property
    def has_gaps(self) -> bool:
        """Coded with gaps (thal: 3, 6, 7): a range check alone would let 4 and 5 through."""
        return bool(self.codes) and len(self.codes) != self.maximum - self.minimum + 1

    @property
    def allowed_values(self) -> tuple[int, ...] | None:
        return tuple(sorted(self.codes)) if self.codes else None

    def describe_domain(self) -> str:
        """Human-readable statement of the acceptable values, used in docs and errors."""
        if self.codes:
            return "one of " + ", ".join(f"{k} ({v})" for k, v in sorted(self.codes.items()))
        unit = f" {self.unit}" if self.unit else ""
        return f"between {self.minimum:g} and {self.maximum:g}{unit}"

    def check(self, value: float) -> str | None:
        """Return why ``value`` is unacceptable, or ``None`` if it is fine."""
        if not np.isfinite(value):
            return "must be a finite number"
        if self.codes:
            if value != int(value) or int(value) not in self.codes:
                return f"must be {self.describe_domain()}"
        elif not (self.minimum <= value <= self.maximum):
            return f"must be {self.describe_domain()}"
        return None


FEATURES: Final[tuple[Feature, ...]] = (
    Feature(
        "age",
        "Age of the patient.",
        "years",
        "continuous",
        18,
        110,
        54,
    ),
    Feature(
        "sex",
        "Sex of the patient.",
        None,
        "binary",
        0,
        1,
        1,
        codes={0: "female", 1: "male"},
    ),
    Feature(
        "chest_pain_type",
        "Type of chest pain experienced.",
        None,
        "nominal",
        1,
        4,
        4,
        codes={
            1: "typical angina",
            2: "atypical angina",
            3: "non-anginal pain",
            4: "asymptomatic",
        },
    ),
    Feature(
        "resting_blood_pressure",
        "Resting systolic blood pressure on admission.",
        "mm Hg",
        "continuous",
        60,
        260,
        130,
    ),
    Feature(
        "serum_cholesterol",
        "Serum cholesterol.",
        "mg/dl",
        "continuous",
        80,
        700,
        245,
    ),
    Feature(
        "fasting_blood_sugar",
        "Whether fasting blood sugar exceeds 120 mg/dl.",
        None,
        "binary",
        0,
        1,
        0,
        codes={0: "120 mg/dl or lower", 1: "above 120 mg/dl"},
    ),
    Feature(
        "resting_ecg",
        "Resting electrocardiographic result.",
        None,
        "nominal",
        0,
        2,
        2,
        codes={
            0: "normal",
            1: "ST-T wave abnormality",
            2: "probable or definite left ventricular hypertrophy",
        },
    ),
    Feature(
        "max_heart_rate",
        "Maximum heart rate achieved during the exercise test.",
        "beats per minute",
        "continuous",
        50,
        250,
        150,
    ),
    Feature(
        "exercise_induced_angina",
        "Whether the exercise test induced angina.",
        None,
        "binary",
        0,
        1,
        0,
        codes={0: "no", 1: "yes"},
    ),
    Feature(
        "st_depression",
        "ST depression induced by exercise relative to rest (oldpeak).",
        "mm",
        "continuous",
        0,
        10,
        0.8,
    ),
    Feature(
        "st_slope",
        "Slope of the peak exercise ST segment.",
        None,
        "ordinal",
        1,
        3,
        2,
        codes={1: "upsloping", 2: "flat", 3: "downsloping"},
    ),
    Feature(
        "num_major_vessels",
        "Number of major vessels coloured by fluoroscopy.",
        "vessels",
        "ordinal",
        0,
        3,
        0,
        codes={0: "none", 1: "one", 2: "two", 3: "three"},
    ),
    Feature(
        "thal",
        "Thallium stress test result.",
        None,
        "nominal",
        3,
        7,
        3,
        codes={3: "normal", 6: "fixed defect", 7: "reversible defect"},
    ),
)

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
N_FEATURES: Final[int] = len(FEATURES)
FEATURE_BY_NAME: Final[Mapping[str, Feature]] = {f.name: f for f in FEATURES}

#: Target coding of the data file and what the model predicts.
TARGET_CODES: Final[Mapping[int, int]] = {1: 0, 2: 1}
CLASS_LABELS: Final[Mapping[int, str]] = {
    0: "absence of heart disease",
    1: "presence of heart disease",
}

#: Bounds as arrays, in feature order, so whole batches are checked in one pass.
MINIMUMS: Final[FloatArray] = np.array([f.minimum for f in FEATURES])
MAXIMUMS: Final[FloatArray] = np.array([f.maximum for f in FEATURES])


#: Which columns are coded (integers from a list), as a row mask over the features.
_CODED: Final[npt.NDArray[np.bool_]] = np.array([bool(f.codes) for f in FEATURES])
#: Coded features whose codes have gaps (thal: 3, 6, 7), which a range check cannot catch.
_GAPPED_CODES: Final[tuple[tuple[int, tuple[float, ...]], ...]] = tuple(
    (j, tuple(float(c) for c in sorted(f.codes))) for j, f in enumerate(FEATURES) if f.has_gaps
)


def outside_domain(x: FloatArray) -> npt.NDArray[np.bool_]:
    """Which cells of an n x 13 matrix :meth:`Feature.check` would refuse, all at once.

    The vectorised form of the one rule: inside ``[minimum, maximum]`` (NaN and
    infinities are not), and for coded features an integer among the codes
    (the range makes that a check for integrality, plus membership where the
    codes have gaps). The service's API schemas state the same rule per field
    (``app.schemas``, generated from :data:`FEATURES`); a test checks they agree.
    """
    with np.errstate(invalid="ignore"):
        bad = ~((x >= MINIMUMS) & (x <= MAXIMUMS))
    bad |= (x != np.floor(x)) & _CODED
    for j, allowed in _GAPPED_CODES:
        column = x[:, j]
        member = column == allowed[0]
        for code in allowed[1:]:  # a few comparisons beat np.isin's sort for 3 codes
            member |= column == code
        bad[:, j] |= ~member
    return bad


def all_in_domain(x: FloatArray) -> bool:
    """True when every cell of an n x 13 matrix is acceptable: the batch endpoint's fast path.

    The same rule as :func:`outside_domain` with no per-cell result: the common
    case (every value fine) answers without building a report.
    """
    return not bool(outside_domain(x).any())


def invalid_cells(x: FloatArray) -> list[tuple[int, int, str]]:
    """List every ``(row, column, reason)`` of a 2-D feature matrix that is out of domain.

    The per-cell explanation (from :meth:`Feature.check`) is only built for the
    rare offending cells. Used by the data loader, whose errors name the row,
    column and reason.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"expected a matrix with {N_FEATURES} columns, got shape {x.shape}")
    problems: list[tuple[int, int, str]] = []
    for i, j in zip(*np.nonzero(outside_domain(x)), strict=True):
        reason = FEATURES[j].check(float(x[i, j]))
        problems.append((int(i), int(j), reason or "is out of range"))
    return problems


def as_row(values: Mapping[str, float]) -> list[float]:
    """Order a name -> value mapping as the model expects its columns."""
    return [float(values[name]) for name in FEATURE_NAMES]


def example_patient() -> dict[str, float]:
    """The documented example patient, used in OpenAPI examples and the README."""
    return {f.name: f.example for f in FEATURES}


def markdown_table(features: Sequence[Feature] = FEATURES) -> str:
    """The feature table as it appears in the README and data/README.md."""
    lines = [
        "| # | name | meaning | unit | kind | allowed values |",
        "|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(features, start=1):
        lines.append(
            f"| {i} | `{f.name}` | {f.description} | {f.unit or '-'} | {f.kind} "
            f"| {f.describe_domain()} |"
        )
    return "\n".join(lines)
