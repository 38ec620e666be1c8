"""The single definition of the 13 Statlog (Heart) features.

Everything that needs to know about a feature reads it from here: the data
loader (column order and range checks), training (names in the artifact), the
service's Pydantic schemas (descriptions, units, bounds, examples) and the
docs. Keeping it in one place is what lets a test prove they all agree.

The order is the column order of ``data/heart.dat``. The bounds of the
continuous features are *plausible physiological* limits, deliberately wider
than what the 990 patients of the four sites show, so that a real patient is
never refused while a typo (a cholesterol of 2400, an age of 650) is.

Missing values. A feature *may be missing* (``missing_because``) exactly where
the UCI sites hold real records without it: ten of the thirteen. Age, sex and
chest-pain type are never missing in any site and are asked at every visit, so
they stay required. In the API a missing value is an explicit ``null``; an
omitted field is refused (422 "field required"), because a forgotten field and
a test not done are different things and only the client knows which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray

FeatureKind = Literal["continuous", "binary", "ordinal", "nominal"]

#: How a client says a value was not measured, quoted in every error about it.
NOT_MEASURED: Final[str] = "send null if it was not measured"


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
    #: Why the feature may be missing (``null``: not measured), or ``None`` if it may not be.
    #: Decided from the UCI sites: a feature may be missing where real records lack it.
    missing_because: str | None = None

    @property
    def may_be_missing(self) -> bool:
        """Real records exist without this value, so a prediction must cope without it."""
        return self.missing_because is not None

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

    def check(self, value: float, *, allow_missing: bool = False) -> str | None:
        """Return why ``value`` is unacceptable, or ``None`` if it is fine.

        NaN stands for "not measured": acceptable only with ``allow_missing``
        and only for a feature that may be missing.
        """
        if np.isnan(value) and allow_missing and self.may_be_missing:
            return None
        if not np.isfinite(value):
            if self.may_be_missing:
                return "must be a finite number (null if it was not measured)"
            return "must be a finite number: it is required and may not be missing"
        if self.codes:
            if value != int(value) or int(value) not in self.codes:
                return f"must be {self.describe_domain()}"
        elif not (self.minimum <= value <= self.maximum):
            if value == 0 and self.may_be_missing:
                # The UCI files write 0 for "not measured"; the API says that with null.
                return f"must be {self.describe_domain()} (0 is not a measurement: {NOT_MEASURED})"
            return f"must be {self.describe_domain()}"
        return None


def not_measured_hint(feature: Feature) -> str:
    """What a JSON client should send instead of text where ``feature``'s number belongs:
    null where the feature may be missing, else nothing (it is required).

    Why: exports write a test not done as ``?`` (the UCI files), ``NA``, ``-`` or ``N/A``,
    and a refusal that only says "not a valid number" leaves the client guessing how to
    say it. Decided by :attr:`Feature.may_be_missing` alone, so no answer invites a gap
    the model refuses. (Files say it with an empty cell: ``model.columns.cell_hint``.)
    """
    if feature.may_be_missing:
        return NOT_MEASURED
    return "it is required and may not be missing"


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
        missing_because="not recorded for 1 Hungarian and 2 Swiss patients",
    ),
    Feature(
        "serum_cholesterol",
        "Serum cholesterol.",
        "mg/dl",
        "continuous",
        80,
        700,
        245,
        missing_because="not measured in Switzerland (all 123 rows) and for 23 Hungarian patients",
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
        missing_because="not measured for 75 of 123 Swiss and 8 Hungarian patients",
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
        missing_because="not recorded for 1 Hungarian and 1 Swiss patient",
    ),
    Feature(
        "max_heart_rate",
        "Maximum heart rate achieved during the exercise test.",
        "beats per minute",
        "continuous",
        50,
        250,
        150,
        missing_because="no exercise test result for 1 Hungarian and 1 Swiss patient",
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
        missing_because="no exercise test result for 1 Hungarian and 1 Swiss patient",
    ),
    Feature(
        "st_depression",
        "ST depression induced by exercise relative to rest (oldpeak); negative is ST elevation.",
        "mm",
        "continuous",
        -5,
        10,
        0.8,
        missing_because="not recorded for 6 Swiss patients",
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
        missing_because="not recorded for 190 of 294 Hungarian and 17 Swiss patients",
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
        missing_because=(
            "fluoroscopy is expensive: missing for 291 of 294 Hungarian, 118 of 123 Swiss "
            "and 4 Cleveland patients"
        ),
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
        missing_because=(
            "the thallium scan is expensive: missing for 266 Hungarian, 52 Swiss "
            "and 2 Cleveland patients"
        ),
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
#: Which columns may be NaN ("not measured"), in feature order.
MAY_BE_MISSING: Final[npt.NDArray[np.bool_]] = np.array([f.may_be_missing for f in FEATURES])
#: The features every record must have (no real record in the four sites lacks them).
REQUIRED_FEATURES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES if not f.may_be_missing)
#: The two expensive tests that most records outside Cleveland lack (fluoroscopy for
#: ``num_major_vessels``, a thallium scan for ``thal``): what validation withholds to
#: show what a hospital that does neither test gets.
EXPENSIVE_TESTS: Final[tuple[str, ...]] = ("num_major_vessels", "thal")


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


def invalid_cells(x: FloatArray, *, allow_missing: bool = False) -> list[tuple[int, int, str]]:
    """List every ``(row, column, reason)`` of a 2-D feature matrix that is out of domain.

    The per-cell explanation (from :meth:`Feature.check`) is only built for the
    rare offending cells. Used by the data loaders, whose errors name the row,
    column and reason. With ``allow_missing`` NaN ("not measured") is accepted
    in the columns of features that may be missing, and only there.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"expected a matrix with {N_FEATURES} columns, got shape {x.shape}")
    bad = outside_domain(x)
    if allow_missing:
        bad &= ~(np.isnan(x) & MAY_BE_MISSING)
    problems: list[tuple[int, int, str]] = []
    for i, j in zip(*np.nonzero(bad), strict=True):
        reason = FEATURES[j].check(float(x[i, j]), allow_missing=allow_missing)
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
        "| # | name | meaning | unit | kind | allowed values | may be null (not measured) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(features, start=1):
        missing = f"yes: {f.missing_because}" if f.missing_because else "no"
        lines.append(
            f"| {i} | `{f.name}` | {f.description} | {f.unit or '-'} | {f.kind} "
            f"| {f.describe_domain()} | {missing} |"
        )
    return "\n".join(lines)
