"""pyarrow's CSV reader as both ``heart-score`` and ``POST /predict/table`` use it.

A file and an upload are parsed with the same dialect, column types and
missing-value markers, and a failed parse means the same for both: pyarrow's
message, which quotes the row, becomes a refusal that names a row or a column,
never a cell, or the signal to read the feature columns again as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from model.columns import MISSING_MARKERS
from model.features import FEATURE_NAMES
from scoring.errors import (
    InputError,
    RowWidthError,
    TextInNumbersError,
    key_not_utf8,
    without_values,
)

#: Bytes per CSV block: pyarrow's streaming reader reads many blocks ahead, so the block
#: sets the peak memory of a file read in chunks (8 MiB blocks took hundreds of MiB).
CSV_BLOCK_BYTES = 1 << 20
#: What is read of a CSV file or body to tell its format and separator: a header line.
HEAD_BYTES = 1 << 16


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


def csv_convert(
    *, text: bool, keys: Sequence[str] = (), decimal: str = "."
) -> pacsv.ConvertOptions:
    """Feature columns as numbers (or as their bytes, to find the cells that are not), key
    columns as text, and only the documented markers as null: pyarrow's default list also
    has ``NaN``, ``N/A``, ``#N/A``, ``NULL`` and more, which would pass unannounced for
    "not measured".

    Read to be judged cell by cell, a feature column is binary, not text: pyarrow
    refuses a whole text column for one cell that is not UTF-8 (a Latin-1 ``24\xe9``),
    and that cell is just one more cell that is not a number
    (:func:`scoring.arrow_columns._utf8_text`).

    A key is an identifier, copied to the output, never computed with. Left to pyarrow,
    its type would be guessed from the file's first block: ``007`` would become 7, the
    same registry's key an integer in one file and text in the next, and an id like
    ``A17`` after the first block a conversion error that no second read could avoid.
    Read as text, it is written as it was read, and as an empty input writes it
    (:func:`scoring.writing.empty_batch`). A key that is also a feature is read as text
    too, and its cells are then parsed one by one as a feature read as text is.
    """
    types = {name: pa.binary() if text else pa.float64() for name in FEATURE_NAMES}
    types.update((name, pa.string()) for name in keys)
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=list(MISSING_MARKERS),
        strings_can_be_null=True,
        decimal_point=decimal,
    )


#: pyarrow's message for a row whose cell count is not the header's, up to where it
#: quotes the row: the row's number (counting the header as 1) when pyarrow read on
#: one thread, the header's cells and the row's. Matched at the start only, so the
#: quoted row, health data, can never be mistaken for it.
_ROW_WIDTH = re.compile(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+)")
#: pyarrow's message for a cell its column's type cannot hold: the column's place in
#: the file (from 0), and the type. Matched at the start, as above.
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+)")


def csv_error(
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
            return TextInNumbersError(without_values(exc))
        # Only keys are read as text (features, read to be judged, are binary), and
        # text fails only on bytes that are not UTF-8.
        place = int(conversion[1])
        return key_not_utf8(where, header[place] if place < len(header) else None)
    width = _ROW_WIDTH.match(message)
    if width is not None:
        return _row_width_error(width, source, where, dialect)
    return InputError(f"{where}: {without_values(exc)}")


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
        one = pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES)
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
