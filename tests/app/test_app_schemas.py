"""The request schema is derived from model.features, and both endpoints judge input alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app import Settings, create_app
from app.schemas import PATIENT_EXAMPLE, BatchRequest, PatientFeatures, batch_request_model
from app.service import InvalidBodyError, validate_slowly
from model.features import FEATURE_NAMES, FEATURES, Feature


def test_fields_are_the_features_in_order() -> None:
    assert tuple(PatientFeatures.model_fields) == FEATURE_NAMES
    schema = PatientFeatures.model_json_schema()
    assert schema["required"] == list(FEATURE_NAMES)
    assert schema["additionalProperties"] is False
    assert schema["examples"] == [PATIENT_EXAMPLE]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_each_field_documents_its_feature(feature: Feature) -> None:
    schema = PatientFeatures.model_json_schema()
    prop = schema["properties"][feature.name]
    assert prop["description"].startswith(feature.description)
    assert prop["examples"] == [feature.example]
    if feature.codes:
        # Coded features are named schemas (issue 12): ChestPainType, Thal, ...
        name = "".join(part.capitalize() for part in feature.name.split("_"))
        definition = schema["$defs"][name]
        assert definition["x-kind"] == feature.kind
    else:
        assert prop["x-kind"] == feature.kind
    # A feature that may be missing is "value or null" (issue 9): the value's type and
    # bounds (for a coded feature, the reference to its named schema) are in its non-null
    # branch, the documentation on the property.
    value = prop
    if feature.may_be_missing:
        value, null = prop["anyOf"]
        assert null == {"type": "null"} and "Null if not measured" in prop["description"]
    else:
        assert "anyOf" not in prop and "may not be null" in prop["description"]
    if feature.codes:
        assert value["$ref"] == f"#/$defs/{name}"
        value = definition
        assert value["type"] == "integer"
        assert value["enum"] == sorted(feature.codes)
        assert value["x-codes"] == {str(k): v for k, v in sorted(feature.codes.items())}
        names = value["x-enum-varnames"]
        assert len(names) == len(set(names)) == len(feature.codes)
        assert all(n.isidentifier() and n.isupper() for n in names)
        for meaning in feature.codes.values():
            assert meaning in prop["description"]
    else:
        assert value["type"] == "number"
        assert (value["minimum"], value["maximum"]) == (feature.minimum, feature.maximum)
        assert prop.get("x-unit") == feature.unit
        if feature.unit:
            assert feature.unit in prop["description"]


def test_example_patient_is_valid() -> None:
    assert PatientFeatures.model_validate(PATIENT_EXAMPLE).model_dump() == PATIENT_EXAMPLE


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-20, 800))
@settings(max_examples=60, deadline=None)
def test_schema_accepts_exactly_what_the_feature_definition_accepts(
    feature: Feature, value: float
) -> None:
    """The API refuses a value iff model.features says it is out of domain.

    Coded features additionally require an integer: a JSON integer, or a float
    with no fractional part (1.0 is an integer to JSON Schema); 1.5 is a type
    error, which the feature definition, working on floats, cannot see.
    """
    value_ok_for_type = not (feature.codes and isinstance(value, float) and not value.is_integer())
    body = json.dumps({**PATIENT_EXAMPLE, feature.name: value}).encode()
    try:
        parse_patient(body)
        accepted = True
    except InvalidBodyError as exc:
        accepted = False
        assert [e["loc"] for e in exc.errors] == [("body", feature.name)]
    assert accepted == (value_ok_for_type and feature.check(float(value)) is None)


def parse_patient(body: bytes) -> Any:
    """What /predict does with a body: the fast validation, then the slow path."""
    try:
        return PatientFeatures.model_validate_json(body)
    except ValidationError as exc:
        return validate_slowly(PatientFeatures, body, exc)


def test_batch_limit_is_configurable_and_cached() -> None:
    assert batch_request_model(1000) is BatchRequest
    small = batch_request_model(2)
    assert small is batch_request_model(2)
    assert small.model_json_schema()["properties"]["patients"]["maxItems"] == 2
    with pytest.raises(ValidationError, match="at most 2"):
        small.model_validate({"patients": [PATIENT_EXAMPLE] * 3})


# ----- one judgement for single and batch -------------------------------------------------
#
# /predict validates a PatientFeatures and /predict/batch a BatchRequest holding
# them, both from the raw JSON bytes. Generated bodies must get the same errors
# from both, apart from the location prefix.

JSON_VALUES = st.one_of(
    st.integers(-10, 1000),
    st.floats(-10, 1000, allow_nan=False),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = dict(PATIENT_EXAMPLE)
    for name in draw(st.lists(st.sampled_from(FEATURE_NAMES), max_size=4, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(JSON_VALUES)
        else:
            del body[name]
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=5))] = draw(JSON_VALUES)
    return body


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=artifact_path, access_log=False))) as c:
        yield c


@given(body=patients())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_single_and_batch_report_the_same_errors(client: TestClient, body: dict[str, Any]) -> None:
    text = json.dumps(body)
    single = client.post("/predict", content=text, headers={"content-type": "application/json"})
    batch = client.post(
        "/predict/batch",
        content='{"patients": [' + text + "]}",
        headers={"content-type": "application/json"},
    )
    assert single.status_code == batch.status_code
    if single.status_code == 200:
        assert batch.json()["predictions"][0]["prediction"] == single.json()["prediction"]
        return
    assert single.status_code == 422

    def normalised(errors: list[dict[str, Any]], prefix: int) -> list[tuple[Any, ...]]:
        return sorted(
            (e["type"], tuple(e["loc"][prefix:]), e["msg"], json.dumps(e["input"], sort_keys=True))
            for e in errors
        )

    single_errors = single.json()["detail"]
    batch_errors = batch.json()["detail"]
    assert normalised(single_errors, 1) == normalised(batch_errors, 3)
    assert all(e["loc"][:3] == ["body", "patients", 0] for e in batch_errors)
