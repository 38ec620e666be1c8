"""Reference 2: FastAPI with the service's own body models and a constant reply.

It pays everything the framework costs for this request (routing, reading and
parsing the JSON body, validating it with the very ``PatientFeatures`` model
the service uses, dependency resolution, encoding the reply) but does no
prediction, no logging and no metrics. It is the ceiling the service is
measured against: "/predict at c=32 at least 0.7x this endpoint" (issue 6).

``/predict/batch`` validates with the service's ``BatchRequest`` (a list of
``PatientFeatures`` objects, FastAPI's ordinary way) and replies with 1000
constant predictions: how fast plain FastAPI could answer a batch without the
model.

``bytes_app`` is reference 2b: the same ``/predict`` replying pre-encoded
bytes. The issue does not say how reference 2 encodes its constant reply, and
the two readings differ by ~20% (``jsonable_encoder`` + ``JSONResponse``), so
the benchmark reports the stricter one too.

Run: ``uvicorn bench.ref_fastapi:app`` (or ``:bytes_app``)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

from app.schemas import BatchRequest, PatientFeatures
from bench.ref_asgi import BODY, CONSTANT

app = FastAPI(title="reference 2: bare FastAPI, constant reply")


@app.post("/predict", response_model=None)
async def predict(patient: PatientFeatures) -> dict[str, Any]:
    return CONSTANT


@app.post("/predict/batch", response_model=None)
async def predict_batch(batch: BatchRequest) -> dict[str, Any]:
    return {"predictions": [CONSTANT] * len(batch.patients)}


@app.get("/health", response_model=None)
async def health() -> dict[str, str]:
    return {"status": "ok"}


bytes_app = FastAPI(title="reference 2b: bare FastAPI, constant reply as pre-encoded bytes")
bytes_app.get("/health", response_model=None)(health)


@bytes_app.post("/predict", response_model=None)
async def predict_bytes(patient: PatientFeatures) -> Response:
    return Response(BODY, media_type="application/json")
