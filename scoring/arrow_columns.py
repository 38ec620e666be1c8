"""Arrow feature columns as the validator's float64 arrays, and which of their cells are text.

Files and uploads arrive as Arrow columns of whatever type their writer chose
(numbers, decimals, dictionaries, text, text that is not UTF-8); this is the one
place that decides what each type and each cell means, so ``heart-score`` and
``POST /predict/table`` read the same column the same way. It reads the Arrow
buffers directly: pyarrow's own conversions import pandas on first use, which
costs a one-file run more than scoring a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from model.columns import MISSING_MARKERS, csv_number
from model.features import FEATURE_NAMES
from scoring.errors import ColumnTypeError, TextInNumbersError


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


def decoded_names(names: Sequence[str | None]) -> list[str]:
    """The names that could be decoded: the only ones a feature or a key can have."""
    return [name for name in names if name is not None]


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
    present = set(decoded_names(schema_names(batch.schema)))
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
        # A CSV feature read to be judged (see scoring.csv_parsing.csv_convert).
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


def is_utf8_text(column: pa.Array) -> bool:
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
