"""``heart-score``'s input, CSV or Parquet, in chunks through pyarrow: memory stays flat
whatever the file size.

pyarrow parses CSV and decodes Parquet in C++ and hands over columns, which is
what the validator and the network want; a chunk is a few hundred thousand
rows at most, so peak memory depends on the chunk, not on the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from model.columns import not_csv_text, other_separator, require_columns, separator_remedy
from model.features import FEATURE_NAMES
from scoring.arrow_columns import decoded_names, feature_columns, is_utf8_text, schema_names
from scoring.csv_parsing import (
    COMMA,
    CSV_BLOCK_BYTES,
    HEAD_BYTES,
    CsvDialect,
    csv_convert,
    csv_error,
)
from scoring.errors import InputError, TextInNumbersError, key_not_utf8, without_values
from scoring.formats import Format
from scoring.uploads import parse_body

#: Rows per chunk: large enough that per-chunk overhead vanishes, small enough for flat memory.
CHUNK_ROWS = 131_072


@dataclass
class Chunk:
    """One chunk of the input: its feature columns as float arrays, its key columns as Arrow."""

    offset: int
    n: int
    features: dict[str, npt.NDArray[np.float64]]
    not_numbers: dict[str, npt.NDArray[np.bool_]]
    keys: list[pa.Array]


def read_chunks(
    path: str | os.PathLike[str],
    fmt: Format,
    keys: Sequence[str] = (),
    *,
    chunk_rows: int = CHUNK_ROWS,
    threads: bool = True,
    text_features: bool = False,
    dialect: CsvDialect = COMMA,
) -> Iterator[Chunk]:
    """Yield the input chunk by chunk, feature columns as float64 (NaN where empty).

    Key columns keep a Parquet file's declared types; from CSV they are text, as
    written (see :func:`csv_convert`). ``text_features`` reads CSV feature columns
    as text and parses them cell by cell, so a cell like ``"abc"`` is reported
    instead of stopping the read; the caller switches to it only when the fast read
    hits such a cell. ``dialect`` is how a CSV input is written (a Parquet file's
    columns are typed and need none).
    """
    header = _column_names(path, fmt, dialect)
    names = decoded_names(header)
    unknown = [k for k in keys if k not in names]
    require_columns(names, also=[k for k in keys if k not in unknown])
    if unknown:
        raise InputError(f"key column(s) not in the input: {', '.join(unknown)}")
    wanted = list(dict.fromkeys([*keys, *FEATURE_NAMES]))
    offset = 0
    batches = _batches(path, fmt, wanted, keys, header, chunk_rows, threads, text_features, dialect)
    for batch in batches:
        # The dialect is the CSV file's: a Parquet text column is read as any text is.
        decimal = dialect.decimal if fmt == "csv" else "."
        features, not_numbers = feature_columns(batch, from_text=fmt == "csv", decimal=decimal)
        key_arrays = [batch.column(k) for k in keys]
        if fmt == "parquet":  # pyarrow checked a CSV key's text as it read it
            for name, array in zip(keys, key_arrays, strict=True):
                if not is_utf8_text(array):
                    raise key_not_utf8(f"cannot read {path} as parquet", name)
        yield Chunk(offset, batch.num_rows, features, not_numbers, key_arrays)
        offset += batch.num_rows


def count_rows(path: str | os.PathLike[str], fmt: Format) -> int | None:
    """Rows in the input when that is known without reading it (Parquet), else ``None``
    (also for a file that cannot be opened: reading it says why, see :func:`read_chunks`)."""
    if fmt == "parquet":
        try:
            return int(_parquet_file(path).metadata.num_rows)
        except InputError:
            return None
    return None


def _parquet_file(path: str | os.PathLike[str], **options: Any) -> pq.ParquetFile:
    """``pq.ParquetFile``, or :class:`InputError` saying why the file cannot be opened.

    Opening decodes every column's name (pyarrow maps them all for ``columns=``), so
    one name that is not UTF-8, which the Parquet format does not allow, makes the
    file unreadable here, unlike an extra CSV or Arrow column (:func:`schema_names`).
    """
    try:
        return pq.ParquetFile(path, **options)
    except UnicodeDecodeError:
        raise InputError(
            f"cannot read {path} as parquet: a column name is not UTF-8 text, which "
            "Parquet requires; rename the column where the file is written"
        ) from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path} as parquet: {without_values(exc)}") from None


def _check_file_head(path: str | os.PathLike[str], dialect: CsvDialect) -> None:
    """Refuse a file named as CSV whose first bytes say it is another format, or whose
    header uses another separator than ``dialect``'s, saying what to do."""
    try:
        # As open_csv reads a path: decompressed by its extension (.csv.gz, ...).
        with pa.input_stream(os.fspath(path), compression="detect") as stream:
            head = stream.read(HEAD_BYTES)
    except (pa.ArrowException, OSError):
        return  # reading it as CSV says why
    where = f"cannot read {path} as csv"
    kind = not_csv_text(head)
    if kind is not None:
        if kind.csv_name == ".parquet":
            fix = "name it .parquet, or pass --input-format parquet"
        elif kind.csv_name is not None:
            fix = f"name it {kind.csv_name} (read so, decompressed)"
        else:
            fix = "save the table as CSV (UTF-8) or Parquet"
        raise InputError(f"{where}: it is {kind.what}: {fix}")
    sep = other_separator(head, dialect.delimiter)
    if sep is not None:
        raise InputError(f"{where}: its header {separator_remedy(sep, dialect.delimiter)}")


def _column_names(
    path: str | os.PathLike[str], fmt: Format, dialect: CsvDialect = COMMA
) -> list[str | None]:
    """The input's columns, as :func:`schema_names` gives them."""
    if fmt == "parquet":
        return schema_names(_parquet_file(path).schema_arrow)
    _check_file_head(path, dialect)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 16),
            parse_options=dialect.parse_options(),
        )
        try:
            return schema_names(reader.schema)
        finally:
            reader.close()
    except (OSError, pa.ArrowException) as exc:
        header = _header_alone(path, exc, dialect)
        if header is not None:
            return schema_names(header.schema)
        raise csv_error(
            exc, lambda: os.fspath(path), f"cannot read {path} as csv", dialect=dialect
        ) from None


def _batches(
    path: str | os.PathLike[str],
    fmt: Format,
    columns: list[str],
    keys: Sequence[str],
    header: Sequence[str | None],
    chunk_rows: int,
    threads: bool,
    text_features: bool,
    dialect: CsvDialect = COMMA,
) -> Iterator[pa.RecordBatch]:
    if fmt == "parquet":
        # Without pre-buffering a row group is decoded column by column: half the peak memory.
        batches = _parquet_file(path, pre_buffer=False).iter_batches(
            batch_size=chunk_rows, columns=columns, use_threads=threads
        )
        try:
            yield from batches
        except (OSError, pa.ArrowException) as exc:
            # pyarrow checks the text of a dictionary-encoded column as it decodes it
            # ("Invalid UTF8 payload"), and a damaged file fails here too.
            raise InputError(f"cannot read {path} as parquet: {without_values(exc)}") from None
        return
    convert = csv_convert(text=text_features, keys=keys, decimal=dialect.decimal)
    convert.include_columns = columns
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=threads)
    reader = None
    try:
        # Opening already parses the first block, so it can fail like any later one.
        reader = pacsv.open_csv(
            path,
            read_options=read,
            parse_options=dialect.parse_options(),
            convert_options=convert,
        )
        for batch in reader:
            yield from (batch.slice(i, chunk_rows) for i in range(0, batch.num_rows, chunk_rows))
    except pa.ArrowInvalid as exc:
        if _header_alone(path, exc, dialect) is not None:
            return  # a header without rows: no batch, and the output of an empty input
        raise csv_error(
            exc, lambda: os.fspath(path), f"cannot parse {path} as CSV", header, dialect
        ) from None
    finally:
        if reader is not None:
            reader.close()


def _header_alone(
    path: str | os.PathLike[str], exc: BaseException, dialect: CsvDialect = COMMA
) -> pa.Table | None:
    """The table of no rows that a CSV file holding only its header line, without the line
    end, stands for; ``None`` if ``exc`` is not pyarrow calling the file empty, or the file
    holds nothing (or more than one line) after all.

    pyarrow calls such a file empty; ``/predict/table`` reads the same bytes as a header
    (:func:`parse_body`), and so does ``heart-score``, through that same function: a
    query that matched nobody exported as a bare header is still a table.
    """
    if "Empty CSV file" not in str(exc):
        return None
    try:
        # As open_csv reads a path: decompressed by its extension (.csv.gz, ...).
        with pa.input_stream(os.fspath(path), compression="detect") as stream:
            head = stream.read(CSV_BLOCK_BYTES + 1)
    except (pa.ArrowException, OSError):
        return None
    if len(head) > CSV_BLOCK_BYTES or not head.strip():
        return None
    try:
        table = parse_body(head, "csv", dialect=dialect)
    except (InputError, TextInNumbersError):
        return None
    return table if table.num_rows == 0 else None
