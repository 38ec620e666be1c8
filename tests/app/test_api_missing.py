"""Every way a value can be missing, through the API: null, omitted, null where it may not be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import Settings, create_app
from app.schemas import PATIENT_EXAMPLE, BatchPrediction, ModelCard, Prediction
from model.artifact import load_artifact
from model.features import FEATURE_NAMES, FEATURES, REQUIRED_FEATURES

MAY_BE_NULL = [f.name for f in FEATURES if f.may_be_missing]


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=artifact_path))) as c:
        yield c


def patient(**changes: Any) -> dict[str, Any]:
    return {**PATIENT_EXAMPLE, **changes}


def row(body: dict[str, Any]) -> list[float]:
    return [np.nan if body[n] is None else float(body[n]) for n in FEATURE_NAMES]


def test_decision_matches_the_data() -> None:
    assert set(REQUIRED_FEATURES) == {"age", "sex", "chest_pain_type"}
    assert len(MAY_BE_NULL) == 10


def test_complete_record_says_nothing_is_missing(client: TestClient) -> None:
    result = Prediction.model_validate_json(client.post("/predict", json=PATIENT_EXAMPLE).content)
    assert result.missing_features == []


@pytest.mark.parametrize(
    "gaps", [["num_major_vessels"], ["num_major_vessels", "thal"], MAY_BE_NULL]
)
def test_null_is_marginalised_and_reported(
    client: TestClient, artifact_path: Path, gaps: list[str]
) -> None:
    body = patient(**dict.fromkeys(gaps))
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    result = Prediction.model_validate_json(response.content)
    assert result.missing_features == [n for n in FEATURE_NAMES if n in gaps]
    predictor = load_artifact(artifact_path)
    assert result.probability == pytest.approx(predictor.probability(row(body))[0], rel=1e-12)
    complete = predictor.probability(row(PATIENT_EXAMPLE))[0]
    assert result.probability != complete  # the gap changed the answer: it was not filled in


def test_batch_mixes_complete_and_incomplete_rows(client: TestClient, artifact_path: Path) -> None:
    bodies = [PATIENT_EXAMPLE, patient(thal=None, num_major_vessels=None), patient(st_slope=None)]
    response = client.post("/predict/batch", json={"patients": bodies})
    assert response.status_code == 200, response.text
    predictions = BatchPrediction.model_validate_json(response.content).predictions
    assert [p.missing_features for p in predictions] == [
        [],
        ["num_major_vessels", "thal"],
        ["st_slope"],
    ]
    expected = load_artifact(artifact_path).probability(np.array([row(b) for b in bodies]))
    np.testing.assert_allclose([p.probability for p in predictions], expected, rtol=1e-12)
    one = Prediction.model_validate_json(client.post("/predict", json=bodies[1]).content)
    assert one.probability == pytest.approx(predictions[1].probability, rel=1e-12)


@pytest.mark.parametrize("name", ["age", "sex", "chest_pain_type"])
def test_null_for_a_required_feature_is_a_422_naming_it(client: TestClient, name: str) -> None:
    for path, body, loc in (
        ("/predict", patient(**{name: None}), ["body", name]),
        ("/predict/batch", {"patients": [PATIENT_EXAMPLE, patient(**{name: None})]},
         ["body", "patients", 1, name]),
    ):  # fmt: skip
        response = client.post(path, json=body)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == loc and f"{name} may not be null" in error["msg"]


@pytest.mark.parametrize("name", ["age", "thal"])
def test_an_omitted_field_is_a_422_saying_how_to_send_missing(
    client: TestClient, name: str
) -> None:
    body = {k: v for k, v in PATIENT_EXAMPLE.items() if k != name}
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "missing" and error["loc"] == ["body", name]
    if name == "thal":
        assert error["msg"] == "Field required; send null if it was not measured"
    else:
        assert error["msg"] == "Field required; it may not be null"


#: How exports write "not measured": the UCI files' "?", and what spreadsheets and R write.
EXPORT_MARKERS = ["?", "NA", "N/A", "nan", "-", "", " "]


def _refusal(client: TestClient, name: str, value: Any) -> list[tuple[list[Any], str, str]]:
    """(loc, type, msg) of the 422s of /predict and /predict/batch for ``name`` = ``value``."""
    found = []
    for path, body in (
        ("/predict", patient(**{name: value})),
        ("/predict/batch", {"patients": [PATIENT_EXAMPLE, patient(**{name: value})]}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        found.append((error["loc"], error["type"], error["msg"]))
    return found


@pytest.mark.parametrize("marker", EXPORT_MARKERS)
@pytest.mark.parametrize(
    ("name", "kind", "msg"),
    [
        ("thal", "int_type", "Input should be a valid integer"),
        ("serum_cholesterol", "float_type", "Input should be a valid number"),
    ],
)
def test_an_export_marker_where_null_is_allowed_says_to_send_null(
    client: TestClient, marker: str, name: str, kind: str, msg: str
) -> None:
    """A hospital's "?" for a thallium scan not done was "Input should be a valid integer",
    with no word of null. The 422's shape and place are Pydantic's; only the hint is added."""
    assert _refusal(client, name, marker) == [
        (["body", name], kind, f"{msg}; send null if it was not measured"),
        (["body", "patients", 1, name], kind, f"{msg}; send null if it was not measured"),
    ]


@pytest.mark.parametrize("marker", ["?", "NA", ""])
@pytest.mark.parametrize(
    ("name", "msg"),
    [
        ("age", "Input should be a valid number"),
        ("sex", "Input should be a valid integer"),
        ("chest_pain_type", "Input should be a valid integer"),
    ],
)
def test_an_export_marker_where_the_feature_is_required_says_so_not_null(
    client: TestClient, marker: str, name: str, msg: str
) -> None:
    """Null is refused for these (model/features.py): the hint must not invite it."""
    for _, _, found in _refusal(client, name, marker):
        assert found == f"{msg}; it is required and may not be missing"
        assert "null" not in found


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("age", "54"),
        ("thal", "3"),
        ("thal", True),
        ("st_depression", "1,5"),
        ("resting_blood_pressure", "130 mmHg"),
        ("thal", "1" * 16_000 + "x"),  # long text is not looked at (nor a marker)
        ("thal", "not measured, see the note"),
    ],
)
def test_a_quoted_number_or_a_boolean_gets_no_null_hint(
    client: TestClient, name: str, value: Any
) -> None:
    """ "54" is a number sent as a string, a mistake of another kind: it keeps Pydantic's
    message (docs/api.md shows it), with no word of null or of being required; so does
    text holding a measurement in another form, or too long to be a marker."""
    for _, _, found in _refusal(client, name, value):
        assert found in ("Input should be a valid number", "Input should be a valid integer")


@pytest.mark.parametrize("name", ["serum_cholesterol", "resting_blood_pressure"])
def test_zero_cholesterol_or_pressure_is_refused_with_the_null_hint(
    client: TestClient, name: str
) -> None:
    response = client.post("/predict", json=patient(**{name: 0}))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", name]
    assert "0 is not a measurement: send null if it was not measured" in error["msg"]


def test_st_elevation_is_accepted(client: TestClient) -> None:
    assert client.post("/predict", json=patient(st_depression=-2.6)).status_code == 200
    assert client.post("/predict", json=patient(st_depression=-6)).status_code == 422


def test_model_card_exposes_missing_values_and_calibration_per_site(client: TestClient) -> None:
    card = ModelCard.model_validate_json(client.get("/model").content)
    assert [f.name for f in card.features if f.may_be_missing] == MAY_BE_NULL
    assert card.sites is not None
    by_site = card.sites["calibration_by_validation_site"]
    assert set(by_site) == {"cleveland", "hungarian", "switzerland"}
    for site, figures in by_site.items():
        assert site not in figures["trained_on"]
        assert {"calibration_intercept", "calibration_slope", "mean_predicted", "observed"} <= set(
            figures
        )
    assert card.recalibration is None


def test_drift_ignores_missing_values(artifact_path: Path) -> None:
    """A null says nothing about drift, and a feature is published only once a window
    holds k *measured* values of it (issue 11's privacy rule, per feature)."""
    k = 10
    settings = Settings(model_path=artifact_path, drift_min_patients=k)
    one_scan = [patient(thal=None, serum_cholesterol=None)] * (k - 1) + [patient(thal=6)]
    with TestClient(create_app(settings)) as fresh:
        assert fresh.post("/predict/batch", json={"patients": one_scan}).status_code == 200
        text = fresh.get("/metrics", headers={"accept": "text/plain"}).text
        # k patients, but one thallium result and one cholesterol: neither may be published.
        assert 'heart_drift_feature_values_total{feature="age"} 10.0' in text
        assert 'heart_drift_feature_values_total{feature="thal"} 0.0' in text
        assert 'heart_feature_drift{feature="thal"}' not in text
        assert 'heart_feature_drift{feature="serum_cholesterol"}' not in text
        scans = [patient(thal=7, serum_cholesterol=None)] * k
        assert fresh.post("/predict/batch", json={"patients": scans}).status_code == 200
        drift = {d["feature"]: d for d in fresh.get("/metrics").json()["serving"]["drift"]}
        text = fresh.get("/metrics", headers={"accept": "text/plain"}).text
    assert drift["age"]["served_mean"] == pytest.approx(PATIENT_EXAMPLE["age"])
    # The 9 nulls are left out: 11 measured values, one 6 and ten 7s.
    assert drift["thal"]["served_mean"] == pytest.approx((6 + 7 * k) / (k + 1))
    assert drift["serum_cholesterol"]["served_mean"] is None  # one value: not published
    assert 'heart_drift_feature_values_total{feature="thal"} 11.0' in text
    assert 'heart_drift_feature_values_total{feature="serum_cholesterol"} 0.0' in text
    assert "NaN" not in text
