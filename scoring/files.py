"""CSV and Parquet in chunks, through pyarrow: memory stays flat whatever the file size.

pyarrow parses CSV and decodes Parquet in C++ and hands over columns, which is
what the validator and the network want; a chunk is a few hundred thousand
rows at most, so peak memory depends on the chunk, not on the file.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from model.atomic import CannotWriteError, finish_partial
from model.columns import (
    MISSING_MARKERS,
    csv_number,
    not_csv_text,
    other_separator,
    require_columns,
    separator_remedy,
    shown_separator,
)
from model.features import FEATURE_NAMES
from model.predictor import Predictor
from scoring.core import PREDICTION, Scores, output_columns

Format = Literal["csv", "parquet"]
#: The row-number column written when no key column is given, so output rows can be joined.
ROW = "row"
#: Rows per chunk: large enough that per-chunk overhead vanishes, small enough for flat memory.
CHUNK_ROWS = 131_072
_CSV_BLOCK_BYTES = 1 << 20
#: What is read of a CSV file or body to tell its format and separator: a header line.
_HEAD_BYTES = 1 << 16
#: The names read as CSV; pyarrow decompresses by the same ends (``compression="detect"``).
CSV_NAMES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt")
#: The compression each of those ends names, for writing one.
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


class InputError(ValueError):
    """The input cannot be scored at all (unreadable, wrong columns): exit status 2."""


class ColumnTypeError(InputError):
    """A feature column whose type holds no numbers (a timestamp, a list, bytes, ...), or
    that pyarrow could not turn into numbers: refused once, by its name and type, since
    no cell of it could be scored. Never quotes a cell."""

    def __init__(self, column: str, kind: pa.DataType, *, numeric_type: bool = False) -> None:
        self.column = column
        if numeric_type:  # a type that holds numbers, but these could not be read
            super().__init__(f"column {column!r} of type {kind} cannot be read as numbers")
            return
        super().__init__(
            f"column {column!r} has the type {kind}, which holds no numbers: send integers, "
            "floats or decimals (dictionary-encoded or not), or text that reads as numbers"
        )


class RowWidthError(InputError):
    """A CSV row with more or fewer cells than the header: which cell belongs to which
    column would be a guess. Names the row, counted from 0 with the header not counted
    as every other message and ``heart-score``'s output count rows; never its cells."""

    def __init__(self, where: str, row: int, cells: int, expected: int) -> None:
        self.row, self.cells, self.expected = row, cells, expected
        super().__init__(
            f"{where}: row {row} {self.reason} (rows are counted from 0, the header not counted)"
        )

    @property
    def reason(self) -> str:
        """What is wrong with the row, without the row: for an answer whose ``loc`` names it."""
        return f"has {self.cells} cells where the header has {self.expected}"


class TextInNumbersError(Exception):
    """A CSV feature column read as numbers held text, or a cell that only its text can
    tell apart (``inf`` or ``NaN`` from a number beyond a double): read the feature columns
    again as text (``text_features=True``) to judge and name every such cell."""


def schema_names(schema: pa.Schema) -> list[str | None]:
    """Every column's name, in order, with ``None`` for a name that is not UTF-8.

    pyarrow decodes all names at once (``schema.names``), and one name that is not
    UTF-8 (a Windows-1252 CSV header, an Arrow field written from bytes) fails the
    lot; each field's name is decoded apart instead. Such a name is no feature (they
    are ASCII) and no key (named on the command line), so the column is ignored
    like any other extra column, and its bytes are never shown.
    """
    try:
        return list(schema.names)
    except UnicodeDecodeError:
        pass
    names: list[str | None] = []
    for i in range(len(schema)):
        try:
            names.append(schema.field(i).name)
        except UnicodeDecodeError:
            names.append(None)
    return names


def _named(names: Sequence[str | None]) -> list[str]:
    """The names that could be decoded: the only ones a feature or a key can have."""
    return [name for name in names if name is not None]


#: Files a registry is often exported as that heart-score does not read, by the end of their
#: name: what the file is, and what to do with it.
_NOT_READ: dict[tuple[str, ...], str] = {
    (".xlsx", ".xlsm", ".xls", ".ods"): (
        "a spreadsheet workbook, which heart-score does not read: save the sheet as CSV "
        "(in Excel, Save As 'CSV UTF-8')"
    ),
    (".arrow", ".feather", ".ipc", ".arrows"): (
        "an Arrow IPC file, which heart-score does not read: write the table as Parquet "
        "(pyarrow.parquet.write_table) or CSV"
    ),
    (".zip",): "a ZIP archive, which heart-score does not read: unzip it (.csv.gz is read)",
}


def detect_format(
    path: str | os.PathLike[str], given: str | None = None, *, option: str = "--input-format"
) -> Format:
    """The format named by ``given``, else by the file name's extension; ``option`` is the
    command's option that names it, for the message when neither does."""
    if given in ("csv", "parquet"):
        return given  # type: ignore[return-value]
    name = str(path).lower()
    if name.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if name.endswith(CSV_NAMES):
        return "csv"
    for ends, kind in _NOT_READ.items():
        if name.endswith(ends) and option == "--input-format":
            raise InputError(f"{path} is {kind}")
    raise InputError(
        f"cannot tell the format of {path}: name it .csv or .parquet (or .csv.gz, .csv.bz2, "
        f".csv.zst: compressed CSV), or pass {option}"
    )


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file separates its cells and writes its decimals.

    A comma and a point unless the file says otherwise: Excel writes "CSV" with the
    system's list separator, a semicolon wherever the decimal mark is a comma (much
    of Europe), and the numbers with that comma (``--delimiter ';' --decimal ','``).
    Only for reading: the scores are written with a comma and a point.
    """

    delimiter: str = ","
    decimal: str = "."

    def parse_options(self) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self.delimiter)


#: The CSV of RFC 4180 and of every upload: cells apart by commas, decimals with a point.
COMMA = CsvDialect()


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
    written (see :func:`_csv_convert`). ``text_features`` reads CSV feature columns
    as text and parses them cell by cell, so a cell like ``"abc"`` is reported
    instead of stopping the read; the caller switches to it only when the fast read
    hits such a cell. ``dialect`` is how a CSV input is written (a Parquet file's
    columns are typed and need none).
    """
    header = _column_names(path, fmt, dialect)
    names = _named(header)
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
                if not _is_utf8_text(array):
                    raise _key_not_utf8(f"cannot read {path} as parquet", name)
        yield Chunk(offset, batch.num_rows, features, not_numbers, key_arrays)
        offset += batch.num_rows


def feature_columns(
    batch: pa.RecordBatch | pa.Table, *, from_text: bool = False, decimal: str = "."
) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.bool_]]]:
    """The 13 feature columns present, as float64 (NaN where empty), and their text cells.

    ``from_text``: the batch was parsed from CSV, so a NaN or infinity in a number
    column came from text (null is what an empty cell becomes): ``NaN`` or ``inf``,
    refused, or a number beyond a double, out of range; only the text tells which, so
    that raises :class:`TextInNumbersError`. A column whose type holds no numbers
    raises :class:`ColumnTypeError` (see :func:`_as_float` for what each type is).
    ``decimal`` is the decimal mark of numbers written as text.
    """
    features: dict[str, npt.NDArray[np.float64]] = {}
    not_numbers: dict[str, npt.NDArray[np.bool_]] = {}
    present = set(_named(schema_names(batch.schema)))
    for name in FEATURE_NAMES:
        if name not in present:
            continue
        column = batch.column(name)
        try:
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            features[name], text = _as_float(column, from_text=from_text, decimal=decimal)
        except _NoNumbersError:
            raise ColumnTypeError(name, column.type) from None
        except pa.ArrowException:
            # pyarrow's message may quote the cell: a health value, kept out of answers and logs.
            raise ColumnTypeError(name, column.type, numeric_type=True) from None
        if text is not None:
            not_numbers[name] = text
    return features, not_numbers


class TableTooLargeError(Exception):
    """The body holds more rows, or decompresses to more bytes, than one request may."""


def body_features(
    body: bytes,
    fmt: Literal["csv", "arrow"],
    *,
    max_rows: int | None = None,
    max_bytes: int | None = None,
) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.bool_]]]:
    """An uploaded body's feature columns and text cells, as :func:`feature_columns` gives
    them, once its header has passed :func:`require_columns`.

    A CSV body is read with its feature columns as numbers, the fast way; where a cell
    turns out to need its text (see :class:`TextInNumbersError`), it is read again with
    them as text, to judge and name every such cell: the two reads ``heart-score``
    makes of a file. Raises as :func:`parse_body` does.
    """
    if fmt == "csv":
        _check_body_head(body)
    try:
        table = parse_body(body, fmt, max_rows=max_rows, max_bytes=max_bytes)
        require_columns(_named(schema_names(table.schema)))
        return feature_columns(table, from_text=fmt == "csv")
    except TextInNumbersError:
        table = parse_body(body, fmt, max_rows=max_rows, max_bytes=max_bytes, text_features=True)
        return feature_columns(table, from_text=True)


def _check_body_head(body: bytes) -> None:
    """Refuse a CSV body whose first bytes say it is another format, or whose header uses
    another separator, saying so (:func:`model.columns.not_csv_text`)."""
    kind = not_csv_text(body[:_HEAD_BYTES])
    if kind is not None and kind.what == "gzip-compressed":
        raise InputError(
            "the body is gzip-compressed, not CSV text: send it with the header "
            "Content-Encoding: gzip, or send the CSV uncompressed"
        )
    if kind is not None:
        raise InputError(
            f"the body is {kind.what}, not CSV text: send the table as CSV (UTF-8, "
            "uncompressed), or as an Arrow IPC stream with Content-Type "
            "application/vnd.apache.arrow.stream"
        )
    sep = other_separator(body[:_HEAD_BYTES])
    if sep is not None:
        raise InputError(
            "the body's header has no ',' between the column names but has "
            f"{shown_separator(sep)}: "
            "send comma-separated CSV, with a decimal point"
        )


def _check_file_head(path: str | os.PathLike[str], dialect: CsvDialect) -> None:
    """Refuse a file named as CSV whose first bytes say it is another format, or whose
    header uses another separator than ``dialect``'s, saying what to do."""
    try:
        # As open_csv reads a path: decompressed by its extension (.csv.gz, ...).
        with pa.input_stream(os.fspath(path), compression="detect") as stream:
            head = stream.read(_HEAD_BYTES)
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


def parse_body(
    body: bytes,
    fmt: Literal["csv", "arrow"],
    *,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    text_features: bool = False,
    dialect: CsvDialect = COMMA,
) -> pa.Table:
    """An uploaded CSV or Arrow IPC stream as a table (raises :class:`InputError`).

    At most ``max_rows`` rows, and an Arrow stream whose buffers, uncompressed, come
    to at most ``max_bytes``, else :class:`TableTooLargeError`. A zstd or lz4
    stream of a few megabytes can hold millions of rows, so the Arrow limits are
    checked on each message's metadata before any batch is decompressed; a CSV
    body cannot hold more than its size allows, so it is counted once parsed.

    CSV feature columns are read as numbers, and a cell of text there raises
    :class:`TextInNumbersError`; with ``text_features`` they are read as text
    (:func:`body_features` does both). A row of the wrong width raises
    :class:`RowWidthError`, naming it.
    """
    try:
        if fmt == "arrow":
            _check_stream_size(body, max_rows, max_bytes)
            table = pa.ipc.open_stream(pa.BufferReader(body)).read_all()
        else:
            if not body.endswith((b"\n", b"\r")):
                # A header alone, without its line end, is still a header (pyarrow
                # calls it an empty file): a table of no rows, as with the line end.
                body += b"\n"
            table = pacsv.read_csv(
                pa.BufferReader(body),
                parse_options=dialect.parse_options(),
                convert_options=_csv_convert(text=text_features, decimal=dialect.decimal),
            )
    except (pa.ArrowException, OSError) as exc:
        # A truncated or garbled Arrow stream raises OSError (pyarrow's ArrowIOError),
        # which is not an ArrowException.
        if fmt == "csv":
            raise _csv_error(
                exc, lambda: pa.BufferReader(body), "the body is not valid CSV", dialect=dialect
            ) from None
        raise InputError(
            f"the body is not a valid Arrow IPC stream: {_without_values(exc)}"
        ) from None
    if max_rows is not None and table.num_rows > max_rows:
        raise TableTooLargeError(_too_many_rows(max_rows))
    return table


def _too_many_rows(max_rows: int) -> str:
    return (
        f"more than {max_rows:,} rows (HEART_MAX_TABLE_ROWS): send the table in parts, "
        "or score whole files with heart-score"
    )


def _check_stream_size(body: bytes, max_rows: int | None, max_bytes: int | None) -> None:
    """Count an Arrow stream's rows and uncompressed bytes from its messages' metadata,
    without decompressing or decoding a batch; raise :class:`TableTooLargeError` as soon
    as either passes its limit."""
    if max_rows is None and max_bytes is None:
        return
    rows = size = 0
    for message in pa.ipc.MessageReader.open_stream(pa.BufferReader(body)):
        if message.type not in ("record batch", "dictionary"):
            continue
        try:
            length, decoded = _batch_sizes(message)
        except (struct.error, IndexError, ValueError):
            raise InputError(
                "the body is not a valid Arrow IPC stream: unreadable message metadata"
            ) from None
        if message.type == "record batch":
            rows += length
        size += decoded
        if max_rows is not None and rows > max_rows:
            raise TableTooLargeError(_too_many_rows(max_rows))
        if max_bytes is not None and size > max_bytes:
            raise TableTooLargeError(
                f"the Arrow stream holds more than {max_bytes:,} bytes uncompressed "
                "(HEART_MAX_BODY_BYTES limits a stream's uncompressed size, so compression "
                "saves bandwidth but not the limit): send the table in parts"
            )


# Field numbers of the Arrow IPC flatbuffers (format/Message.fbs): Message.header;
# DictionaryBatch.data; RecordBatch.length, .buffers and .compression.
_MESSAGE_HEADER, _DICTIONARY_DATA = 2, 1
_BATCH_LENGTH, _BATCH_BUFFERS, _BATCH_COMPRESSION = 0, 2, 3


def _batch_sizes(message: pa.ipc.Message) -> tuple[int, int]:
    """Rows of a record or dictionary batch message and the bytes of its buffers once
    decompressed, read from the flatbuffer metadata (pyarrow exposes neither before it
    decodes the batch). A compressed buffer starts with its uncompressed length (-1:
    stored uncompressed), so the body is only peeked at, 8 bytes per buffer."""
    meta = memoryview(message.metadata)
    header = _field(meta, struct.unpack_from("<I", meta, 0)[0], _MESSAGE_HEADER)
    if header is None:
        raise ValueError("a batch message without a header")
    batch = _indirect(meta, header)
    if message.type == "dictionary":
        data = _field(meta, batch, _DICTIONARY_DATA)
        if data is None:
            raise ValueError("a dictionary batch without data")
        batch = _indirect(meta, data)
    at = _field(meta, batch, _BATCH_LENGTH)
    length = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    at = _field(meta, batch, _BATCH_BUFFERS)
    buffers = []
    if at is not None:
        vector = _indirect(meta, at)
        count = struct.unpack_from("<I", meta, vector)[0]
        buffers = [struct.unpack_from("<qq", meta, vector + 4 + 16 * i) for i in range(count)]
    if length < 0 or any(offset < 0 or stored < 0 for offset, stored in buffers):
        raise ValueError("negative length in a batch message")
    if _field(meta, batch, _BATCH_COMPRESSION) is None:
        return length, sum(stored for _, stored in buffers)
    body = memoryview(message.body) if message.body is not None else memoryview(b"")
    decoded = 0
    for offset, stored in buffers:
        if stored >= 8:
            prefix = struct.unpack_from("<q", body, offset)[0]
            decoded += stored - 8 if prefix == -1 else max(prefix, 0)
    return length, decoded


def _field(buf: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is, or None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    entry = 4 + 2 * index
    if entry >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + entry)[0]
    return table + offset if offset else None


def _indirect(buf: memoryview, at: int) -> int:
    """The table or vector an offset field at ``at`` points to."""
    return int(at + struct.unpack_from("<I", buf, at)[0])


def _csv_convert(
    *, text: bool, keys: Sequence[str] = (), decimal: str = "."
) -> pacsv.ConvertOptions:
    """Feature columns as numbers (or as their bytes, to find the cells that are not), key
    columns as text, and only the documented markers as null: pyarrow's default list also
    has ``NaN``, ``N/A``, ``#N/A``, ``NULL`` and more, which would pass unannounced for
    "not measured".

    Read to be judged cell by cell, a feature column is binary, not text: pyarrow
    refuses a whole text column for one cell that is not UTF-8 (a Latin-1 ``24\xe9``),
    and that cell is just one more cell that is not a number (:func:`_utf8_text`).

    A key is an identifier, copied to the output, never computed with. Left to pyarrow,
    its type would be guessed from the file's first block: ``007`` would become 7, the
    same registry's key an integer in one file and text in the next, and an id like
    ``A17`` after the first block a conversion error that no second read could avoid.
    Read as text, it is written as it was read, and as an empty input writes it
    (:func:`empty_batch`). A key that is also a feature is read as text too, and its
    cells are then parsed one by one as a feature read as text is.
    """
    types = {name: pa.binary() if text else pa.float64() for name in FEATURE_NAMES}
    types.update((name, pa.string()) for name in keys)
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=list(MISSING_MARKERS),
        strings_can_be_null=True,
        decimal_point=decimal,
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
        raise InputError(f"cannot read {path} as parquet: {_without_values(exc)}") from None


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
        raise _csv_error(
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
            raise InputError(f"cannot read {path} as parquet: {_without_values(exc)}") from None
        return
    convert = _csv_convert(text=text_features, keys=keys, decimal=dialect.decimal)
    convert.include_columns = columns
    read = pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=threads)
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
        raise _csv_error(
            exc, lambda: os.fspath(path), f"cannot parse {path} as CSV", header, dialect
        ) from None
    finally:
        if reader is not None:
            reader.close()


#: pyarrow's message for a row whose cell count is not the header's, up to where it
#: quotes the row: the row's number (counting the header as 1) when pyarrow read on
#: one thread, the header's cells and the row's. Matched at the start only, so the
#: quoted row, health data, can never be mistaken for it.
_ROW_WIDTH = re.compile(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+)")
#: pyarrow's message for a cell its column's type cannot hold: the column's place in
#: the file (from 0), and the type. Matched at the start, as above.
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+)")


def _csv_error(
    exc: BaseException,
    source: Callable[[], Any],
    where: str,
    header: Sequence[str | None] = (),
    dialect: CsvDialect = COMMA,
) -> Exception:
    """What a failed CSV read means: a feature cell of text (:class:`TextInNumbersError`:
    read again as text), a key column that is not UTF-8, a row of the wrong width
    (:class:`RowWidthError`), or a file that is no CSV; ``source`` opens the input again,
    ``where`` starts the message, ``header`` names the columns by place."""
    message = str(exc)
    conversion = _CONVERSION.match(message)
    if conversion is not None:
        if conversion[2] != "string":
            return TextInNumbersError(_without_values(exc))
        # Only keys are read as text (features, read to be judged, are binary), and
        # text fails only on bytes that are not UTF-8.
        place = int(conversion[1])
        return _key_not_utf8(where, header[place] if place < len(header) else None)
    width = _ROW_WIDTH.match(message)
    if width is not None:
        return _row_width_error(width, source, where, dialect)
    return InputError(f"{where}: {_without_values(exc)}")


def _key_not_utf8(where: str, name: str | None) -> InputError:
    """A key column holding bytes that are not UTF-8: it is copied to the output as text,
    which those bytes are not, and a key replaced or dropped would no longer identify
    its row; the whole input is refused, naming the column, never the bytes."""
    column = f"the key column {name!r}" if name is not None else "a column read as text"
    return InputError(
        f"{where}: {column} is not UTF-8 text, so it cannot be copied to the output as "
        "text; write the file as UTF-8"
    )


def _row_width_error(
    width: re.Match[str], source: Callable[[], Any], where: str, dialect: CsvDialect = COMMA
) -> InputError:
    """The first row whose cell count is not the header's, named by its number.

    Read from pyarrow's message rather than through its ``invalid_row_handler``:
    pyarrow decodes the row's text before it calls a handler, and for a row that is
    not UTF-8 (a Latin-1 name, a gzip body sent as CSV) that decoding fails inside
    pyarrow, which prints "Exception ignored" and a traceback to stderr and never
    calls the handler. The message has the number only from a read on one thread
    (on several it may not even be the first such row), so the input is then read
    again that way, parsing only: no column is converted, so no cell stops it first.
    """
    number, expected, cells = width.groups()
    if number is None:
        one = pacsv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES)
        only = pacsv.ConvertOptions(
            include_columns=[FEATURE_NAMES[0]],
            include_missing_columns=True,
            column_types={FEATURE_NAMES[0]: pa.binary()},
        )
        try:
            parse = dialect.parse_options()
            for _ in pacsv.open_csv(
                source(), read_options=one, parse_options=parse, convert_options=only
            ):
                pass
        except (pa.ArrowException, OSError) as exc:
            again = _ROW_WIDTH.match(str(exc))
            if again is not None and again[1] is not None:
                number, expected, cells = again.groups()
    if number is None:
        return InputError(f"{where}: a row has {cells} cells where the header has {expected}")
    # pyarrow counts records from 1 with the header, and skips empty lines as the output does.
    return RowWidthError(where, int(number) - 2, int(cells), int(expected))


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
            head = stream.read(_CSV_BLOCK_BYTES + 1)
    except (pa.ArrowException, OSError):
        return None
    if len(head) > _CSV_BLOCK_BYTES or not head.strip():
        return None
    try:
        table = parse_body(head, "csv", dialect=dialect)
    except (InputError, TextInNumbersError):
        return None
    return table if table.num_rows == 0 else None


def _without_values(exc: BaseException) -> str:
    """pyarrow quotes the offending cell (conversion errors) or the whole row (a row with
    the wrong number of cells); both are health data, so keep only what and where."""
    text = str(exc).split(": invalid value")[0]
    return re.sub(r"(Expected \d+ columns, got \d+): .*", r"\1", text, flags=re.DOTALL)


class _NoNumbersError(Exception):
    """A column whose type holds no measurement in any cell: refused once, as a column."""


def _as_float(
    column: pa.Array, *, from_text: bool = False, decimal: str = "."
) -> tuple[npt.NDArray[np.float64], Any]:
    """A feature column as float64 with NaN for empty cells, plus a mask of text cells.

    Only the documented markers mean "not measured": null (and, in CSV, an empty
    cell, ``NA`` or ``null``, which the reader turns into null). A NaN float in
    a binary column is another way to write null; but the text ``NaN`` or
    ``inf`` is no measurement, so a non-finite value parsed from text is refused
    as not a number, as the JSON API refuses NaN, while a number too large for a
    double is a number out of range (:func:`model.columns.csv_number`). From a CSV
    column read as numbers (``from_text``) the two cannot be told apart, hence
    :class:`TextInNumbersError`.

    What each Arrow type is, as a user who exported it means it: integers, floats
    and decimals (a database's NUMERIC) are numbers, range-checked like any other;
    a dictionary-encoded column (pandas' category) is its values; text is parsed
    cell by cell as a CSV cell is; a null-typed column is all "not measured".
    Booleans are refused cell by cell, as the JSON API refuses ``"sex": true``.
    Any other type (timestamps, dates, times, durations, binary, lists, structs,
    maps, ...) holds no measurement in any cell, so the column is refused once,
    by name and type (:class:`_NoNumbersError`), rather than each of its cells.
    """
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _dictionary_as_float(column, from_text=from_text, decimal=decimal)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = _float64_numpy(column)
        if from_text and _non_finite_text(column, values) is not None:
            raise TextInNumbersError("a non-finite number read from CSV")
        return values, None
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan), None
    if pa.types.is_boolean(kind):
        present = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        return np.full(len(column), np.nan), present
    if pa.types.is_string_view(kind):
        column = column.cast(pa.large_string())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _text_as_float(column, decimal)
    if from_text and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        # A CSV feature read to be judged (see _csv_convert).
        return _text_as_float(column, decimal)
    raise _NoNumbersError


#: Each text type and the binary type of the same layout: a view of one as the other
#: copies nothing and checks nothing.
_TEXT_AS_BYTES: dict[pa.DataType, pa.DataType] = {
    pa.string(): pa.binary(),
    pa.large_string(): pa.large_binary(),
    pa.string_view(): pa.binary_view(),
}


def _utf8_text(column: pa.Array) -> tuple[pa.Array, npt.NDArray[np.bool_] | None]:
    """A text or binary column as text that is valid UTF-8, and which cells were not (null
    in the text returned; ``None``: every cell was).

    A text column from a client or a file is not checked by pyarrow (it checks UTF-8
    lazily), and its text functions refuse the whole column for one such cell; a
    cell that is not UTF-8 (a Latin-1 ``24é``) is no number, so it is refused as any
    other text in a feature is, by row and column. Its bytes are never shown.
    """
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    raw = column.view(pa.large_binary() if large else pa.binary())
    raw.validate(full=True)  # the offsets, from any client, before a cell is read by them
    text_type = pa.large_string() if large else pa.string()
    try:
        return raw.cast(text_type), None  # the cast checks UTF-8, in C++
    except pa.ArrowInvalid:
        pass
    bad = np.fromiter(
        (cell is not None and not _is_utf8(cell) for cell in raw.to_pylist()),
        dtype=np.bool_,
        count=len(raw),
    )
    import pyarrow.compute as pc

    kept = pc.if_else(pa.array(bad), pa.scalar(None, raw.type), raw)
    return kept.cast(text_type), bad


def _is_utf8_text(column: pa.Array) -> bool:
    """False for a text column holding bytes that are not UTF-8 (which Parquet and Arrow
    do not check as they read); True for any column that is not text."""
    if _TEXT_AS_BYTES.get(column.type) is None:
        return True
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _is_utf8(cell: bytes) -> bool:
    try:
        cell.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text_as_float(column: pa.Array, decimal: str = ".") -> tuple[npt.NDArray[np.float64], Any]:
    """A text (or binary) column parsed cell by cell, as :func:`model.columns.csv_number`
    reads a cell: pyarrow's cast first, and the cells it cannot read, or reads as NaN or
    an infinity (``inf`` and a 400-digit integer alike), judged by their text. A cell
    that is not UTF-8 is not a number (:func:`_utf8_text`)."""
    import pyarrow.compute as pc

    text, not_utf8 = _utf8_text(column)
    if not_utf8 is not None:
        values, cells = _text_as_float(text, decimal)
        cells = not_utf8 if cells is None else cells | not_utf8
        return values, cells if cells.any() else None
    trimmed = pc.utf8_trim_whitespace(text)
    if decimal != ".":
        trimmed = _with_decimal_point(trimmed, decimal)
    try:
        parsed = pc.cast(trimmed, pa.float64())
    except pa.ArrowInvalid:
        return _parse_cells(trimmed.to_pylist())
    values = _float64_numpy(parsed)
    odd = _non_finite_text(parsed, values)
    if odd is None:
        return values, None
    where = np.flatnonzero(odd)
    judged, text = _parse_cells(trimmed.take(pa.array(where)).to_pylist())
    values = values.copy()
    values[where] = judged
    odd[where] = text
    return values, odd if odd.any() else None


def _with_decimal_point(text: pa.Array, decimal: str) -> pa.Array:
    """Cells whose decimal mark is ``decimal`` (a comma), rewritten with a point, as
    pyarrow's ``decimal_point`` reads them on the fast read and
    :func:`model.columns.csv_number` reads a cell of ``heart-train recalibrate``.

    A point in such a file is no decimal mark: ``1.234`` is how that locale writes a
    thousand and more, and read as 1.234 it would be a silently wrong value. So a
    point becomes a character no number holds, and its cell is refused as text.
    """
    import pyarrow.compute as pc

    no_point = pc.replace_substring(text, ".", "\x00")
    return pc.replace_substring(no_point, decimal, ".")


def _dictionary_as_float(
    column: pa.DictionaryArray, *, from_text: bool, decimal: str = "."
) -> tuple[npt.NDArray[np.float64], Any]:
    """A dictionary-encoded column as its values: the dictionary read once, as a column of
    its own type (so a dictionary of timestamps is refused as timestamps), then looked up
    by each cell's index. Decoding first would copy every cell's value, which a small
    stream of long text can make gigabytes; the lookup is 8 bytes a row."""
    dictionary = column.dictionary
    as_bytes = _TEXT_AS_BYTES.get(dictionary.type)
    # Every index inside the dictionary, from any client. Text is checked as bytes: an
    # entry that is not UTF-8 is a cell that is not a number, not a broken column.
    checked = (
        column
        if as_bytes is None
        else pa.DictionaryArray.from_arrays(column.indices, dictionary.view(as_bytes))
    )
    checked.validate(full=True)
    values, text = _as_float(dictionary, from_text=from_text, decimal=decimal)
    indices = column.indices
    n = len(indices)
    if n == 0:
        return np.empty(0), None
    kind = np.dtype(str(indices.type))
    codes = np.frombuffer(
        indices.buffers()[1], dtype=kind, count=n, offset=indices.offset * kind.itemsize
    )
    present = _present(indices)
    if present is not None:
        codes = np.where(present, codes, len(values))  # the entry after the last: NaN
    looked_up = np.append(values, np.nan)[codes]
    if text is None:
        return looked_up, None
    cells = np.append(text, False)[codes]
    return looked_up, cells if cells.any() else None


def _non_finite_text(column: Any, values: npt.NDArray[np.float64]) -> Any:
    """Cells that hold NaN or an infinity and are not null: the text 'NaN', 'inf', ..."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    present = _present(column)
    if present is not None:
        bad &= present
    return bad if bad.any() else None


def _present(column: Any) -> npt.NDArray[np.bool_] | None:
    """Which cells are not null, from the validity bitmap (None: no nulls at all)."""
    if not column.null_count:
        return None
    start, n = column.offset, len(column)
    bits = np.unpackbits(
        np.frombuffer(column.buffers()[0], dtype=np.uint8), count=start + n, bitorder="little"
    )
    return np.asarray(bits[start:].view(np.bool_))


def _float64_numpy(column: Any) -> npt.NDArray[np.float64]:
    """The values viewed in place, NaN where null: no copy when there is nothing to convert.

    Read from the Arrow buffers directly: ``to_numpy`` and ``fill_null`` import
    pandas on first use, which costs a one-file run more CPU than scoring a
    million rows.
    """
    if column.type != pa.float64():
        # Imported here: pyarrow.compute costs 0.1 s of start-up, and float64 needs none of it.
        import pyarrow.compute as pc

        # Unsafe: an integer above 2**53 has no exact double, and the safe cast raises
        # with the value in its message. Rounded, it is still far outside every feature's
        # range, so validation refuses that cell by row and column like any other.
        column = pc.cast(column, pa.float64(), safe=False)
    n, start = len(column), column.offset
    if n == 0:
        return np.empty(0)
    values = np.frombuffer(column.buffers()[1], dtype=np.float64, count=n, offset=start * 8)
    present = _present(column)
    if present is not None:
        values = np.where(present, values, np.nan)
    return values


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


def _parse_cells(cells: list[str | None]) -> tuple[npt.NDArray[np.float64], Any]:
    """Cells already stripped of surrounding whitespace: a marker there (`` NA``) is missing,
    as pyarrow, which matches markers before stripping, would not have it."""
    values = np.full(len(cells), np.nan)
    text = np.zeros(len(cells), dtype=np.bool_)
    for i, cell in enumerate(cells):
        if cell is None or cell in MISSING_MARKERS:
            continue
        try:
            values[i] = csv_number(cell)  # refuses 'nan', 'inf', '1_000', non-ASCII digits
        except ValueError:
            text[i] = True
    return values, text


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
    text for CSV, since every read of a CSV key is text (:func:`_csv_convert`)."""
    if fmt == "parquet":
        schema = pq.ParquetFile(path).schema_arrow
        types = {name: schema.field(name).type for name in keys}
    else:
        types = {name: pa.string() for name in keys}
    fields = [pa.field(k, types[k]) for k in keys] or [pa.field(ROW, pa.int64())]
    for name in output_columns(predictor):
        fields.append(pa.field(name, pa.int64() if name == PREDICTION else pa.float64()))
    return pa.RecordBatch.from_pylist([], schema=pa.schema(fields))
