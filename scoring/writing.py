"""The scores as Arrow, and where they go: a CSV or Parquet file that appears only once
complete, or the bytes of an answer to ``POST /predict/table``.

Both write the same score columns, null for a refused row; a file also has the
key columns (or the row number) to join it by, and is written under a temporary
name and renamed when complete, so a run that fails leaves nothing that looks
finished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from model.atomic import CannotWriteError, finish_partial
from model.predictor import Predictor
from scoring.core import PREDICTION, Scores, output_columns
from scoring.formats import Format
from scoring.reading import Chunk

#: The row-number column written when no key column is given, so output rows can be joined.
ROW = "row"
#: The compression each end of a CSV name (:data:`scoring.formats.CSV_NAMES`) names, for
#: writing one.
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def to_arrow(values: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """A float64 or int64 NumPy column as Arrow, null where ``valid`` is False.

    Built from buffers rather than with ``pa.array``, which imports pandas.
    """
    kind = {np.dtype(np.float64): pa.float64(), np.dtype(np.int64): pa.int64()}[values.dtype]
    values = np.ascontiguousarray(values)
    bitmap = None
    if valid is not None and not bool(valid.all()):
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)])


def output_batch(chunk: Chunk, key_names: Sequence[str], scores: Scores) -> pa.RecordBatch:
    """The key columns (or the row number) then the scores; refused rows have null scores."""
    arrays: list[pa.Array] = []
    names: list[str] = []
    if key_names:
        arrays.extend(chunk.keys)
        names.extend(key_names)
    else:
        arrays.append(to_arrow(np.arange(chunk.offset, chunk.offset + chunk.n, dtype=np.int64)))
        names.append(ROW)
    scored = scores_batch(scores)
    arrays.extend(scored.columns)
    names.extend(scored.schema.names)
    return pa.RecordBatch.from_arrays(
        [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays],
        names=names,
    )


def scores_batch(scores: Scores) -> pa.RecordBatch:
    """The score columns alone; refused rows have null scores."""
    columns = scores.columns()
    return pa.RecordBatch.from_arrays(
        [to_arrow(values, scores.valid) for values in columns.values()], names=list(columns)
    )


def serialize(batch: pa.RecordBatch, fmt: Literal["csv", "arrow"]) -> bytes:
    """A result batch as CSV text or an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    if fmt == "arrow":
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
    else:
        pacsv.write_csv(batch, sink)
    return bytes(sink.getvalue())


def output_stream(tmp: Path, path: Path) -> pa.NativeFile:
    """A stream writing ``tmp``, compressed as ``path``'s name says (``.csv.gz``, ...): the
    temporary name ends in ``.partial``, so pyarrow's detection by name cannot be used."""
    return pa.output_stream(tmp, compression=_CODECS.get(path.suffix.lower()))


class Writer:
    """CSV or Parquet output, written to a temporary name and renamed when complete.

    A run that fails half way leaves no output that looks finished. A CSV output named
    ``.csv.gz`` (``.bz2``, ``.zst``) is compressed so, as the input of that name is read:
    written as plain text under such a name, it could not be read back by its name.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: Format) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self._sink: pa.NativeFile | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.fmt == "parquet":
                    # Dictionaries only help the 0/1 class; on ids and probabilities pyarrow
                    # builds one, finds it too large and falls back: 5x the write time.
                    self._writer = pq.ParquetWriter(
                        self._tmp, batch.schema, compression="snappy", use_dictionary=[PREDICTION]
                    )
                else:
                    self._sink = output_stream(self._tmp, self.path)
                    self._writer = pacsv.CSVWriter(self._sink, batch.schema)
            except OSError as exc:
                raise CannotWriteError(self.path, exc) from None
        try:
            self._writer.write_batch(batch)
        except OSError as exc:  # a full disk, a quota
            raise CannotWriteError(self.path, exc) from None

    def close(self, *, success: bool) -> None:
        # Nothing was written when the run failed before its first batch.
        finish_partial(
            self._tmp, self.path, self._close_streams, success=success and self._tmp.exists()
        )

    def _close_streams(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()  # the writer leaves a stream it was given open


def empty_batch(
    path: str | os.PathLike[str], fmt: Format, keys: Sequence[str], predictor: Predictor
) -> pa.RecordBatch:
    """The output of an input without rows: the right columns, no rows, so a file still exists.

    The keys have the types a file with rows gives them: Parquet's declared ones, and
    text for CSV, since every read of a CSV key is text
    (:func:`scoring.csv_parsing.csv_convert`)."""
    if fmt == "parquet":
        schema = pq.ParquetFile(path).schema_arrow
        types = {name: schema.field(name).type for name in keys}
    else:
        types = {name: pa.string() for name in keys}
    fields = [pa.field(k, types[k]) for k in keys] or [pa.field(ROW, pa.int64())]
    for name in output_columns(predictor):
        fields.append(pa.field(name, pa.int64() if name == PREDICTION else pa.float64()))
    return pa.RecordBatch.from_pylist([], schema=pa.schema(fields))
