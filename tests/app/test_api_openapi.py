"""The OpenAPI document is a product: stable ids, docs, examples, and the exported copy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import Settings, create_app
from app.schemas import BatchRequest, PatientFeatures, batch_request_model
from model.features import FEATURE_NAMES
from tests._tools import REPO_ROOT

EXPORTED = REPO_ROOT / "openapi.json"
REGENERATE = "python -m app openapi --output openapi.json   (or: heart-api openapi > openapi.json)"


def document(**settings: Any) -> dict[str, Any]:
    return create_app(Settings(**settings)).openapi()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: {**op, "_path": path, "_method": method}
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }


def test_exported_document_is_current(doc: dict[str, Any]) -> None:
    exported = json.loads(EXPORTED.read_text(encoding="utf-8"))
    assert exported == doc, f"openapi.json is stale; regenerate it with: {REGENERATE}"


def test_operation_ids_and_routes(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    assert {k: (v["_method"], v["_path"]) for k, v in ops.items()} == {
        "predict": ("post", "/predict"),
        "predict_batch": ("post", "/predict/batch"),
        "predict_explain": ("post", "/predict/explain"),
        "predict_explain_batch": ("post", "/predict/explain/batch"),
        "predict_table": ("post", "/predict/table"),
        "get_metrics": ("get", "/metrics"),
        "get_metrics_summary": ("get", "/metrics/summary"),
        "get_model": ("get", "/model"),
        "health": ("get", "/health"),
        "ready": ("get", "/ready"),
        # The Open Inference Protocol (app/oip.py)
        "oip_server_metadata": ("get", "/v2"),
        "oip_server_live": ("get", "/v2/health/live"),
        "oip_server_ready": ("get", "/v2/health/ready"),
        "oip_model_metadata": ("get", "/v2/models/heart"),
        "oip_model_ready": ("get", "/v2/models/heart/ready"),
        "oip_model_infer": ("post", "/v2/models/heart/infer"),
    }
    declared_tags = {t["name"] for t in doc["tags"]}
    for op in ops.values():
        assert op["summary"] and op["description"]
        assert op["tags"] and set(op["tags"]) <= declared_tags


def test_every_request_body_has_valid_examples(doc: dict[str, Any]) -> None:
    models = {"predict": PatientFeatures, "predict_batch": BatchRequest}
    for op_id, model in models.items():
        op = operations(doc)[op_id]
        content = op["requestBody"]["content"]["application/json"]
        assert op["requestBody"]["required"] is True
        assert content["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert content["examples"]
        for example in content["examples"].values():
            model.model_validate(example["value"])


def test_body_errors_are_documented(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for op_id in ("predict", "predict_batch"):
        responses = ops[op_id]["responses"]
        assert {"200", "401", "413", "415", "422"} <= set(responses)
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/HTTPValidationError"
        }
    assert "503" in ops["ready"]["responses"]


def test_components_come_from_the_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert list(schemas["PatientFeatures"]["properties"]) == list(FEATURE_NAMES)
    batch = batch_request_model(1000).model_json_schema(ref_template="#/components/schemas/{model}")
    batch.pop("$defs")
    assert schemas["BatchRequest"] == batch
    assert schemas["BatchRequest"]["properties"]["patients"]["maxItems"] == 1000


def test_batch_limit_is_reflected(doc: dict[str, Any]) -> None:
    small = document(max_batch_size=10)["components"]["schemas"]["BatchRequest"]
    assert small["properties"]["patients"]["maxItems"] == 10


def test_metrics_documents_json_and_both_prometheus_formats(doc: dict[str, Any]) -> None:
    op = operations(doc)["get_metrics"]
    content = op["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/MetricsReport"}
    assert content["text/plain"]["schema"] == {"type": "string"}
    assert content["application/openmetrics-text"]["schema"] == {"type": "string"}
    [param] = op["parameters"]
    assert param["name"] == "format" and param["in"] == "query"


def test_api_key_scheme_optional_or_required(doc: dict[str, Any]) -> None:
    scheme = doc["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    bearer = doc["components"]["securitySchemes"]["BearerAPIKey"]
    assert bearer == {**bearer, "type": "http", "scheme": "bearer"}
    keyed = document(api_key="k" * 20)
    for name, op in operations(doc).items():
        keyed_op = operations(keyed)[name]
        if name in ("health", "ready", "oip_server_live", "oip_server_ready"):
            # Open on purpose, and saying so (issue 12: linters flag a missing `security`).
            assert op["security"] == [] and keyed_op["security"] == []
        else:
            either = [{"APIKeyHeader": []}, {"BearerAPIKey": []}]
            assert op["security"] == [{}, *either]  # optional
            assert keyed_op["security"] == either  # required, by either scheme


def test_servers_licence_and_contact(doc: dict[str, Any]) -> None:
    """What Redocly and Spectral asked for (issue 12); a relative server works behind any proxy."""
    assert doc["servers"] == [{"url": "/", "description": doc["servers"][0]["description"]}]
    assert doc["info"]["license"] == {"name": "MIT", "identifier": "MIT"}
    assert doc["info"]["contact"]["name"]


def test_metrics_summary_is_json_only(doc: dict[str, Any]) -> None:
    """Generated clients type it as MetricsReport alone, not ``MetricsReport | string``."""
    responses = operations(doc)["get_metrics_summary"]["responses"]
    assert list(responses["200"]["content"]) == ["application/json"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MetricsReport"
    }


def test_every_operation_documents_a_client_error(doc: dict[str, Any]) -> None:
    for name, op in operations(doc).items():
        assert any(code.startswith("4") for code in op["responses"]), name


def test_routes_sit_on_the_apps_router_and_a_nested_router_is_refused() -> None:
    """``add_routes`` flattens our routers (FastAPI's lazy inclusion costs /predict time);
    a router it cannot flatten faithfully must fail loudly, not lose its options."""
    from fastapi import APIRouter, FastAPI
    from fastapi.routing import APIRoute

    from app.main import add_routes

    app = create_app(Settings())
    ours = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert {"/predict", "/predict/table", "/v2/models/heart/infer"} <= {r.path for r in ours}
    assert all(
        isinstance(r, APIRoute) or r.path.startswith(("/docs", "/openapi", "/redoc"))
        for r in app.router.routes
        if hasattr(r, "path")
    )
    outer, inner = APIRouter(), APIRouter()
    inner.add_api_route("/x", lambda: None)
    outer.include_router(inner, prefix="/p")
    with pytest.raises(TypeError, match="include_router"):
        add_routes(FastAPI(), outer)
