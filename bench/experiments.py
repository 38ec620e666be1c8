"""Small FastAPI apps that isolate one framework cost each, for ``bench.ablation --apps``.

All of them validate the same ``PatientFeatures`` body and answer a constant
prediction, ``async def``, so the differences between them are what one way of
doing a step costs compared with another:

- ``param_dict``: reference 2 itself: the body model as a parameter, a dict reply
  (FastAPI's ``jsonable_encoder`` + ``JSONResponse``).
- ``param_bytes``: the body model as a parameter, a pre-encoded bytes reply:
  what FastAPI's reply encoding costs.
- ``raw_body``: read the body and ``PatientFeatures.model_validate_json`` it
  (one Rust pass: JSON parsing and validation), bytes reply: what FastAPI's
  body handling (content-type parsing, ``json.loads``, dependency solving,
  ``validate_python``) costs compared with validating the bytes directly.
- ``raw_body_dep``: ``raw_body`` plus one trivial ``async`` dependency: the cost
  of a ``Depends``.
- ``param_no_telemetry``: ``param_dict`` with FastAPI's native telemetry switched
  off (``FastAPI(telemetry=...)``): what its per-request provider checks cost.

Run one: ``uvicorn bench.experiments:raw_body``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.schemas import PatientFeatures
from bench.ref_asgi import BODY
from bench.ref_fastapi import CONSTANT

HEADERS: Final[dict[str, str]] = {"content-type": "application/json"}


def _health(app: FastAPI) -> FastAPI:
    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', headers=HEADERS)

    return app


param_dict = _health(FastAPI())


@param_dict.post("/predict", response_model=None)
async def predict_param_dict(patient: PatientFeatures) -> dict[str, Any]:
    return CONSTANT


param_bytes = _health(FastAPI())


@param_bytes.post("/predict", response_model=None)
async def predict_param_bytes(patient: PatientFeatures) -> Response:
    return Response(BODY, headers=HEADERS)


raw_body = _health(FastAPI())


async def _validated(request: Request) -> Any:
    try:
        return PatientFeatures.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@raw_body.post("/predict", response_model=None)
async def predict_raw_body(request: Request) -> Response:
    await _validated(request)
    return Response(BODY, headers=HEADERS)


raw_body_dep = _health(FastAPI())


async def _state(request: Request) -> Any:
    return request.app.state


@raw_body_dep.post("/predict", response_model=None)
async def predict_raw_body_dep(
    request: Request, state: Annotated[Any, Depends(_state)]
) -> Response:
    await _validated(request)
    return Response(BODY, headers=HEADERS)


param_no_telemetry = _health(FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False}))


@param_no_telemetry.post("/predict", response_model=None)
async def predict_param_no_telemetry(patient: PatientFeatures) -> dict[str, Any]:
    return CONSTANT


APPS: Final[tuple[str, ...]] = (
    "param_dict",
    "param_bytes",
    "raw_body",
    "raw_body_dep",
    "param_no_telemetry",
)
