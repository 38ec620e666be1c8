"""``score_frame(df) -> df``: one pandas partition in, its scores out, for Spark and Dask.

A data platform already splits a registry into partitions and runs a function
on each; this is that function. It validates and scores exactly as
``heart-score`` does (same validator, same ``scoring.core`` call), so the
numbers agree to the bit.

Shipping the model once. The artifact travels inside a :class:`ShippedModel`:
hand the engine *one* reference to it (``dask.delayed`` in :func:`score_dask`,
``SparkContext.broadcast`` for ``mapInPandas``) and each worker process
receives and unpickles it once, however many partitions it scores.
``times_received()`` counts those unpicklings in the current process, which is
how the test proves it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from model.artifact import load_artifact
from model.columns import MISSING_MARKERS, ColumnBatch, require_columns, validate_columns
from model.features import FEATURE_NAMES
from model.predictor import Predictor
from scoring.core import PREDICTION, output_columns, score_batch

#: Per refused row, what was wrong ("column: reason; ..."); null for a scored row.
ERROR = "error"

_received = 0


class ShippedModel:
    """A predictor packaged for the trip to the workers; counts its arrivals."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def __getstate__(self) -> dict[str, Any]:
        return {"predictor": self.predictor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        global _received
        _received += 1
        self.predictor = state["predictor"]


def times_received() -> int:
    """How many times this process has unpickled a :class:`ShippedModel`."""
    return _received


Model = Predictor | ShippedModel | str | os.PathLike[str] | None


def score_frame(df: pd.DataFrame, model: Model = None, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Score one partition: ``keys`` columns, probability, prediction, [interval], error.

    ``model`` is a :class:`Predictor`, a :class:`ShippedModel`, or an artifact
    path loaded once per process (default ``HEART_MODEL_PATH``, else
    ``artifacts/model.joblib``: a path every worker can read). Refused rows are
    kept, with null scores and the reasons in ``error``, so the output has one
    row per input row in input order (the index is kept too).
    """
    predictor = resolve(model)
    # pandas answers df[name] for a repeated name with a frame of every copy.
    require_columns([str(c) for c in df.columns], also=keys)
    features: dict[str, npt.NDArray[np.float64]] = {}
    not_numbers: dict[str, npt.NDArray[np.bool_]] = {}
    for name in FEATURE_NAMES:
        if name not in df.columns:
            continue
        features[name], text = _numeric(df[name])
        if text is not None:
            not_numbers[name] = text
    batch = validate_columns(features, not_numbers=not_numbers)
    scores = score_batch(predictor, batch)
    out = pd.DataFrame({k: df[k] for k in keys}, index=df.index)
    for name, values in scores.columns().items():
        if name == PREDICTION:
            out[name] = pd.array(values, dtype="Int64")
            if not batch.all_valid:
                out.loc[~batch.valid, name] = pd.NA
        else:
            out[name] = values
    out[ERROR] = pd.array(_reasons(batch, len(df)), dtype="string")
    return out


def score_frames(
    frames: Iterable[pd.DataFrame], model: Model = None, keys: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """The iterator form Spark's ``mapInPandas`` calls: each batch through :func:`score_frame`."""
    shipped = getattr(model, "value", model)  # a Spark Broadcast: read it once per task
    for df in frames:
        yield score_frame(df, shipped, keys)


def empty_output(predictor: Predictor, key_dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """A zero-row frame with the output's columns and types (Dask's ``meta``)."""
    columns: dict[str, Any] = {k: pd.Series(dtype=t) for k, t in key_dtypes.items()}
    for name in output_columns(predictor):
        columns[name] = pd.Series(dtype="Int64" if name == PREDICTION else "float64")
    columns[ERROR] = pd.Series(dtype="string")
    return pd.DataFrame(columns)


def spark_schema(predictor: Predictor, key_types: Mapping[str, str]) -> str:
    """The DDL string ``mapInPandas`` needs, e.g. ``"id bigint, probability double, ..."``."""
    parts = [f"{k} {t}" for k, t in key_types.items()]
    for name in output_columns(predictor):
        parts.append(f"{name} {'bigint' if name == PREDICTION else 'double'}")
    parts.append(f"{ERROR} string")
    return ", ".join(parts)


def score_dask(ddf: Any, model: Model = None, keys: Sequence[str] = ()) -> Any:
    """Score a Dask DataFrame lazily, the model shipped to each worker once.

    The model enters the graph as one ``dask.delayed`` value that every
    partition task depends on: the scheduler moves it to each worker once and
    the tasks share it, instead of pickling it into every task.
    """
    from dask.delayed import delayed

    predictor = resolve(model)
    shipped = delayed(ShippedModel(predictor), pure=True)
    meta = empty_output(predictor, {k: ddf.dtypes[k] for k in keys})
    return ddf.map_partitions(score_frame, shipped, keys=tuple(keys), meta=meta)


def resolve(model: Model) -> Predictor:
    """The predictor behind any accepted ``model`` argument."""
    if isinstance(model, ShippedModel):
        return model.predictor
    if isinstance(model, Predictor):
        return model
    if model is None:
        model = os.environ.get("HEART_MODEL_PATH", "artifacts/model.joblib")
    return _load(os.fspath(model))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Predictor:
    return load_artifact(path)


def _numeric(column: pd.Series) -> tuple[npt.NDArray[np.float64], Any]:
    """Values as float64 with NaN for empty cells, and a mask of cells that are not numbers.

    As :mod:`scoring.arrow_columns` reads a file's columns: a NaN float is pandas' own
    "missing", and so are null and the text markers ``""``, ``NA`` and ``null``; other
    text, including ``"NaN"`` and ``"inf"``, and booleans are refused as not numbers.
    """
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.full(len(column), np.nan), column.notna().to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), None
    parsed = pd.to_numeric(column, errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    marker = column.astype("string").str.strip().isin(MISSING_MARKERS)
    blank = (column.isna() | marker).to_numpy(dtype=bool, na_value=True)
    values[blank] = np.nan
    text = ~blank & ~np.isfinite(values)
    text |= column.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    values[text] = np.nan
    return values, text if text.any() else None


def _reasons(batch: ColumnBatch, n: int) -> list[str | None]:
    reasons: list[list[str]] = [[] for _ in range(n)] if batch.problems else []
    for p in batch.problems:
        reasons[p.row].append(f"{p.column}: {p.reason}")
    if not batch.problems:
        return [None] * n
    return ["; ".join(r) if r else None for r in reasons]
