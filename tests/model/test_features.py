"""One definition of the 13 features, and proof that its users agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from model.features import (
    FEATURE_NAMES,
    FEATURES,
    N_FEATURES,
    all_in_domain,
    example_patient,
    invalid_cells,
    markdown_table,
    outside_domain,
)
from tests._tools import REPO_ROOT
from training.data import load_dataset

ISSUE_NAMES = (
    "age",
    "sex",
    "chest_pain_type",
    "resting_blood_pressure",
    "serum_cholesterol",
    "fasting_blood_sugar",
    "resting_ecg",
    "max_heart_rate",
    "exercise_induced_angina",
    "st_depression",
    "st_slope",
    "num_major_vessels",
    "thal",
)


def test_names_and_order_are_the_datasets() -> None:
    assert FEATURE_NAMES == ISSUE_NAMES and N_FEATURES == 13


def test_every_feature_is_fully_described() -> None:
    for f in FEATURES:
        assert f.description.endswith(".") and f.kind in (
            "continuous",
            "binary",
            "ordinal",
            "nominal",
        )
        assert f.minimum < f.maximum
        assert f.check(f.example) is None, f.name
        if f.kind == "continuous":
            assert not f.codes and f.unit
        else:
            assert f.codes and min(f.codes) == f.minimum and max(f.codes) == f.maximum
    assert FEATURES[1].allowed_values == (0, 1)
    assert FEATURES[12].allowed_values == (3, 6, 7)


def test_the_data_lies_inside_the_declared_domains() -> None:
    x, _ = load_dataset()
    assert invalid_cells(x) == []
    for j, f in enumerate(FEATURES):
        if f.codes:
            assert set(np.unique(x[:, j]).astype(int)) <= set(f.codes), f.name


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        (0, 150.0, "between 18 and 110"),
        (2, 2.5, "one of 1"),
        (12, 4.0, "one of 3"),
        (9, float("nan"), "finite"),
        (7, float("inf"), "finite"),
        (3, 59.9, "between 60"),
    ],
)
def test_invalid_cells_names_each_problem(column: int, value: float, reason: str) -> None:
    x = np.tile(np.array(list(example_patient().values())), (3, 1))
    x[1, column] = value
    problems = invalid_cells(x)
    assert [(r, c) for r, c, _ in problems] == [(1, column)]
    assert reason in problems[0][2]


def test_fast_domain_check_agrees_with_the_detailed_one() -> None:
    rng = np.random.default_rng(0)
    base = np.tile(np.array(list(example_patient().values())), (200, 1))
    assert all_in_domain(base) and invalid_cells(base) == []
    # One corrupted cell per matrix, of every kind: range, NaN, inf, non-integer code, gap code.
    candidates = [-1.0, 0.5, 2.5, 4.0, 5.0, 8.0, 1e6, float("nan"), float("inf"), 59.9, 700.5]
    for _ in range(300):
        x = base.copy()
        x[rng.integers(200), rng.integers(13)] = rng.choice(candidates)
        assert all_in_domain(x) == (invalid_cells(x) == []), x[~np.all(x == base, axis=1)]


def test_vectorised_rule_is_the_per_value_rule() -> None:
    """outside_domain (batch fast path, data loading) refuses exactly what Feature.check does."""
    candidates = [-1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 18.0]
    candidates += [59.9, 110.0, 110.5, 700.5, 1e6, float("nan"), float("inf"), -float("inf")]
    x = np.array([[value] * N_FEATURES for value in candidates])
    expected = np.array([[f.check(value) is not None for f in FEATURES] for value in candidates])
    np.testing.assert_array_equal(outside_domain(x), expected)
    assert expected.any() and not expected.all()  # the candidates exercise both answers


def test_docs_tables_are_generated_from_the_definition() -> None:
    table = markdown_table()
    for doc in (REPO_ROOT / "data" / "README.md", REPO_ROOT / "docs" / "api.md"):
        assert table in doc.read_text(), f"{doc} has a stale feature table; regenerate it"
