"""The endpoints through FastAPI's test client, with a real trained artifact."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import Settings, create_app
from app.schemas import (
    MAX_EXPLAIN_BATCH,
    PATIENT_EXAMPLE,
    BatchPrediction,
    MetricsReport,
    ModelCard,
    Prediction,
)
from model.artifact import load_artifact
from model.features import CLASS_LABELS, FEATURE_NAMES, FEATURES
from tests._tools import run_ok

API_KEY = "test-key-0123456789abcdef"
JSON = {"content-type": "application/json"}


def make_client(artifact: Path, **settings: Any) -> TestClient:
    app = create_app(Settings(model_path=artifact, **settings))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Iterator[TestClient]:
    with make_client(artifact_path) as c:
        yield c


def patient(**changes: Any) -> dict[str, Any]:
    return {**PATIENT_EXAMPLE, **changes}


def error_locs(response: Any) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in response.json()["detail"]]


# ----- /predict ---------------------------------------------------------------------------


def test_predict_matches_the_predictor(client: TestClient, artifact_path: Path) -> None:
    response = client.post("/predict", json=PATIENT_EXAMPLE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result = Prediction.model_validate_json(response.content)
    predictor = load_artifact(artifact_path)
    expected = predictor.probability([PATIENT_EXAMPLE[n] for n in FEATURE_NAMES])[0]
    # /predict folds the first layer's bias into its one pass over every network
    # (Predictor.risk_one), so the two agree up to the order of the float sums.
    assert result.probability == pytest.approx(expected, rel=1e-12)
    assert result.prediction == int(expected >= predictor.threshold)
    assert result.label == CLASS_LABELS[result.prediction]
    assert result.threshold == predictor.threshold
    assert result.model_version == predictor.model_version


def test_predict_accepts_fields_in_any_order(client: TestClient) -> None:
    reordered = dict(reversed(list(PATIENT_EXAMPLE.items())))
    a = client.post("/predict", json=PATIENT_EXAMPLE).json()
    b = client.post("/predict", json=reordered).json()
    assert a == b


def test_predict_both_classes_are_reachable(client: TestClient) -> None:
    """Extreme but valid patients land on both sides of the threshold."""
    low = {f.name: (min(f.codes) if f.codes else f.minimum) for f in FEATURES}
    high = {f.name: (max(f.codes) if f.codes else f.maximum) for f in FEATURES}
    classes = {client.post("/predict", json=p).json()["prediction"] for p in (low, high)}
    assert classes == {0, 1}


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        (patient(age="54"), "age", "float_type"),
        (patient(age=True), "age", "float_type"),
        (patient(age=None), "age", "float_type"),
        (patient(age=[54]), "age", "float_type"),
        (patient(age=17), "age", "greater_than_equal"),
        (patient(age=111), "age", "less_than_equal"),
        (patient(serum_cholesterol=2400), "serum_cholesterol", "less_than_equal"),
        (patient(sex=2), "sex", "less_than_equal"),
        (patient(sex=1.5), "sex", "int_from_float"),
        (patient(sex="1"), "sex", "int_type"),
        (patient(sex=True), "sex", "int_type"),
        (patient(thal=4), "thal", "enum"),
        (patient(chest_pain_type=0), "chest_pain_type", "greater_than_equal"),
        (patient(unexpected=1), "unexpected", "extra_forbidden"),
    ],
)
def test_predict_refuses_bad_fields_naming_them(
    client: TestClient, body: dict[str, Any], field: str, error_type: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["type"] == error_type
    assert error["msg"]


def test_integral_floats_are_integers_for_coded_features(client: TestClient) -> None:
    """JSON Schema counts 1.0 as an integer, and json.dumps / pandas write it (issue 11)."""
    as_ints = client.post("/predict", json=patient())
    as_floats = client.post("/predict", json=patient(sex=1.0, thal=3.0, num_major_vessels=0.0))
    assert as_floats.status_code == 200
    assert as_floats.json() == as_ints.json()
    batch = client.post("/predict/batch", json={"patients": [patient(), patient(sex=1.0)]})
    assert batch.status_code == 200
    first, second = batch.json()["predictions"]
    assert second == first


def test_non_integral_float_still_names_the_field(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"patients": [patient(), patient(thal=6.5)]})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "patients", 1, "thal"]
    assert error["type"] == "int_from_float"
    assert "fractional part" in error["msg"]


def _with_leading(key: str, value: object, body: dict[str, Any]) -> bytes:
    """``body`` as JSON with ``key`` written once more, first (the first one loses)."""
    return b"{" + json.dumps({key: value})[1:-1].encode() + b", " + json.dumps(body)[1:].encode()


@pytest.mark.parametrize("key", ["age", "thal"])
def test_duplicate_keys_are_refused_naming_the_key(client: TestClient, key: str) -> None:
    """What a proxy or log sees (the first value) must be what the model used."""
    body = _with_leading(key, 500, patient())
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert [(e["type"], e["loc"]) for e in response.json()["detail"]] == [
        ("duplicate_key", ["body", key])
    ]


def test_duplicate_keys_are_refused_even_when_both_values_are_valid(client: TestClient) -> None:
    body = _with_leading("age", 60, patient())
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "duplicate_key"


BOM = b"\xef\xbb\xbf"
JSON = {"content-type": "application/json"}


def test_a_byte_order_mark_is_read_past_on_every_json_route(client: TestClient) -> None:
    """Notepad's and PowerShell's "UTF-8" files start with one (RFC 8259 8.1 allows
    ignoring it): the answer is the same as without it."""
    one = json.dumps(patient()).encode()
    batch = json.dumps({"patients": [patient(), patient(thal=None)]}).encode()
    routes = (
        ("/predict", one),
        ("/predict/batch", batch),
        ("/predict/explain", one),
        ("/predict/explain/batch", batch),
    )
    for route, body in routes:
        plain = client.post(route, content=body, headers=JSON)
        marked = client.post(route, content=BOM + body, headers=JSON)
        assert plain.status_code == marked.status_code == 200, (route, marked.text)
        assert marked.json() == plain.json()


def test_after_a_byte_order_mark_a_body_is_judged_as_without_one(client: TestClient) -> None:
    """Bad fields are named, and a duplicated key is still refused."""
    bad = client.post("/predict", content=BOM + json.dumps(patient(age=500)).encode(), headers=JSON)
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "age"]]
    twice = client.post("/predict", content=BOM + _with_leading("age", 60, patient()), headers=JSON)
    assert twice.status_code == 422
    assert twice.json()["detail"][0]["type"] == "duplicate_key"
    one_mark = client.post(
        "/predict", content=BOM + BOM + json.dumps(patient()).encode(), headers=JSON
    )
    assert one_mark.status_code == 422  # one mark is read past, not any number of them
    assert [e["type"] for e in one_mark.json()["detail"]] == ["json_invalid"]
    integral = client.post(
        "/predict", content=BOM + json.dumps(patient(sex=1.0)).encode(), headers=JSON
    )
    assert integral.status_code == 200  # "sex": 1.0 is accepted after a mark as without one
    batch = {"patients": [patient(), patient(age=500)]}
    out_of_range = client.post(
        "/predict/batch", content=BOM + json.dumps(batch).encode(), headers=JSON
    )
    assert [e["loc"] for e in out_of_range.json()["detail"]] == [["body", "patients", 1, "age"]]
    second = _with_leading("sex", 0, patient()).decode()
    doubled = ('{"patients": [' + json.dumps(patient()) + ", " + second + "]}").encode()
    refused = client.post("/predict/batch", content=BOM + doubled, headers=JSON)
    assert [(e["type"], e["loc"]) for e in refused.json()["detail"]] == [
        ("duplicate_key", ["body", "patients", 1, "sex"])
    ]


def test_duplicate_keys_in_a_batch_name_the_patient(client: TestClient) -> None:
    second = _with_leading("sex", 0, patient()).decode()
    body = '{"patients": [' + json.dumps(patient()) + ", " + second + "]}"
    response = client.post(
        "/predict/batch", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("duplicate_key", ["body", "patients", 1, "sex"])


def test_predict_lists_every_missing_field(client: TestClient) -> None:
    response = client.post("/predict", json={"age": 54})
    assert response.status_code == 422
    assert sorted(error_locs(response)) == sorted(("body", n) for n in FEATURE_NAMES[1:])


def _with_literal(body: dict[str, Any], field: str, literal: str) -> str:
    """``body`` as JSON with ``field`` set to a literal json.dumps would not write."""
    return json.dumps({**body, field: "__literal__"}).replace('"__literal__"', literal)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["age", "sex", "thal"])  # continuous, coded, coded or null
def test_predict_refuses_non_finite_numbers(client: TestClient, literal: str, field: str) -> None:
    # Pydantic's JSON parser reads these non-standard literals, then refuses the value;
    # a coded (integer) field once called them "a number with a fractional part".
    body = _with_literal(PATIENT_EXAMPLE, field, literal)
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["type"] == "finite_number"
    assert error["msg"] == "Input should be a finite number"
    assert error["input"] == literal


@pytest.mark.parametrize(
    ("content", "loc0", "error_type"),
    [
        (b"", ("body",), "missing"),
        (b'{"age": 54,', ("body",), "json_invalid"),
        (b"[]", ("body",), "model_type"),
        (b'"patient"', ("body",), "model_type"),
        (b"null", ("body",), "model_type"),
        (b'{"age": "\xff"}', ("body",), "json_invalid"),  # not UTF-8 (schemathesis found it)
        (b"[" * 100_000, ("body",), "json_invalid"),  # nested beyond the parser's limit
    ],
)
def test_predict_refuses_malformed_bodies(
    client: TestClient, content: bytes, loc0: tuple[str, ...], error_type: str
) -> None:
    response = client.post("/predict", content=content, headers=JSON)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors[0]["type"] == error_type
    assert tuple(errors[0]["loc"][: len(loc0)]) == loc0


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client: TestClient, path: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=json.dumps(PATIENT_EXAMPLE), headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_json_subtypes_are_accepted(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=json.dumps(PATIENT_EXAMPLE),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


# ----- /predict/batch ---------------------------------------------------------------------


def test_batch_keeps_order_and_matches_single_predictions(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    patients = []
    for _ in range(25):
        p = {}
        for f in FEATURES:
            if f.codes:
                p[f.name] = int(rng.choice(sorted(f.codes)))
            else:
                p[f.name] = round(float(rng.uniform(f.minimum, f.maximum)), 1)
        patients.append(p)
    response = client.post("/predict/batch", json={"patients": patients})
    assert response.status_code == 200
    batch = BatchPrediction.model_validate_json(response.content).predictions
    singles = [Prediction.model_validate(client.post("/predict", json=p).json()) for p in patients]
    assert len(batch) == len(patients)
    for b, s in zip(batch, singles, strict=True):
        # One row and many rows take different BLAS paths: equal to the last bits or so.
        assert b.probability == pytest.approx(s.probability, rel=1e-12)
        assert (b.prediction, b.label, b.threshold, b.model_version) == (
            s.prediction,
            s.label,
            s.threshold,
            s.model_version,
        )


def test_batch_errors_name_the_patient_and_field(client: TestClient) -> None:
    body = {"patients": [patient(), patient(age="54"), patient(), patient(thal=5, sex=3)]}
    response = client.post("/predict/batch", json=body)
    assert response.status_code == 422
    assert error_locs(response) == [
        ("body", "patients", 1, "age"),
        ("body", "patients", 3, "sex"),
        ("body", "patients", 3, "thal"),
    ]


def test_batch_size_limit(artifact_path: Path) -> None:
    with make_client(artifact_path, max_batch_size=3) as c:
        assert c.post("/predict/batch", json={"patients": [PATIENT_EXAMPLE] * 3}).status_code == 200
        response = c.post("/predict/batch", json={"patients": [PATIENT_EXAMPLE] * 4})
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "patients"]
        assert error["type"] == "too_long"
        assert error["input"] is None  # the list is not echoed back


@pytest.mark.parametrize(
    ("content", "locs"),
    [
        (b"", [("body",)]),
        (b"{", [("body",)]),
        (b"{}", [("body", "patients")]),
        (b'{"patients": []}', [("body", "patients")]),
        (b'{"patients": {}}', [("body", "patients")]),
        (b'{"patients": [], "extra": 1}', [("body", "patients"), ("body", "extra")]),
        (b"[]", [("body",)]),
        (b'{"patients": [NaN]}', [("body", "patients", 0)]),
        (b'{"patients": [{"age": "\xff"}]}', [("body",)]),
        (b"[" * 100_000, [("body",)]),
    ],
)
def test_batch_refuses_malformed_bodies(
    client: TestClient, content: bytes, locs: list[tuple[Any, ...]]
) -> None:
    response = client.post("/predict/batch", content=content, headers=JSON)
    assert response.status_code == 422
    assert error_locs(response) == locs


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["age", "sex"])
def test_batch_refuses_non_finite_numbers(client: TestClient, literal: str, field: str) -> None:
    body = '{"patients": [' + _with_literal(PATIENT_EXAMPLE, field, literal) + "]}"
    response = client.post("/predict/batch", content=body, headers=JSON)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "patients", 0, field]
    assert error["type"] == "finite_number"
    assert error["msg"] == "Input should be a finite number"
    assert error["input"] == literal


# ----- body size --------------------------------------------------------------------------


def test_oversized_body_is_413_before_reading_it(artifact_path: Path) -> None:
    with make_client(artifact_path, max_body_bytes=2048) as c:
        body = json.dumps({"patients": [PATIENT_EXAMPLE] * 20})
        response = c.post("/predict/batch", content=body, headers=JSON)
        assert response.status_code == 413
        assert "2048" in response.json()["detail"]
        assert response.headers["x-request-id"]


def test_oversized_chunked_body_is_413(artifact_path: Path) -> None:
    with make_client(artifact_path, max_body_bytes=2048) as c:
        chunk = json.dumps({"patients": [PATIENT_EXAMPLE] * 20}).encode()

        def stream() -> Iterator[bytes]:  # no Content-Length: sent chunked
            for i in range(0, len(chunk), 500):
                yield chunk[i : i + 500]

        for path in ("/predict", "/predict/batch"):
            response = c.post(path, content=stream(), headers=JSON)
            assert response.status_code == 413, path
            assert "2048" in response.json()["detail"]


# ----- API key ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_client(artifact_path: Path) -> Iterator[TestClient]:
    with make_client(artifact_path, api_key=API_KEY) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("POST", "/predict/batch"),
        ("GET", "/metrics"),
        ("GET", "/model"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
def test_api_key_guards_everything_but_probes(
    keyed_client: TestClient, method: str, path: str
) -> None:
    body = {"patients": [PATIENT_EXAMPLE]} if path.endswith("batch") else PATIENT_EXAMPLE
    kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
    refused: list[dict[str, str]] = [
        {},
        {"x-api-key": "wrong"},
        {"x-api-key": API_KEY + "x"},
        {"authorization": f"Bearer {API_KEY}x"},
        {"authorization": f"Basic {API_KEY}"},
        # X-API-Key wins over a bearer token: a wrong header is not rescued by the other
        {"x-api-key": "wrong", "authorization": f"Bearer {API_KEY}"},
    ]
    for headers in refused:
        response = keyed_client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 401, headers
        assert "X-API-Key" in response.json()["detail"]
    for headers in (
        {"x-api-key": API_KEY},
        {"authorization": f"Bearer {API_KEY}"},
        {"authorization": f"bearer {API_KEY}"},
    ):
        ok = keyed_client.request(method, path, headers=headers, **kwargs)
        assert ok.status_code == 200, headers


def test_metrics_summary_is_the_json_of_metrics(client: TestClient) -> None:
    summary = client.get("/metrics/summary")
    assert summary.headers["content-type"] == "application/json"
    metrics = client.get("/metrics").json()
    assert summary.json().keys() == metrics.keys()
    assert summary.json()["training"] == metrics["training"]
    # Asking it for text changes nothing: it is the typed JSON operation.
    as_text = client.get("/metrics/summary", headers={"accept": "text/plain"})
    assert as_text.headers["content-type"] == "application/json"


def test_probes_need_no_key(keyed_client: TestClient) -> None:
    assert keyed_client.get("/health").status_code == 200
    assert keyed_client.get("/ready").status_code == 200


def test_unauthenticated_body_is_refused_before_validation(keyed_client: TestClient) -> None:
    response = keyed_client.post("/predict", content=b"not json", headers=JSON)
    assert response.status_code == 401


def test_short_api_key_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(api_key="short")


# ----- request ids and logs ---------------------------------------------------------------


def test_request_ids_are_unique_and_client_ids_are_kept(client: TestClient) -> None:
    ids = {client.get("/health").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50
    kept = client.get("/health", headers={"x-request-id": "trace-42.abc"})
    assert kept.headers["x-request-id"] == "trace-42.abc"
    # An id with characters that could break log lines is replaced, not echoed.
    replaced = client.get("/health", headers={"x-request-id": 'bad"id'})
    assert replaced.headers["x-request-id"] != 'bad"id'
    errors = client.post("/predict", json={})
    assert errors.headers["x-request-id"]


def test_access_log_is_one_json_line_without_bodies(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = 123.456
    capsys.readouterr()
    response = client.post(
        "/predict", json=patient(serum_cholesterol=marker), headers={"x-request-id": "log-test-1"}
    )
    assert response.status_code == 200
    client.post("/predict", json=patient(serum_cholesterol=marker, age="secret-value"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e.get("logger") == "heart.access"]
    assert len(access) == 2
    first = access[0]
    assert first["method"] == "POST" and first["path"] == "/predict"
    assert first["status"] == 200 and first["request_id"] == "log-test-1"
    assert first["latency_ms"] > 0
    assert access[1]["status"] == 422
    text = "\n".join(lines)
    assert "123.456" not in text and "secret-value" not in text


def test_access_log_can_be_switched_off(
    artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_client(artifact_path, access_log=False) as c:
        capsys.readouterr()
        c.get("/health")
        assert "heart.access" not in capsys.readouterr().err


def test_access_log_follows_the_logger_level(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("heart.access")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        capsys.readouterr()
        client.get("/health")
        assert "heart.access" not in capsys.readouterr().err
    finally:
        logger.setLevel(previous)


# ----- /model, /health, /ready ------------------------------------------------------------


def test_model_card(client: TestClient, artifact_payload: dict[str, Any]) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    card = ModelCard.model_validate_json(response.content)
    assert card.model_version == artifact_payload["model_version"]
    assert card.created_at == artifact_payload["created_at"]
    assert card.data_sha256 == artifact_payload["data_sha256"]
    assert card.threshold == artifact_payload["threshold"]
    assert [f.name for f in card.features] == list(FEATURE_NAMES)
    assert card.features[1].allowed_values == {"0": "female", "1": "male"}
    metrics: Any = artifact_payload["metrics"]
    assert card.metrics.test is not None
    assert card.metrics.test.accuracy == metrics["test"]["accuracy"]
    assert card.architecture.n_hidden == np.asarray(artifact_payload["weights"]["W1"]).shape[1]  # type: ignore[index]


def test_health_and_ready(client: TestClient, artifact_payload: dict[str, Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model_version"] == artifact_payload["model_version"]


def test_not_ready_without_a_loaded_model(artifact_path: Path) -> None:
    # Without entering the client, the lifespan never ran: no model.
    client = make_client(artifact_path)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["reason"]
    assert client.post("/predict", json=PATIENT_EXAMPLE).status_code == 503
    assert client.get("/health").status_code == 200


def test_startup_fails_with_one_clear_line_without_a_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nowhere.joblib"
    client = make_client(missing)
    with caplog.at_level(logging.CRITICAL, logger="heart"), pytest.raises(RuntimeError), client:
        pass
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert str(missing) in record.getMessage()
    assert "python -m training" in record.getMessage()


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405
    assert client.delete("/model").status_code == 405


def test_head_is_answered_like_get_on_get_routes(client: TestClient) -> None:
    for path in ("/health", "/ready", "/model", "/metrics"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.headers["content-type"] == get.headers["content-type"], path
    assert client.head("/predict").status_code == 405  # POST only, as for GET


def test_a_trailing_slash_is_not_redirected_to_the_callers_host(client: TestClient) -> None:
    # Starlette would answer 307 to http://<Host header>/predict: a redirect any
    # client can aim at another host, and a second POST of the same patient.
    response = client.post(
        "/predict/",
        json=PATIENT_EXAMPLE,
        headers={"Host": "evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert client.get("/health/", follow_redirects=False).status_code == 404


# ----- /metrics ---------------------------------------------------------------------------


def test_metrics_json_counts_what_happened(artifact_path: Path) -> None:
    with make_client(artifact_path, drift_min_patients=10) as c:
        for _ in range(3):
            assert c.post("/predict", json=PATIENT_EXAMPLE).status_code == 200
        batch = {"patients": [PATIENT_EXAMPLE] * 10}  # completes a drift window of 10
        assert c.post("/predict/batch", json=batch).status_code == 200
        assert c.post("/predict", json=patient(age="x")).status_code == 422
        assert c.get("/nope").status_code == 404
        response = c.get("/metrics")
        assert response.status_code == 200
        report = MetricsReport.model_validate_json(response.content)
    serving = report.serving
    assert serving.predictions_total == 13
    assert serving.requests_by_route["/predict"] == 4
    assert serving.requests_by_route["/predict/batch"] == 1
    assert serving.requests_by_route["unmatched"] == 1
    assert serving.errors_by_kind == {"not_found": 1, "validation": 1}
    assert serving.worker_processes == 1
    assert serving.uptime_seconds >= 0
    assert serving.latency["/predict"].count == 4
    p50, p99 = serving.latency["/predict"].p50_ms, serving.latency["/predict"].p99_ms
    assert p50 is not None and p99 is not None and 0 < p50 <= p99
    assert serving.positive_share in (0.0, 1.0)  # the same patient every time
    # Every served row was the example patient: the running mean is exactly it.
    for drift in serving.drift:
        assert drift.served_mean == pytest.approx(PATIENT_EXAMPLE[drift.feature])
        expected = (drift.served_mean - drift.training_mean) / drift.training_std
        assert drift.drift_std == pytest.approx(expected)
    assert report.training.test is not None and report.training.test.roc_auc is not None
    assert "roc_auc" in report.training.cross_validation


def test_metrics_before_any_prediction_has_no_drift_yet(artifact_path: Path) -> None:
    with make_client(artifact_path) as c:
        report = MetricsReport.model_validate_json(c.get("/metrics").content)
    assert report.serving.predictions_total == 0
    assert report.serving.positive_share is None
    assert all(d.served_mean is None and d.drift_std is None for d in report.serving.drift)


OPENMETRICS = "application/openmetrics-text"


@pytest.mark.parametrize(
    ("headers", "query", "content_type"),
    [
        ({"accept": "text/plain"}, "", "text/plain"),
        ({}, "?format=prometheus", "text/plain"),
        ({"accept": "application/openmetrics-text; version=1.0.0"}, "", OPENMETRICS),
        ({}, "?format=openmetrics", OPENMETRICS),
        (
            {
                "accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            },
            "",
            OPENMETRICS,
        ),
        ({"accept": "application/json"}, "", "application/json"),
        ({"accept": "*/*"}, "", "application/json"),
        ({"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, "", "application/json"),
        ({"accept": "text/plain;q=0.5, application/json"}, "", "application/json"),
        ({"accept": "text/plain"}, "?format=json", "application/json"),
    ],
)
def test_metrics_content_negotiation(
    client: TestClient, headers: dict[str, str], query: str, content_type: str
) -> None:
    response = client.get("/metrics" + query, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == content_type


def test_metrics_bad_format_is_422(client: TestClient) -> None:
    response = client.get("/metrics?format=xml")
    assert response.status_code == 422
    assert error_locs(response) == [("query", "format")]


def test_prometheus_exposition_follows_conventions(artifact_path: Path) -> None:
    with make_client(artifact_path, drift_min_patients=10) as c:
        c.post("/predict", json=PATIENT_EXAMPLE)
        c.post("/predict/batch", json={"patients": [PATIENT_EXAMPLE] * 9})  # a window of 10
        text = c.get("/metrics", headers={"accept": "text/plain"}).text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(n.startswith("heart_") for n in names)
    type_lines = [line.split() for line in text.splitlines() if line.startswith("# TYPE")]
    types = {parts[2]: parts[3] for parts in type_lines}
    assert types["heart_http_request_duration_seconds"] == "histogram"
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")
    assert 'heart_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert "heart_predictions_total{predicted_class=" in text
    assert 'heart_feature_drift{feature="age"}' in text
    assert "heart_drift_window_min_patients 10.0" in text
    assert "_created" not in text


# ----- internals that must hold -----------------------------------------------------------


def test_serving_never_imports_scikit_learn(artifact_path: Path) -> None:
    """The request path is NumPy only: loading, predicting and batching import no sklearn."""
    code = f"""
import sys
from fastapi.testclient import TestClient
from app import Settings, create_app
from app.schemas import PATIENT_EXAMPLE
with TestClient(create_app(Settings(model_path={str(artifact_path)!r}))) as c:
    assert c.post("/predict", json=PATIENT_EXAMPLE).status_code == 200
    assert c.post("/predict/batch", json={{"patients": [PATIENT_EXAMPLE]}}).status_code == 200
    assert c.get("/model").status_code == 200 and c.get("/metrics").status_code == 200
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "training")))
"""
    done = run_ok([sys.executable, "-c", code])
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_unexpected_exception_is_a_json_500_with_request_id(
    artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(Settings(model_path=artifact_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        capsys.readouterr()
        response = c.get("/boom", headers={"x-request-id": "boom-1"})
        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error."}
        assert response.headers["x-request-id"] == "boom-1"
        report = MetricsReport.model_validate_json(c.get("/metrics").content)
    assert report.serving.errors_by_kind == {"internal": 1}
    access = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"heart.access"' in line
    ]
    first = access[0]
    assert (first["request_id"], first["status"], first["level"]) == ("boom-1", 500, "error")


def test_predictions_carry_a_risk_interval_and_explain_ranks_every_feature(
    artifact_path: Path,
) -> None:
    with TestClient(create_app(Settings(model_path=artifact_path))) as client:
        one = client.post("/predict", json=PATIENT_EXAMPLE).json()
        band = one["risk_interval"]
        assert 0 < band["lower"] < band["upper"] < 1 and band["coverage"] == 0.9
        batch = client.post("/predict/batch", json={"patients": [PATIENT_EXAMPLE] * 3}).json()
        for item in batch["predictions"]:
            assert item["risk_interval"]["lower"] == pytest.approx(band["lower"], abs=1e-9)
            assert item["risk_interval"]["upper"] == pytest.approx(band["upper"], abs=1e-9)
        explained = client.post("/predict/explain", json=PATIENT_EXAMPLE).json()
        assert explained["probability"] == one["probability"]
        assert explained["risk_interval"] == pytest.approx(band)
        items = explained["contributions"]
        assert [c["feature"] for c in items] != [] and len(items) == 13
        assert {c["feature"]: c["value"] for c in items} == PATIENT_EXAMPLE
        magnitudes = [abs(c["contribution"]) for c in items]
        assert magnitudes == sorted(magnitudes, reverse=True)
        total = sum(c["contribution"] for c in items)
        assert total == pytest.approx(one["probability"] - explained["base_value"], abs=1e-6)
        assert next(c for c in items if c["feature"] == "thal")["value_meaning"] == "normal"
        bad = client.post("/predict/explain", json={**PATIENT_EXAMPLE, "age": 650})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "age"]
        page = client.get("/")
        assert page.status_code == 200 and "Not a medical device" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]


def test_explain_batch_answers_each_patient_as_explain_does_and_has_its_own_limit(
    artifact_path: Path,
) -> None:
    incomplete = {**PATIENT_EXAMPLE, "thal": None, "num_major_vessels": None}
    with TestClient(create_app(Settings(model_path=artifact_path))) as client:
        singles = [
            client.post("/predict/explain", json=p).json() for p in (PATIENT_EXAMPLE, incomplete)
        ]
        batch = client.post(
            "/predict/explain/batch", json={"patients": [PATIENT_EXAMPLE, incomplete]}
        )
        assert batch.status_code == 200
        answers = batch.json()["predictions"]
        assert len(answers) == 2
        for single, answer in zip(singles, answers, strict=True):
            assert answer["probability"] == single["probability"]
            assert answer["base_value"] == pytest.approx(single["base_value"], abs=1e-12)
            assert answer["contributions"] == single["contributions"]  # same arithmetic
        gaps = {c["feature"]: c["contribution"] for c in answers[1]["contributions"]}
        assert gaps["thal"] == 0.0 and gaps["num_major_vessels"] == 0.0
        assert answers[1]["missing_features"] == ["num_major_vessels", "thal"]
        bad = client.post(
            "/predict/explain/batch",
            json={"patients": [PATIENT_EXAMPLE, {**PATIENT_EXAMPLE, "age": 650}]},
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "patients", 1, "age"]
        too_many = client.post(
            "/predict/explain/batch", json={"patients": [PATIENT_EXAMPLE] * (MAX_EXPLAIN_BATCH + 1)}
        )
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["loc"] == ["body", "patients"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ExplainBatchRequest"]
        assert schema["properties"]["patients"]["maxItems"] == MAX_EXPLAIN_BATCH


class _Writes:
    """A stand-in for stderr that keeps each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_access_lines_of_one_loop_turn_are_joined_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under concurrency the middleware defers lines to the end of the loop turn: one
    write per PIPE_BUF bytes of whole lines, the order kept, nothing lost."""
    from app.logs import AccessLog

    log, stderr = AccessLog(), _Writes()
    monkeypatch.setattr(sys, "stderr", stderr)

    async def turn() -> None:
        log.write("POST", "/predict", 200, 0.001, "first")  # alone: written at once
        assert len(stderr.writes) == 1
        for i in range(60):
            log.write("POST", "/predict", 200, 0.001, f"id-{i:03d}", defer=True)
        log.write("GET", "/health", 200, 0.001, "after")  # queued behind the deferred ones
        assert len(stderr.writes) == 1
        await asyncio.sleep(0)  # the turn ends: the flush runs

    asyncio.run(turn())
    lines = [line for text in stderr.writes for line in text.splitlines()]
    ids = [json.loads(line)["request_id"] for line in lines]
    assert ids == ["first", *[f"id-{i:03d}" for i in range(60)], "after"]
    assert 3 <= len(stderr.writes) < 10  # 61 lines of ~180 bytes: several PIPE_BUF chunks
    assert all(len(text) <= 4096 and text.endswith("\n") for text in stderr.writes)
