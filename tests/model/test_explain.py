"""Exact Shapley values: efficiency, missing features, and agreement with the shap library."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.artifact import load_artifact
from model.explain import explain
from model.features import FEATURE_NAMES, MAY_BE_MISSING, as_row, example_patient
from model.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor(artifact_path: Path) -> Predictor:
    return load_artifact(artifact_path)


def _patients(heart_data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return heart_data[0][:5]


def test_contributions_sum_to_the_served_probability_minus_the_base(
    predictor: Predictor, heart_data: tuple[np.ndarray, np.ndarray]
) -> None:
    for row in _patients(heart_data):
        e = explain(predictor, row)
        served = predictor.probability_one(row)
        assert e.probability == pytest.approx(served, abs=1e-6)
        assert e.contributions.sum() == pytest.approx(served - e.base_value, abs=1e-6)
        assert not e.missing.any()


def test_base_value_is_the_served_answer_with_every_feature_from_the_background(
    predictor: Predictor,
) -> None:
    raw = dataclasses.replace(predictor, calibration_intercept=0.0, calibration_slope=1.0)
    bg = np.asarray(predictor.background)
    e = explain(raw, as_row(example_patient()))
    assert e.base_value == pytest.approx(float(raw.probability(bg).mean()), abs=1e-6)


def test_missing_features_contribute_exactly_zero_and_the_rest_still_sums(
    predictor: Predictor,
) -> None:
    row = np.array(as_row(example_patient()))
    gaps = np.array(
        [FEATURE_NAMES.index(n) for n in ("serum_cholesterol", "num_major_vessels", "thal")]
    )
    assert MAY_BE_MISSING[gaps].all()
    row[gaps] = np.nan
    e = explain(predictor, row)
    assert np.all(e.contributions[gaps] == 0.0)
    assert e.missing[gaps].all() and e.missing.sum() == 3
    assert np.count_nonzero(e.contributions) == 10
    served = predictor.probability_one(row)
    assert e.probability == pytest.approx(served, abs=1e-6)
    assert e.contributions.sum() == pytest.approx(served - e.base_value, abs=1e-6)


def test_ranked_is_by_decreasing_magnitude_and_names_every_feature(
    predictor: Predictor,
) -> None:
    ranked = explain(predictor, as_row(example_patient())).ranked()
    assert sorted(name for name, _ in ranked) == sorted(FEATURE_NAMES)
    magnitudes = [abs(v) for _, v in ranked]
    assert magnitudes == sorted(magnitudes, reverse=True)


@pytest.mark.parametrize(("intercept", "slope"), [(0.0, 1.0), (0.4, 0.7)])
def test_matches_the_shap_librarys_exact_explainer(
    predictor: Predictor,
    heart_data: tuple[np.ndarray, np.ndarray],
    intercept: float,
    slope: float,
) -> None:
    """Same network, same background, recalibration as shap's link (applied after the mean)."""
    shap = pytest.importorskip("shap")
    model = dataclasses.replace(predictor, calibration_intercept=intercept, calibration_slope=slope)
    raw = dataclasses.replace(predictor, calibration_intercept=0.0, calibration_slope=1.0)
    bg = np.asarray(predictor.background)

    # shap calls the link inside numba-compiled code, so it must be compiled too.
    numba = pytest.importorskip("numba")
    a, b = intercept, slope

    @numba.njit  # type: ignore[untyped-decorator]
    def link(p: float) -> float:
        q = min(max(p, 1e-15), 1.0 - 1e-15)
        return 1.0 / (1.0 + math.exp(-(a + b * (math.log(q) - math.log1p(-q)))))

    link.inverse = link  # shap requires the attribute; the exact explainer never calls it
    masker = shap.maskers.Independent(bg, max_samples=bg.shape[0])
    explainer = shap.explainers.Exact(raw.probability, masker, link=link, linearize_link=False)
    rows = _patients(heart_data)[:3]
    reference = explainer(rows)
    for i, row in enumerate(rows):
        ours = explain(model, row)
        np.testing.assert_allclose(ours.contributions, reference.values[i], rtol=0, atol=1e-6)
        assert ours.base_value == pytest.approx(float(reference.base_values[i]), abs=1e-6)


def test_the_service_never_imports_shap(artifact_path: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from app import Settings, create_app\n"
        "from model.features import example_patient\n"
        f"app = create_app(Settings(model_path={str(artifact_path)!r}))\n"
        "with TestClient(app) as c:\n"
        "    r = c.post('/predict/explain', json=example_patient())\n"
        "    assert r.status_code == 200, r.text\n"
        "print('shap' in sys.modules, 'model.explain' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]
