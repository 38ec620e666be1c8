"""The same-run references the service is measured against: what a request costs without us.

* ``raw_asgi`` (reference 1): drains the body and answers a constant
  prediction-shaped document: the ceiling for every server.
* ``fastapi_app`` (reference 2): FastAPI with the service's own body models and a
  constant reply: every framework cost (routing, validating, encoding) but no
  prediction, logging or metrics. Issue 6 wants ``/predict`` at c=32 >= 0.7x this.
* ``fastapi_bytes`` (reference 2b): the same replying pre-encoded bytes, the
  stricter reading of reference 2 (the two differ by ~20%).

Run one with ``uvicorn bench.references:raw_asgi`` (or ``:fastapi_app``, ``:fastapi_bytes``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from fastapi import FastAPI, Response

from app.schemas import BatchRequest, PatientFeatures

Message = MutableMapping[str, Any]

#: The reply of every reference: a prediction's shape, no model behind it.
CONSTANT: Final[dict[str, Any]] = {
    "probability": 0.5,
    "prediction": 1,
    "label": "presence of heart disease",
    "threshold": 0.5,
    "model_version": "reference",
}
BODY = json.dumps(CONSTANT, separators=(",", ":")).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def raw_asgi(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    while scope["type"] == "lifespan":  # startup, then shutdown: each acknowledged
        kind = (await receive())["type"]
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return
    while (await receive()).get("more_body", False):  # drain the body, as any endpoint must
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


fastapi_app = FastAPI(title="reference 2: bare FastAPI, constant reply")
fastapi_bytes = FastAPI(title="reference 2b: bare FastAPI, constant reply as pre-encoded bytes")


@fastapi_app.post("/predict", response_model=None)
async def predict(patient: PatientFeatures) -> dict[str, Any]:
    return CONSTANT


@fastapi_app.post("/predict/batch", response_model=None)
async def predict_batch(batch: BatchRequest) -> dict[str, Any]:
    return {"predictions": [CONSTANT] * len(batch.patients)}


@fastapi_bytes.post("/predict", response_model=None)
async def predict_bytes(patient: PatientFeatures) -> Response:
    return Response(BODY, media_type="application/json")


@fastapi_app.get("/health", response_model=None)
@fastapi_bytes.get("/health", response_model=None)
async def health() -> dict[str, str]:
    return {"status": "ok"}
