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

Run: ``uvicorn bench.ref_fastapi:app``
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI

from app.schemas import BatchRequest, PatientFeatures

CONSTANT: Final[dict[str, Any]] = {
    "probability": 0.5,
    "prediction": 1,
    "label": "presence of heart disease",
    "threshold": 0.5,
    "model_version": "reference",
}

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
