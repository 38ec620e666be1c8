"""Request bodies for the load benchmarks: real patients from the Statlog data.

Cycling through the 270 real patients (rather than POSTing one body forever)
keeps the benchmark honest about the work per request: nothing can be cached,
and the drift monitor sees a realistic stream of values. Body files hold one
JSON body per line, as ``bench/post.lua`` reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.features import FEATURES
from training.data import load_dataset

OIP_INFER = "/v2/models/heart/infer"


@dataclass(frozen=True)
class Scenario:
    """A kind of request: a path (query allowed) and a file of bodies, one JSON body a line."""

    name: str
    path: str
    bodies: Path
    rows_per_request: int = 1
    #: Only the service (and its image) answer it, e.g. a query parameter of ours.
    service_only: bool = False


def patients(n: int, *, offset: int = 0) -> list[dict[str, int | float]]:
    """``n`` real patients from row ``offset`` on, wrapping around, as a client sends them."""
    x, _ = load_dataset()
    found = []
    for i in range(n):
        pairs = zip(FEATURES, (float(v) for v in x[(offset + i) % len(x)]), strict=True)
        found.append({f.name: int(v) if f.is_coded or v.is_integer() else v for f, v in pairs})
    return found


def write_bodies(path: Path, bodies: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


def write_single_bodies(path: Path) -> Path:
    """Every patient of the data set as a one-patient body, one per line."""
    return write_bodies(path, patients(len(load_dataset()[0])))


def write_batch_bodies(path: Path, *, batch_size: int, n_bodies: int = 4) -> Path:
    """``n_bodies`` different ``{"patients": [...]}`` bodies of ``batch_size`` patients each."""
    bodies = ({"patients": patients(batch_size, offset=k * 67)} for k in range(n_bodies))
    return write_bodies(path, bodies)


def write_oip_bodies(path: Path, *, batch_size: int, n_bodies: int = 4) -> Path:
    """The batch bodies' patients as Open Inference Protocol requests: one ``features`` matrix.

    Same rows as :func:`write_batch_bodies`, so ``/predict/batch`` and the
    protocol's ``infer`` are compared on identical work.
    """
    x, _ = load_dataset()
    bodies = []
    for k in range(n_bodies):
        rows = [x[(k * 67 + i) % len(x)].tolist() for i in range(batch_size)]
        tensor = {"name": "features", "shape": [batch_size, x.shape[1]], "datatype": "FP64"}
        bodies.append({"inputs": [{**tensor, "data": rows}]})
    return write_bodies(path, bodies)


def first_body(scenario: Scenario) -> bytes:
    """The first body of a scenario, for the pre-flight check of each server."""
    with scenario.bodies.open("rb") as fh:
        return fh.readline().rstrip(b"\n")


def standard_scenarios(directory: Path, batch_size: int) -> list[Scenario]:
    """``/predict`` with every real patient, ``/predict/batch`` with a few large batches, and
    the same batches through the Open Inference Protocol (the service only)."""
    single = write_single_bodies(directory / "predict.jsonl")
    batches = write_batch_bodies(directory / "batch.jsonl", batch_size=batch_size)
    tensors = write_oip_bodies(directory / "oip.jsonl", batch_size=batch_size)
    return [
        Scenario("predict", "/predict", single),
        Scenario("batch", "/predict/batch", batches, batch_size),
        Scenario("oip", OIP_INFER, tensors, batch_size, service_only=True),
    ]
