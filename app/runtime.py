"""Shared state of one app instance, and how a handler reaches it.

The middleware is built before the lifespan runs, while the model is only
loaded by the lifespan, so both hold this object and :meth:`Runtime.start`
(called by the lifespan) fills in ``service`` when the artifact has loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from fastapi import Request

from app.logs import APP_LOGGER, AccessLog
from app.metrics import ServiceMetrics
from app.service import PredictionService, load_service
from app.settings import Settings, StartupError

logger = logging.getLogger(APP_LOGGER)


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

    @property
    def ready(self) -> bool:
        """The model is loaded and passed its self-test: what every readiness probe answers."""
        return self.service is not None and self.not_ready_reason is None

    def start(self) -> None:
        """Load the model and check it answers; raise :class:`StartupError` if unusable.

        A model that loads but fails its self-test is kept and reported by
        ``/ready`` (503 with the reason), so the failure is visible without logs.
        """
        try:
            service = load_service(self.settings)
        except StartupError as exc:
            self.startup_error = f"cannot start: {exc}"
            logger.critical(self.startup_error)
            raise
        self.service = service
        predictor = service.predictor
        self.metrics.bind_model(
            service.model_version, predictor.feature_mean, predictor.feature_scale
        )
        self.not_ready_reason = service.self_test()
        if self.not_ready_reason:
            logger.error("not ready: %s", self.not_ready_reason)
        logger.info(
            "model loaded",
            extra={
                "model_version": service.model_version,
                "model_path": str(self.settings.model_path),
                "pid": os.getpid(),
            },
        )
        if self.settings.api_key is None:
            logger.warning(
                "no API key configured (HEART_API_KEY): every endpoint is open to anyone "
                "who can reach this port"
            )


def runtime_of(request: Request) -> Runtime:
    """The app's runtime, for every handler: a plain read, not a ``Depends``.

    A FastAPI dependency is resolved on every request, which costs more than
    this read on the prediction path (BENCHMARKS.md, "One way to reach the
    runtime"), and one way for all handlers keeps them alike.
    """
    runtime: Runtime = request.app.state.runtime
    return runtime
