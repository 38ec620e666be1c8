"""The application factory: ``create_app(settings)`` builds a ready-to-serve FastAPI app.

Start-up (the lifespan) loads the artifact once. If it is missing, corrupt or
does not match this code, the service logs one line that says what is wrong
and how to fix it, and start-up fails: uvicorn exits non-zero, it never serves
without a model.

Run it with ``heart-api serve`` (or ``python -m app``), or with any ASGI server
as ``uvicorn --factory app.main:create_app`` / ``uvicorn app.asgi:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from prometheus_client import disable_created_metrics
from pydantic import ValidationError

from app.logs import APP_LOGGER, AccessLog, ensure_logging
from app.metrics import ServiceMetrics
from app.middleware import ServiceMiddleware
from app.routes import TAGS, router
from app.runtime import Runtime
from app.schemas import PatientFeatures, batch_request_model
from app.service import PredictionService
from app.settings import Settings
from model.artifact import RETRAIN_HINT, ArtifactError, load_artifact
from model.features import markdown_table

logger = logging.getLogger(APP_LOGGER)

OPEN_PATHS: Final[frozenset[str]] = frozenset({"/health", "/ready"})
SECURITY_SCHEME: Final[str] = "APIKeyHeader"
#: The same key as a bearer token, for clients that cannot set custom headers (Prometheus).
BEARER_SCHEME: Final[str] = "BearerAPIKey"
#: How often each worker publishes its drift sums to the shared metrics.
FLUSH_INTERVAL_SECONDS: Final[float] = 1.0

DESCRIPTION: Final[str] = f"""
Estimates the risk of heart disease from 13 clinical features (UCI Statlog Heart
data set) with a small neural network.

Send one patient to `POST /predict` or up to 1000 to `POST /predict/batch`.
Every feature is required; each one's description gives its unit and accepted
values, and invalid input is refused with 422 naming the field.

When the server sets `HEART_API_KEY`, every endpoint except `/health` and
`/ready` requires it in the `X-API-Key` header (or as `Authorization: Bearer <key>`).

{markdown_table()}
"""


def _package_version() -> str:
    try:
        return version("heart-risk")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0"


class StartupError(RuntimeError):
    """The service cannot serve (no usable model); the message says how to fix it."""


class HeartAPI(FastAPI):
    """FastAPI with the parts of the OpenAPI document FastAPI cannot infer."""

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

    The prediction endpoints read their bodies themselves (for speed), so
    FastAPI does not know their models; the schemas added here are the very
    models that validate them.
    """
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (PatientFeatures, batch_request_model(max_batch_size)):
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
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = security


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


def _multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return None
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        raise StartupError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
            "set it before the process starts (heart-api serve does this for you)"
        )
    return path


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; with no ``settings``, read them from the ``HEART_*`` environment."""
    settings = settings or Settings.from_env()
    # `*_created` series double the exposition for figures nobody queries (and
    # multiprocess mode does not produce them): one way for both modes.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    ensure_logging(settings.log_level)
    runtime = Runtime(
        settings=settings,
        metrics=ServiceMetrics(multiprocess_dir=_multiprocess_dir()),
        access_log=AccessLog(enabled=settings.access_log),
    )
    app = HeartAPI(
        title="Heart disease risk API",
        version=_package_version(),
        description=DESCRIPTION.strip(),
        openapi_tags=TAGS,
        lifespan=_lifespan,
        # The service has its own metrics and logs; FastAPI's OpenTelemetry hooks
        # look up the global providers on every request even when none is set up.
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.api_key_required = settings.api_key is not None
    app.max_batch_size = settings.max_batch_size
    app.state.runtime = runtime
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # FastAPI keeps included routers as one entry; iterate the routes they expand to.
    routes = [context.route for context in iter_route_contexts(app.routes)]
    known_paths = {path for route in routes if (path := getattr(route, "path", None))}
    body_paths = {
        getattr(route, "path", "")
        for route in routes
        if "POST" in (getattr(route, "methods", None) or ())
    }
    app.add_middleware(
        ServiceMiddleware,
        runtime=runtime,
        open_paths=OPEN_PATHS,
        known_paths=known_paths,
        body_paths=body_paths,
    )
    return app


def load_service(settings: Settings) -> PredictionService:
    """Load the artifact and derive the service from it, or raise :class:`StartupError`."""
    try:
        predictor = load_artifact(settings.model_path)
        return PredictionService(predictor, max_batch_size=settings.max_batch_size)
    except ArtifactError as exc:
        raise StartupError(str(exc)) from None
    except ValidationError as exc:
        raise StartupError(
            f"model artifact at {settings.model_path} has metadata this service cannot "
            f"read ({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} at "
            f"{'.'.join(map(str, exc.errors()[0]['loc']))}): {RETRAIN_HINT}"
        ) from None


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    settings = runtime.settings
    try:
        service = load_service(settings)
    except StartupError as exc:
        runtime.startup_error = f"cannot start: {exc}"
        logger.critical(runtime.startup_error)
        raise
    runtime.service = service
    runtime.metrics.bind_model(
        service.model_version,
        service.predictor.feature_mean,
        service.predictor.feature_scale,
    )
    runtime.not_ready_reason = service.self_test()
    if runtime.not_ready_reason:
        logger.error("not ready: %s", runtime.not_ready_reason)
    logger.info(
        "model loaded",
        extra={
            "model_version": service.model_version,
            "model_path": str(settings.model_path),
            "pid": os.getpid(),
        },
    )
    if settings.api_key is None:
        logger.warning(
            "no API key configured (HEART_API_KEY): every endpoint is open to anyone "
            "who can reach this port"
        )
    # Everything allocated so far (modules, the app, the model) lives as long as the
    # process: moving it out of the collector's generations makes the collections
    # that request garbage triggers cheaper (0.6 ms less per 1000-patient batch).
    gc.collect()
    gc.freeze()
    flusher = asyncio.create_task(_flush_periodically(runtime.metrics))
    try:
        yield
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        runtime.metrics.close()
        logger.info("stopped", extra={"pid": os.getpid()})


async def _flush_periodically(metrics: ServiceMetrics) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
        metrics.flush()
