"""The refusals that ``heart-score`` and ``POST /predict/table`` share, and how their
messages keep cell values out.

Every reader here (files in chunks, uploaded bodies, the conversion of Arrow
columns) raises these, and the command and the endpoint each catch them in one
place. pyarrow's own messages quote cells, which are health data, so they pass
through :func:`without_values` before they become a refusal.
"""

from __future__ import annotations

import re

import pyarrow as pa


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


def key_not_utf8(where: str, name: str | None) -> InputError:
    """A key column holding bytes that are not UTF-8: it is copied to the output as text,
    which those bytes are not, and a key replaced or dropped would no longer identify
    its row; the whole input is refused, naming the column, never the bytes."""
    column = f"the key column {name!r}" if name is not None else "a column read as text"
    return InputError(
        f"{where}: {column} is not UTF-8 text, so it cannot be copied to the output as "
        "text; write the file as UTF-8"
    )


def without_values(exc: BaseException) -> str:
    """pyarrow quotes the offending cell (conversion errors) or the whole row (a row with
    the wrong number of cells); both are health data, so keep only what and where."""
    text = str(exc).split(": invalid value")[0]
    return re.sub(r"(Expected \d+ columns, got \d+): .*", r"\1", text, flags=re.DOTALL)
