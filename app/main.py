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
import os
from collections.abc import AsyncIterator
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import disable_created_metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import oip
from app.columnar import TABLE_PATH
from app.columnar import router as columnar_router
from app.docs import add_offline_docs
from app.logs import APP_LOGGER, AccessLog, ensure_logging
from app.metrics import ServiceMetrics, multiprocess_dir
from app.middleware import ServiceMiddleware
from app.openapi import (
    CONTACT,
    DESCRIPTION,
    LICENSE,
    OPEN_PATHS,
    SERVERS,
    TAGS,
    TITLE,
    HeartAPI,
)
from app.routes import router
from app.runtime import Runtime
from app.settings import Settings
from model.cli_support import package_version

logger = logging.getLogger(APP_LOGGER)

#: How often each worker publishes its drift sums to the shared metrics.
FLUSH_INTERVAL_SECONDS: Final[float] = 1.0


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; with no ``settings``, read them from the ``HEART_*`` environment."""
    settings = settings or Settings.from_env()
    # `*_created` series double the exposition for figures nobody queries (and
    # multiprocess mode does not produce them): one way for both modes.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    ensure_logging(settings.log_level)
    runtime = Runtime(
        settings=settings,
        metrics=ServiceMetrics(
            multiprocess_dir=multiprocess_dir(), drift_window=settings.drift_min_patients
        ),
        access_log=AccessLog(enabled=settings.access_log),
    )
    app = HeartAPI(
        title=TITLE,
        version=package_version(),
        description=DESCRIPTION,
        servers=SERVERS,
        license_info=LICENSE,
        contact=CONTACT,
        openapi_tags=[*TAGS, oip.TAG_METADATA],
        lifespan=_lifespan,
        # A client that adds a trailing slash gets a 404, not a redirect: Starlette
        # builds the redirect from the request's Host header, so any client could
        # make the service point a browser at another host, and a redirected
        # POST is a second request for the same patient.
        redirect_slashes=False,
        # Served from the package's own files by app.docs: FastAPI's pages need a CDN.
        docs_url=None,
        redoc_url=None,
        # The service has its own metrics and logs; FastAPI's OpenTelemetry hooks
        # look up the global providers on every request even when none is set up.
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.api_key_required = settings.api_key is not None
    app.max_batch_size = settings.max_batch_size
    app.state.runtime = runtime
    add_routes(app, router, oip.router, columnar_router)
    add_offline_docs(app)
    # Both answer in the Open Inference Protocol's {"error": ...} below /v2, else as FastAPI does.
    app.add_exception_handler(RequestValidationError, oip.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, oip.http_error_handler)
    app.add_middleware(
        ServiceMiddleware,
        runtime=runtime,
        open_paths=OPEN_PATHS,
        routes=app.routes,
        # tritonclient sends no Content-Type, and binary tensors are not JSON;
        # /predict/table takes CSV and Arrow and checks its own media types.
        any_body_paths={oip.INFER_PATH, TABLE_PATH},
        is_protocol_path=oip.is_protocol_path,
    )
    return app


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Put the routers' routes on the app's own router, as if declared on the app.

    Since FastAPI 0.137, ``include_router`` keeps each router as one lazy node
    that matches a request twice (once to pick the node, once inside it) and
    adds a layer of scope bookkeeping, which bare FastAPI, our speed reference,
    does not pay (BENCHMARKS.md, "Routes on the app's own router"). Our routers
    carry their prefix and tags on their routes already and set no inclusion
    options (dependencies, body limits), so the routes are the same objects
    either way, and the OpenAPI document is unchanged (tested).
    """
    for included in routers:
        for route in included.routes:
            if not isinstance(route, APIRoute):  # e.g. a nested router: include it instead
                raise TypeError(f"{route!r} is not a path operation; use include_router")
            app.router.routes.append(route)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    runtime.start()
    # Everything allocated so far (modules, the app, the model) lives as long as the
    # process: frozen, it is no longer re-scanned by the collections that a batch's
    # garbage triggers (measured in bench/PROFILE.md, "gc.freeze").
    gc.collect()
    gc.freeze()
    flusher = asyncio.create_task(runtime.metrics.flush_every(FLUSH_INTERVAL_SECONDS))
    try:
        yield
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        runtime.metrics.close()
        runtime.access_log.flush()  # the last loop turn's joined lines, if any
        logger.info("stopped", extra={"pid": os.getpid()})
