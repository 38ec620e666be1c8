"""The body of ``POST /predict/table``, CSV or an Arrow IPC stream, as feature columns,
within the limits of one request.

An upload is already in memory and comes from any client: its first bytes are
checked for another format or separator, an Arrow stream's size is counted on its
messages' metadata before any batch is decompressed, and a table too large is
its own error (:class:`TableTooLargeError`, a 413), not an unreadable one.
"""

from __future__ import annotations

import struct
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from model.columns import not_csv_text, other_separator, require_columns, shown_separator
from scoring.arrow_columns import decoded_names, feature_columns, schema_names
from scoring.csv_parsing import COMMA, HEAD_BYTES, CsvDialect, csv_convert, csv_error
from scoring.errors import InputError, TextInNumbersError, without_values
from scoring.ipc_metadata import batch_sizes


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
        require_columns(decoded_names(schema_names(table.schema)))
        return feature_columns(table, from_text=fmt == "csv")
    except TextInNumbersError:
        table = parse_body(body, fmt, max_rows=max_rows, max_bytes=max_bytes, text_features=True)
        return feature_columns(table, from_text=True)


def _check_body_head(body: bytes) -> None:
    """Refuse a CSV body whose first bytes say it is another format, or whose header uses
    another separator, saying so (:func:`model.columns.not_csv_text`)."""
    kind = not_csv_text(body[:HEAD_BYTES])
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
    sep = other_separator(body[:HEAD_BYTES])
    if sep is not None:
        raise InputError(
            "the body's header has no ',' between the column names but has "
            f"{shown_separator(sep)}: "
            "send comma-separated CSV, with a decimal point"
        )


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
    :class:`scoring.errors.RowWidthError`, naming it.
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
                convert_options=csv_convert(text=text_features, decimal=dialect.decimal),
            )
    except (pa.ArrowException, OSError) as exc:
        # A truncated or garbled Arrow stream raises OSError (pyarrow's ArrowIOError),
        # which is not an ArrowException.
        if fmt == "csv":
            raise csv_error(
                exc, lambda: pa.BufferReader(body), "the body is not valid CSV", dialect=dialect
            ) from None
        raise InputError(
            f"the body is not a valid Arrow IPC stream: {without_values(exc)}"
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
            length, decoded = batch_sizes(message)
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
