"""The endpoints.

Prediction handlers are ``async def`` on purpose: the work is a few
microseconds of NumPy, far cheaper than the hop to a thread pool that FastAPI
makes for plain ``def`` handlers. They validate their raw JSON body in one
Pydantic call and return ready-made JSON bytes; ``openapi_extra`` and
``response_model`` still document (and the tests check) the exact shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import exposition, openmetrics

from app.runtime import Runtime, RuntimeDep, runtime_of
from app.schemas import (
    PATIENT_EXAMPLE,
    BatchPrediction,
    ErrorMessage,
    HealthStatus,
    MetricsReport,
    ModelCard,
    Prediction,
    ReadyStatus,
    RecordedMetrics,
)
from app.service import FloatArray, InvalidBodyError, PredictionService

PROMETHEUS_TEXT: Final[str] = exposition.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_TEXT: Final[str] = openmetrics.exposition.CONTENT_TYPE_LATEST

TAGS: Final[list[dict[str, str]]] = [
    {"name": "predictions", "description": "Risk of heart disease for one or many patients."},
    {"name": "model", "description": "What the loaded model is and how well it did."},
    {
        "name": "monitoring",
        "description": "Liveness, readiness and metrics (JSON or Prometheus exposition).",
    },
]


class JSONBytes(Response):
    """A response whose body is already JSON bytes (no re-encoding, no re-validation)."""

    media_type = "application/json"


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong X-API-Key (when configured)."},
}
_BODY_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **_ERRORS,
    413: {"model": ErrorMessage, "description": "Body larger than HEART_MAX_BODY_BYTES."},
    415: {"model": ErrorMessage, "description": "Body not sent as application/json."},
}

router = APIRouter()


def _service(runtime: Runtime) -> PredictionService:
    if runtime.service is None:
        raise HTTPException(503, detail="The model is not loaded; see /ready.")
    return runtime.service


_VALIDATION_ERROR: Final[dict[int | str, dict[str, Any]]] = {
    422: {
        "description": "Validation Error: `detail` names each offending field and why.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
}


def _prediction_route(
    path: str,
    *,
    operation_id: str,
    summary: str,
    response_model: type[Any],
    body_schema: str,
    example_name: str,
    example: dict[str, Any],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``router.post`` for an endpoint that validates its raw JSON body itself.

    The prediction endpoints read the body and validate it in one Pydantic call
    (see PredictionService.parse_one), so FastAPI does not see it as a parameter:
    the request body is documented here (app.main adds the schemas to the
    components), with the errors every body can get.
    """
    request_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{body_schema}"},
                "examples": {example_name: example},
            }
        },
    }
    return router.post(
        path,
        operation_id=operation_id,
        summary=summary,
        tags=["predictions"],
        response_model=response_model,
        responses={**_BODY_ERRORS, **_VALIDATION_ERROR},
        openapi_extra={"requestBody": request_body},
    )


async def _parsed(request: Request, parse: Callable[[bytes], FloatArray]) -> FloatArray:
    """The validated body as a feature matrix, or FastAPI's 422 naming each field."""
    body = await request.body()
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return parse(body)
    except InvalidBodyError as exc:
        raise RequestValidationError(exc.errors) from None


@_prediction_route(
    "/predict",
    operation_id="predict",
    summary="Predict heart disease for one patient",
    response_model=Prediction,
    body_schema="PatientFeatures",
    example_name="example patient",
    example={
        "summary": "The documented example patient of model/features.py",
        "value": PATIENT_EXAMPLE,
    },
)
async def predict(request: Request) -> Response:
    """Probability of heart disease for one patient and the class at the model's threshold.

    Every feature is required; each field's description gives its unit and
    accepted values. Invalid input is answered with 422 naming each field.
    """
    runtime = runtime_of(request)
    service = _service(runtime)
    row = await _parsed(request, service.parse_one)
    payload, positive = service.predict_one(row)
    runtime.metrics.observe_prediction(row, positive)
    return JSONBytes(payload)


@_prediction_route(
    "/predict/batch",
    operation_id="predict_batch",
    summary="Predict heart disease for many patients at once",
    response_model=BatchPrediction,
    body_schema="BatchRequest",
    example_name="two patients",
    example={
        "summary": "Two patients",
        "value": {"patients": [PATIENT_EXAMPLE, PATIENT_EXAMPLE]},
    },
)
async def predict_batch(request: Request) -> Response:
    """Predictions for a list of patients, in request order, computed in one NumPy call.

    At most ``HEART_MAX_BATCH_SIZE`` patients (1000 by default). One invalid
    patient fails the whole request with 422; each error's ``loc`` gives the
    patient's index and the field, e.g. ``["body", "patients", 3, "age"]``.
    """
    runtime = runtime_of(request)
    service = _service(runtime)
    rows = await _parsed(request, service.parse_batch)
    payload, positive = service.predict_rows(rows)
    runtime.metrics.observe_batch(rows, positive)
    return JSONBytes(payload)


@router.get(
    "/model",
    operation_id="get_model",
    summary="Model card of the loaded model",
    tags=["model"],
    response_model=ModelCard,
    responses=_ERRORS,
)
async def get_model(runtime: RuntimeDep) -> Response:
    """Version, creation time, architecture, hyperparameters, features and their
    meanings, training data checksum, decision threshold and evaluation metrics."""
    return JSONBytes(_service(runtime).model_card_json)


MetricsFormat = Literal["json", "prometheus", "openmetrics"]
_METRICS_MEDIA_TYPES: Final[dict[str, MetricsFormat]] = {
    "application/json": "json",
    "text/plain": "prometheus",
    "application/openmetrics-text": "openmetrics",
}


def negotiate_metrics_format(accept: str | None, requested: MetricsFormat | None) -> MetricsFormat:
    """``?format=`` wins; otherwise the Accept media type with the highest q-value.

    JSON is the default (no Accept, ``*/*``, ``application/json``, or a tie), so a
    browser or a generated client gets JSON and a Prometheus scraper, whose Accept
    header lists openmetrics and text/plain, gets the exposition format.
    """
    if requested is not None:
        return requested
    candidates: list[tuple[float, int, int, MetricsFormat]] = []
    for rank, item in enumerate((accept or "").split(",")):
        media, _, params = item.partition(";")
        fmt = _METRICS_MEDIA_TYPES.get(media.strip().lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Highest q first; on equal q JSON wins, then the earlier entry.
        candidates.append((q, int(fmt == "json"), -rank, fmt))
    best = max(candidates, default=None)
    return best[3] if best is not None and best[0] > 0 else "json"


@router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Model quality and live service metrics (JSON or Prometheus)",
    tags=["monitoring"],
    response_model=MetricsReport,
    responses={
        200: {
            "description": (
                "JSON by default. The Prometheus text exposition format (version "
                "0.0.4) for `Accept: text/plain` or `?format=prometheus`, and "
                "OpenMetrics 1.0 for `Accept: application/openmetrics-text` or "
                "`?format=openmetrics`."
            ),
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        **_ERRORS,
    },
)
async def get_metrics(
    request: Request,
    runtime: RuntimeDep,
    format_: Annotated[
        MetricsFormat | None,
        Query(
            alias="format",
            description="Force a representation instead of negotiating with Accept.",
        ),
    ] = None,
) -> Response:
    """Training-time evaluation metrics of the loaded model, and live serving figures
    summed over all workers: uptime, requests, predictions, errors by kind, latency
    percentiles, share of positive predictions, and input drift per feature."""
    fmt = negotiate_metrics_format(request.headers.get("accept"), format_)
    metrics = runtime.metrics
    if fmt == "prometheus":
        text = exposition.generate_latest(metrics.snapshot())
        return Response(text, media_type=PROMETHEUS_TEXT)
    if fmt == "openmetrics":
        return Response(
            openmetrics.exposition.generate_latest(metrics.snapshot()),  # type: ignore[no-untyped-call]
            media_type=OPENMETRICS_TEXT,
        )
    service = _service(runtime)
    report = MetricsReport(
        model_version=service.model_version,
        training=RecordedMetrics(
            test=service.model_card.metrics.test,
            cross_validation=service.model_card.metrics.cross_validation,
            cross_validation_protocol=service.model_card.metrics.cross_validation_protocol,
        ),
        serving=metrics.serving_report(),
    )
    return JSONBytes(report.model_dump_json().encode())


_HEALTH_OK: Final[bytes] = HealthStatus(status="ok").model_dump_json().encode()


@router.get(
    "/health",
    operation_id="health",
    summary="Liveness: the process answers",
    tags=["monitoring"],
    response_model=HealthStatus,
)
async def health() -> Response:
    """Always 200 while the process runs; never needs the API key."""
    return JSONBytes(_HEALTH_OK)


@router.get(
    "/ready",
    operation_id="ready",
    summary="Readiness: the model is loaded and answers",
    tags=["monitoring"],
    response_model=ReadyStatus,
    responses={503: {"model": ReadyStatus, "description": "Not ready; `reason` says why."}},
)
async def ready(runtime: RuntimeDep) -> Response:
    """200 once the model is loaded and its self-test prediction succeeded, 503 otherwise.
    Never needs the API key."""
    if runtime.service is None or runtime.not_ready_reason is not None:
        status = ReadyStatus(status="not ready", reason=runtime.not_ready_reason)
        return JSONBytes(status.model_dump_json().encode(), status_code=503)
    status = ReadyStatus(status="ready", model_version=runtime.service.model_version)
    return JSONBytes(status.model_dump_json().encode())
