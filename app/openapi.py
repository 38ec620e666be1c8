"""The OpenAPI document: what FastAPI cannot infer from the handlers, added in one place.

The prediction endpoints read their raw body themselves (one Pydantic call
from bytes, see ``PredictionService.parse_one``), so FastAPI does not see a
body parameter. Their request bodies, the errors every body can get, the
request models' schemas and the API key schemes are declared here, from the
very models that validate the requests, so the document cannot drift from
the behaviour (``tests/app/test_api_openapi.py`` and the committed
``openapi.json`` check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI

from app.oip_schemas import InferenceRequest
from app.schemas import (
    PATIENT_EXAMPLE,
    ErrorMessage,
    PatientFeatures,
    batch_request_model,
    explain_batch_request_model,
)
from model.features import markdown_table

#: Endpoints that never need the API key: the probes, ours and the Open Inference Protocol's
#: (app/oip.py), and the calculator page at `/` (which asks for the key instead).
OPEN_PATHS: Final[frozenset[str]] = frozenset(
    {"/health", "/ready", "/v2/health/live", "/v2/health/ready", "/"}
)
SECURITY_SCHEME: Final[str] = "APIKeyHeader"
#: The same key as a bearer token, for clients that cannot set custom headers (Prometheus).
BEARER_SCHEME: Final[str] = "BearerAPIKey"

TITLE: Final[str] = "Heart disease risk API"
#: Relative: the document is right wherever the service is reached (a proxy, a
#: port-forward), and generators that need a base URL get one.
SERVERS: Final[list[dict[str, str]]] = [
    {"url": "/", "description": "the server that serves this document"}
]
LICENSE: Final[dict[str, str]] = {"name": "MIT", "identifier": "MIT"}
CONTACT: Final[dict[str, str]] = {"name": "heart-risk developers"}
DESCRIPTION: Final[str] = f"""
Estimates the risk of heart disease from 13 clinical features (UCI Statlog Heart
data set) with a small neural network.

Send one patient to `POST /predict` or up to 1000 to `POST /predict/batch`.
Every feature is required; each one's description gives its unit and accepted
values, and invalid input is refused with 422 naming the field.

When the server sets `HEART_API_KEY`, every endpoint except `/health` and
`/ready` requires it in the `X-API-Key` header (or as `Authorization: Bearer <key>`).

{markdown_table()}
""".strip()

TAGS: Final[list[dict[str, str]]] = [
    {"name": "predictions", "description": "Risk of heart disease for one or many patients."},
    {"name": "model", "description": "What the loaded model is and how well it did."},
    {
        "name": "monitoring",
        "description": "Liveness, readiness and metrics (JSON or Prometheus exposition).",
    },
]

#: Errors any protected endpoint can answer (the middleware refuses them).
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong X-API-Key (when configured)."},
}
#: What even the open probes can answer: a malformed request is refused before routing.
PROBE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorMessage, "description": "Malformed request (an invalid Content-Length)."},
}
#: Errors any endpoint with a request body can answer, before the body is read.
BODY_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **ERRORS,
    400: {
        "model": ErrorMessage,
        "description": (
            "Malformed request: an invalid Content-Length, or a gzip or deflate body "
            "(Content-Encoding) that does not decode."
        ),
    },
    413: {
        "model": ErrorMessage,
        "description": "Body larger than HEART_MAX_BODY_BYTES, as sent or once decoded.",
    },
    415: {
        "model": ErrorMessage,
        "description": (
            "Body not sent as application/json, or in a Content-Encoding other than gzip "
            "or deflate (the answer's Accept-Encoding lists those)."
        ),
    },
}
_VALIDATION_ERROR: Final[dict[int | str, dict[str, Any]]] = {
    422: {
        "description": "Validation Error: `detail` names each offending field and why.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
}


#: The example request of each body schema, shown by /docs and generated clients.
_BODY_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "PatientFeatures": {
        "example patient": {
            "summary": "The documented example patient of model/features.py",
            "value": PATIENT_EXAMPLE,
        }
    },
    **{
        schema: {
            "two patients": {
                "summary": "Two patients",
                "value": {"patients": [PATIENT_EXAMPLE, PATIENT_EXAMPLE]},
            }
        }
        for schema in ("BatchRequest", "ExplainBatchRequest")
    },
}


def prediction_operation(
    operation_id: str, summary: str, response_model: type[Any], body_schema: str
) -> dict[str, Any]:
    """Keyword arguments of ``router.post`` for an endpoint that validates its raw body.

    FastAPI would document a body parameter itself; these endpoints have none
    (for speed), so their body is described here by reference to the schema
    :func:`complete_openapi` adds, with its example and the errors every body can get.
    """
    request_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{body_schema}"},
                "examples": _BODY_EXAMPLES[body_schema],
            }
        },
    }
    responses = {**BODY_ERRORS, **_VALIDATION_ERROR}
    documented = operation(operation_id, summary, response_model, responses, "predictions")
    return documented | {"openapi_extra": {"requestBody": request_body}}


def operation(
    operation_id: str,
    summary: str,
    response_model: type[Any],
    responses: Mapping[int | str, dict[str, Any]] = ERRORS,
    tag: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a documented route: what every operation states, said once.

    Without ``tag`` the router's own tags apply (the Open Inference Protocol's, app/oip.py).
    """
    documented: dict[str, Any] = {"operation_id": operation_id, "summary": summary}
    documented |= {"response_model": response_model, "responses": dict(responses)}
    return documented | ({"tags": [tag]} if tag else {})


class HeartAPI(FastAPI):
    """FastAPI whose document is completed by :func:`complete_openapi` (once, then cached)."""

    api_key_required: bool = False
    max_batch_size: int = 1000

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()
        complete_openapi(
            schema, api_key_required=self.api_key_required, max_batch_size=self.max_batch_size
        )
        self.openapi_schema = schema
        return schema


def complete_openapi(
    schema: dict[str, Any], *, api_key_required: bool, max_batch_size: int
) -> None:
    """Add the request bodies' schemas and the API key scheme to FastAPI's document.

    The schemas added are the models that validate the bodies, with the
    configured batch limit, so a generated client refuses what the server does.
    """
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    bodies = (batch_request_model(max_batch_size), explain_batch_request_model(max_batch_size))
    for model in (PatientFeatures, *bodies, InferenceRequest):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in {**definition.pop("$defs", {}), model.__name__: definition}.items():
            if name in schemas and schemas[name] != nested:
                raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
            schemas[name] = nested
    if "HTTPValidationError" not in schemas:  # FastAPI adds it for /metrics' query parameter
        raise RuntimeError("the validation error schema is missing from the document")
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "Required when the server sets HEART_API_KEY.",
        },
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "The same key as `Authorization: Bearer <key>` (for Prometheus).",
        },
    }
    # Either scheme when configured; otherwise optional (the empty requirement).
    security: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}, {BEARER_SCHEME: []}]
    if not api_key_required:
        security.insert(0, {})
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            # Open probes say so explicitly (an empty requirement list): linters and
            # readers cannot tell "open on purpose" from "forgot to document".
            operation["security"] = [] if path in OPEN_PATHS else security
