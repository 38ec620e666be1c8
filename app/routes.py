"""The endpoints.

Prediction handlers are ``async def`` on purpose: the work is a few
microseconds of NumPy, far cheaper than the hop to a thread pool that FastAPI
makes for plain ``def`` handlers. They validate their raw JSON body in one
Pydantic call and return ready-made JSON bytes; ``app.openapi`` still documents
(and the tests check) the exact shapes.

Every handler reaches the app's :class:`Runtime` through :func:`runtime_of`, a
plain attribute read, not a ``Depends``: FastAPI resolves dependencies on every
request, a measurable share of a prediction (bench/PROFILE.md, "/predict: what
a request costs", framework costs; BENCHMARKS.md, "One way to reach the runtime").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.metrics import MetricsFormat, negotiate_metrics_format
from app.openapi import ERRORS, PROBE_ERRORS, operation, prediction_operation
from app.page import CONTENT_SECURITY_POLICY
from app.page import render as render_page
from app.runtime import Runtime, runtime_of
from app.schemas import (
    BatchExplainedPrediction,
    BatchPrediction,
    ExplainedPrediction,
    HealthStatus,
    MetricsReport,
    ModelCard,
    Prediction,
    ReadyStatus,
    RecordedMetrics,
)
from app.service import InvalidBodyError, PredictionService
from model.arrays import FloatArray


class JSONBytes(Response):
    """A response whose body is already JSON bytes (no re-encoding, no re-validation)."""

    media_type = "application/json"


router = APIRouter()


def loaded_service(runtime: Runtime) -> PredictionService:
    """The loaded model's service, or 503 (every prediction endpoint)."""
    if runtime.service is None:
        raise HTTPException(503, detail="The model is not loaded; see /ready.")
    return runtime.service


async def read_body(request: Request, *, required: bool = True) -> bytes:
    """The request body, read straight from the ASGI messages; empty and ``required``:
    FastAPI's 422 naming the body.

    The same as ``await request.body()`` without Starlette's stream machinery
    (an async generator and its bookkeeping), which cost /predict a few
    microseconds for what is nearly always one message.
    """
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if required and not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    return body


async def _parsed(request: Request, parse: Callable[[bytes], FloatArray]) -> FloatArray:
    """The validated body as a feature matrix, or FastAPI's 422 naming each field."""
    body = await read_body(request)
    try:
        return parse(body)
    except InvalidBodyError as exc:
        raise RequestValidationError(exc.errors) from None


#: A service method that scores validated rows: (JSON answer, positive count).
_Score = Callable[[PredictionService, FloatArray], tuple[bytes, int]]


async def _answer_one(request: Request, score: _Score) -> Response:
    """Validate one patient, score it, count it: /predict and /predict/explain differ
    only in how they score."""
    runtime = runtime_of(request)
    service = loaded_service(runtime)
    row = await _parsed(request, service.parse_one)
    payload, prediction = score(service, row)
    runtime.metrics.observe_prediction(row, prediction)
    return JSONBytes(payload)


async def _answer_batch(
    request: Request,
    parse: Callable[[PredictionService, bytes], FloatArray],
    score: _Score,
    *,
    in_thread: bool = False,
) -> Response:
    """The batch twin of :func:`_answer_one`; ``in_thread`` for scoring that costs
    milliseconds (explanations), so the event loop keeps answering probes."""
    runtime = runtime_of(request)
    service = loaded_service(runtime)
    rows = await _parsed(request, lambda body: parse(service, body))
    if in_thread:
        payload, n_positive = await run_in_threadpool(score, service, rows)
    else:
        payload, n_positive = score(service, rows)
    runtime.metrics.observe_batch(rows, n_positive)
    return JSONBytes(payload)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: echo such inputs as strings instead of failing."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, safe for inputs such as NaN that plain JSON cannot carry.

    (FastAPI's default handler answers a NaN input with a 500.)
    """
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))}
    )


@router.post(
    "/predict",
    **prediction_operation(
        "predict", "Predict heart disease for one patient", Prediction, "PatientFeatures"
    ),
)
async def predict(request: Request) -> Response:
    """Probability of heart disease for one patient and the class at the model's threshold.

    Age, sex and chest pain type are required; the other features may be ``null``
    (not measured) and are then marginalised over the training data. Each field's
    description gives its unit and accepted values; invalid input is answered with
    422 naming each field.
    """
    return await _answer_one(request, PredictionService.predict_one)


@router.post(
    "/predict/explain",
    **prediction_operation(
        "predict_explain",
        "Predict for one patient and explain the risk, feature by feature",
        ExplainedPrediction,
        "PatientFeatures",
    ),
)
async def predict_explain(request: Request) -> Response:
    """The /predict answer plus each feature's exact Shapley contribution to the probability.

    The contributions (interventional Shapley values over every coalition of the
    measured features, with the model's background rows) sum to ``probability -
    base_value``; they are listed largest magnitude first, each with its value and
    meaning. A separate operation rather than a flag on /predict, so that generated
    clients get one response type per call. 8,192 coalitions cost milliseconds of CPU,
    not microseconds (bench/results/predictor_micro.md).
    """
    return await _answer_one(request, PredictionService.explain_one)


@router.post(
    "/predict/explain/batch",
    **prediction_operation(
        "predict_explain_batch",
        "Predict for several patients and explain each risk, feature by feature",
        BatchExplainedPrediction,
        "ExplainBatchRequest",
    ),
)
async def predict_explain_batch(request: Request) -> Response:
    """One /predict/explain answer per patient, in request order.

    At most 64 patients (``MAX_EXPLAIN_BATCH``, or ``HEART_MAX_BATCH_SIZE`` if
    lower): each explanation costs milliseconds, so the work runs in a worker
    thread (NumPy releases the GIL) and the event loop keeps answering probes.
    Errors as in /predict/batch: ``loc`` gives the patient's index and the field.
    """
    return await _answer_batch(
        request,
        PredictionService.parse_explain_batch,
        PredictionService.explain_rows,
        in_thread=True,
    )


@router.post(
    "/predict/batch",
    **prediction_operation(
        "predict_batch",
        "Predict heart disease for many patients at once",
        BatchPrediction,
        "BatchRequest",
    ),
)
async def predict_batch(request: Request) -> Response:
    """Predictions for a list of patients, in request order, computed in one NumPy call.

    At most ``HEART_MAX_BATCH_SIZE`` patients (1000 by default). One invalid
    patient fails the whole request with 422; each error's ``loc`` gives the
    patient's index and the field, e.g. ``["body", "patients", 3, "age"]``.
    """
    return await _answer_batch(
        request, PredictionService.parse_batch, PredictionService.predict_rows
    )


@router.get(
    "/model", **operation("get_model", "Model card of the loaded model", ModelCard, tag="model")
)
async def get_model(request: Request) -> Response:
    """Version, creation time, architecture, hyperparameters, features and their
    meanings, training data checksum, decision threshold and evaluation metrics."""
    return JSONBytes(loaded_service(runtime_of(request)).model_card_json)


#: /metrics also answers in the two Prometheus formats.
_METRICS_FORMATS: Final[dict[int | str, dict[str, Any]]] = {
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
    **ERRORS,
}


@router.get(
    "/metrics",
    **operation(
        "get_metrics",
        "Model quality and live service metrics (JSON or Prometheus)",
        MetricsReport,
        _METRICS_FORMATS,
        "monitoring",
    ),
)
async def get_metrics(
    request: Request,
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
    runtime = runtime_of(request)
    fmt = negotiate_metrics_format(request.headers.get("accept"), format_)
    if fmt != "json":
        text, media_type = runtime.metrics.exposition(fmt)
        return Response(text, media_type=media_type)
    return JSONBytes(_metrics_report(runtime))


@router.get(
    "/metrics/summary",
    **operation(
        "get_metrics_summary",
        "Model quality and live service metrics as JSON",
        MetricsReport,
        tag="monitoring",
    ),
)
async def get_metrics_summary(request: Request) -> Response:
    """The JSON document of ``GET /metrics``, as an operation with one typed answer.

    Generated clients type ``/metrics`` as JSON *or* text (it also serves the
    Prometheus formats); this one is always ``MetricsReport``."""
    return JSONBytes(_metrics_report(runtime_of(request)))


def _metrics_report(runtime: Runtime) -> bytes:
    service = loaded_service(runtime)
    report = MetricsReport(
        model_version=service.model_version,
        training=RecordedMetrics(
            test=service.model_card.metrics.test,
            cross_validation=service.model_card.metrics.cross_validation,
            cross_validation_protocol=service.model_card.metrics.cross_validation_protocol,
        ),
        serving=runtime.metrics.serving_report(),
    )
    return report.model_dump_json().encode()


@router.get("/", include_in_schema=False)
async def calculator_page(request: Request) -> Response:
    """The risk calculator (app/page.py): open without the key, which it asks for instead."""
    page = render_page(key_required=runtime_of(request).settings.api_key is not None)
    return Response(
        page,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


_HEALTH_OK: Final[bytes] = HealthStatus(status="ok").model_dump_json().encode()


@router.get(
    "/health",
    **operation(
        "health", "Liveness: the process answers", HealthStatus, PROBE_ERRORS, "monitoring"
    ),
)
async def health() -> Response:
    """Always 200 while the process runs; never needs the API key."""
    return JSONBytes(_HEALTH_OK)


@router.get(
    "/ready",
    **operation(
        "ready",
        "Readiness: the model is loaded and answers",
        ReadyStatus,
        {
            **PROBE_ERRORS,
            503: {"model": ReadyStatus, "description": "Not ready; `reason` says why."},
        },
        "monitoring",
    ),
)
async def ready(request: Request) -> Response:
    """200 once the model is loaded and its self-test prediction succeeded, 503 otherwise.
    Never needs the API key."""
    runtime = runtime_of(request)
    if runtime.service is None or runtime.not_ready_reason is not None:
        status = ReadyStatus(status="not ready", reason=runtime.not_ready_reason)
        return JSONBytes(status.model_dump_json().encode(), status_code=503)
    status = ReadyStatus(status="ready", model_version=runtime.service.model_version)
    return JSONBytes(status.model_dump_json().encode())
