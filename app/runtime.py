"""Shared state of one app instance, and the FastAPI dependencies that hand it out.

The middleware is built before the lifespan runs, while the model is only
loaded by the lifespan, so both hold this object and the lifespan fills in
``service`` when the artifact has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.logs import AccessLog
from app.metrics import ServiceMetrics
from app.service import PredictionService
from app.settings import Settings


@dataclass(eq=False)
class Runtime:
    settings: Settings
    metrics: ServiceMetrics
    access_log: AccessLog
    service: PredictionService | None = None
    #: Why the service is not ready (None once the model loaded and its self-test passed).
    not_ready_reason: str | None = "model not loaded yet"
    #: Set when start-up fails, so the lifespan failure is reported by our one log line.
    startup_error: str | None = None


async def get_runtime(request: Request) -> Runtime:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool,
    and that hop would cost more than the whole prediction."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def runtime_of(request: Request) -> Runtime:
    """The same object for the two prediction handlers, without a dependency.

    Resolving even a trivial ``Depends`` costs about 10 us per request in
    FastAPI 0.165 (measured with cProfile and an in-process ASGI loop), a
    tenth of the whole /predict budget; the other endpoints use ``RuntimeDep``.
    """
    runtime: Runtime = request.app.state.runtime
    return runtime
