"""Validation of a whole column batch: one pass per chunk, a reason for every bad cell.

Files and columnar uploads arrive as columns (a CSV block, a Parquet row
group, an Arrow record batch), not as one JSON object per patient, so they are
checked as columns: the 13 arrays are stacked into one matrix and checked by
:func:`model.features.invalid_cells`, the same domain rule the data loader and
the JSON batch use, so a value refused there is refused here with the same
words. A bad cell marks its row unscorable; the other rows are still scored,
because one typo must not cost a registry its overnight run.

NumPy only: the service imports this without the ``bulk`` extra.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from model.features import (
    FEATURE_NAMES,
    FEATURES,
    N_FEATURES,
    Feature,
    all_in_domain,
    invalid_cells,
)

#: The reason given for a cell that held text where a number was expected (followed by
#: how the file marks a value not measured: :data:`NOT_A_NUMBER_BY_FEATURE`).
NOT_A_NUMBER = "is not a number"
#: The text cells that mean "not measured" (docs/scoring.md), in every CSV this project
#: reads: ``heart-score``, ``POST /predict/table`` uploads and ``heart-train recalibrate``
#: (which reads CSV without pyarrow, and must not disagree about what a blank is). Matched
#: after surrounding whitespace is stripped. Anything else that is not a finite number
#: (``NaN``, ``N/A``, ``inf`` as text; ``?``, the UCI files' marker) is refused: a text
#: "NaN" may be a failed computation rather than a test not done, and the JSON API refuses
#: NaN too.
MISSING_MARKERS: Final[tuple[str, ...]] = ("", "NA", "null")
#: How a file marks a value not measured, told in the refusal of a text cell: the markers
#: above, so a message never names one the readers would refuse.
NOT_MEASURED_CELL: Final[str] = "a value not measured is an empty cell, " + " or ".join(
    m for m in MISSING_MARKERS if m
)
#: The same refusal where the feature may not be missing at all.
REQUIRED_CELL: Final[str] = "the feature is required: it may not be missing"


def cell_hint(feature: Feature) -> str:
    """How the file should have said what a refused text cell meant: an empty cell where
    ``feature`` may be missing, else that it is required. Stated, not ordered: a refused
    cell may be a real measurement in another form (``1,5``, ``True``), which the reader
    cannot tell from a "not measured" marker such as ``?`` without quoting the cell."""
    return NOT_MEASURED_CELL if feature.may_be_missing else REQUIRED_CELL


#: Per feature, in feature order: the reason a text cell is refused. Without the
#: parenthesis a user with ``?`` or ``N/A`` cells (how exports write a test not done) is
#: not told how this project marks one.
NOT_A_NUMBER_BY_FEATURE: Final[tuple[str, ...]] = tuple(
    f"{NOT_A_NUMBER} ({cell_hint(f)})" for f in FEATURES
)

#: A number as a CSV cell writes one: ASCII digits, an optional sign, point and exponent.
#: No two digit runs may trade digits (``[0-9]+\.?[0-9]*`` did): that made a long run of
#: digits before a letter cost time quadratic in its length.
_CSV_NUMBER: Final[re.Pattern[str]] = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)


def csv_number(cell: str, decimal: str = ".") -> float:
    """A CSV cell (already stripped) as a float; ``ValueError`` unless it is a plain number.

    ``decimal`` is the file's decimal mark. With a comma (``1,5``), a point is no decimal
    mark (``1.234`` is that locale's way to write a thousand and more), so a cell with one
    is refused rather than read as a number a thousand times too small.

    Python's ``float`` reads more than a number as a file writes it: ``1_000``,
    ``NaN``, ``inf``, and digits of any script (Arabic-Indic, full-width). A registry
    cell like that is a typo or an export gone wrong, not a measurement, so
    ``heart-score``, ``/predict/table`` and ``heart-train recalibrate`` all refuse it.

    A plain number beyond a double (an integer of 400 digits) is still a number: it
    comes back as the largest double of its sign, not as an infinity, so that the
    domain rule of :mod:`model.features` refuses it as out of range ("must be between
    80 and 700 mg/dl") rather than as text or as a missing value.
    """
    if decimal != ".":
        if "." in cell:
            raise ValueError("a point where the decimal mark is not one")
        cell = cell.replace(decimal, ".")
    if _CSV_NUMBER.fullmatch(cell) is None:
        raise ValueError("not a plain number")
    value = float(cell)
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


@dataclass(frozen=True)
class NotCsvText:
    """What a file named (or sent) as CSV is instead, from its first bytes, and the name
    ending under which ``heart-score`` would read it (``None``: it does not read it)."""

    what: str
    csv_name: str | None = None


#: The first bytes of files that end up named ``.csv`` or sent as ``text/csv``, and are
#: not CSV text. Read as CSV they were a row "of the wrong width" or a header without
#: the features, which sent the user looking for the wrong mistake.
_NOT_CSV_TEXT: Final[tuple[tuple[re.Pattern[bytes], NotCsvText], ...]] = (
    (re.compile(rb"PAR1"), NotCsvText("a Parquet file", ".parquet")),
    (re.compile(rb"\x1f\x8b"), NotCsvText("gzip-compressed", ".csv.gz")),
    (re.compile(rb"BZh[1-9]1AY&SY"), NotCsvText("bzip2-compressed", ".csv.bz2")),
    (re.compile(rb"\x28\xb5\x2f\xfd"), NotCsvText("zstd-compressed", ".csv.zst")),
    (re.compile(rb"PK\x03\x04"), NotCsvText("a ZIP archive (an .xlsx or .ods workbook is one)")),
    (re.compile(rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"), NotCsvText("an Excel 97-2003 workbook")),
    (re.compile(rb"ARROW1"), NotCsvText("an Arrow IPC file")),
    (re.compile(rb"\xff\xff\xff\xff"), NotCsvText("an Arrow IPC stream")),
    (re.compile(rb"\xff\xfe|\xfe\xff"), NotCsvText("UTF-16 text (Excel's 'Unicode Text')")),
)


def not_csv_text(head: bytes) -> NotCsvText | None:
    """What the file or body starting with ``head`` is, when its first bytes say it is a
    binary or compressed format rather than CSV text; ``None`` when they do not."""
    for magic, kind in _NOT_CSV_TEXT:
        if magic.match(head):
            return kind
    return None


#: The separators a CSV export uses besides the comma, in the order they are guessed.
_SEPARATORS: Final[tuple[str, ...]] = (";", "\t", "|", ",")


def other_separator(head: bytes, delimiter: str = ",") -> str | None:
    """The separator a CSV file's header line uses when it holds no ``delimiter`` at all.

    Why: a header needs 13 feature names, so one without the delimiter was written
    with another (Excel's ``;`` where the decimal mark is a comma, a tab): read with
    the comma, it is one column, and its first row with a decimal comma "a row of 2
    cells where the header has 1", which names the wrong mistake.
    """
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    line = re.split(r"[\r\n]", text, maxsplit=1)[0]
    if not line.strip() or delimiter in line:
        return None
    return next((sep for sep in _SEPARATORS if sep != delimiter and sep in line), None)


def shown_separator(separator: str) -> str:
    """A separator as a message (and a shell) can show it: a tab is invisible."""
    return "tab" if separator == "\t" else repr(separator)


def separator_remedy(found: str, delimiter: str) -> str:
    """What a command line says of a header that has ``found`` and no ``delimiter``: the
    option that reads it (and the decimal comma that comes with ``;`` in Excel's exports)."""
    also = " (and --decimal ',' if its numbers are written 1,5)" if found == ";" else ""
    return (
        f"has no {shown_separator(delimiter)} between the column names but has "
        f"{shown_separator(found)}: pass --delimiter {shown_separator(found)}{also}"
    )


def _folded(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip()).lower()


def near_names(missing: Iterable[str], names: Iterable[str | None]) -> dict[str, str]:
    """The header's name for each missing column that differs from it only in case,
    surrounding spaces or spaces and hyphens for underscores (``' Age '``, ``Chest Pain
    Type``): what a spreadsheet export does to a header, told back so it can be fixed.

    Names are matched exactly all the same: guessing which of ``age`` and ``Age`` is the
    feature, in a file that has both, would be a guess about a patient's values.
    """
    folded = {_folded(name): name for name in names if name is not None}
    return {m: folded[_folded(m)] for m in missing if _folded(m) in folded}


def near_hint(near: Mapping[str, str]) -> str:
    """``near_names``' finding in words, or nothing when it found none."""
    if not near:
        return ""
    found = ", ".join(repr(name) for name in near.values())
    return f"; the header has {found}: names must match exactly (lower case, no spaces)"


class MissingColumnsError(ValueError):
    """The batch lacks whole feature columns: no row of it can be scored. ``near`` maps
    each missing column to a name of the header that differs only as :func:`near_names`
    allows, to say so."""

    def __init__(self, missing: list[str], near: Mapping[str, str] | None = None) -> None:
        self.missing = missing
        self.near = dict(near or {})
        super().__init__(
            "missing feature column(s): "
            + ", ".join(missing)
            + " (every one of the 13 must be present; cells may be empty where a value may be"
            " missing)" + near_hint(self.near)
        )


class DuplicateColumnsError(ValueError):
    """A column the batch needs appears more than once: which copy to score would be a guess.

    The columnar twin of the JSON API's duplicate keys: a reviewer, a log or a
    spreadsheet may look at one copy while the scorer reads the other.
    """

    def __init__(self, duplicated: list[str]) -> None:
        self.duplicated = duplicated
        super().__init__(
            "column(s) given more than once: " + ", ".join(duplicated) + " (send each column once)"
        )


@dataclass(frozen=True)
class CellProblem:
    """One refused cell: its row (0-based, counted from the start of the input), column, why."""

    row: int
    column: str
    reason: str


@dataclass(frozen=True)
class ColumnBatch:
    """A validated chunk: the feature matrix, which rows may be scored, and what was wrong."""

    x: npt.NDArray[np.float64]
    valid: npt.NDArray[np.bool_]
    problems: list[CellProblem]

    @property
    def all_valid(self) -> bool:
        return not self.problems


def require_columns(names: Iterable[str], *, also: Iterable[str] = ()) -> None:
    """Refuse a header that lacks feature columns, or repeats a feature or one of ``also``
    (the key columns), before any row is read. Other columns are ignored, repeated or not.
    """
    names = list(names)
    present = set(names)
    missing = [name for name in FEATURE_NAMES if name not in present]
    if missing:
        raise MissingColumnsError(missing, near_names(missing, names))
    needed = {*FEATURE_NAMES, *also}
    counts = Counter(name for name in names if name in needed)
    duplicated = [name for name, count in counts.items() if count > 1]
    if duplicated:
        raise DuplicateColumnsError(duplicated)


def validate_columns(
    columns: Mapping[str, npt.ArrayLike],
    *,
    not_numbers: Mapping[str, npt.NDArray[np.bool_]] | None = None,
    row_offset: int = 0,
) -> ColumnBatch:
    """Stack and check the 13 feature columns of one chunk.

    ``columns`` maps each feature name to its values, NaN where the cell was
    empty (not measured); extra columns are ignored. ``not_numbers`` marks
    cells that held text which did not parse as a number (the caller replaced
    them by NaN); they are refused as such, not mistaken for "not measured".
    ``row_offset`` is added to the reported rows so a chunked reader reports
    rows of the whole input.
    """
    require_columns(columns)
    first = np.asarray(columns[FEATURE_NAMES[0]])
    n = int(first.shape[0])
    # Column-major: each column is one contiguous copy (10x faster than strided rows).
    x = np.empty((n, N_FEATURES), dtype=np.float64, order="F")
    for j, name in enumerate(FEATURE_NAMES):
        column = np.asarray(columns[name], dtype=np.float64)
        if column.shape != (n,):
            raise ValueError(f"column {name!r} has {column.shape} values, expected ({n},)")
        x[:, j] = column
    if all_in_domain(x) and not not_numbers:
        return ColumnBatch(x, np.ones(n, dtype=np.bool_), [])
    cells = invalid_cells(x, allow_missing=True)
    texts = _text_cells(not_numbers or {}, n)
    if texts:
        # A text cell is NaN in x: don't also call it "missing where not allowed".
        cells = [c for c in cells if (c[0], c[1]) not in texts]
        cells.extend((i, j, NOT_A_NUMBER_BY_FEATURE[j]) for i, j in texts)
        cells.sort()
    valid = np.ones(n, dtype=np.bool_)
    problems = []
    for i, j, reason in cells:
        valid[i] = False
        problems.append(CellProblem(row_offset + i, FEATURES[j].name, reason))
    return ColumnBatch(x, valid, problems)


def _text_cells(not_numbers: Mapping[str, npt.NDArray[np.bool_]], n: int) -> set[tuple[int, int]]:
    cells: set[tuple[int, int]] = set()
    for j, name in enumerate(FEATURE_NAMES):
        mask = not_numbers.get(name)
        if mask is not None and mask.any():
            if mask.shape != (n,):
                raise ValueError(f"not_numbers[{name!r}] has shape {mask.shape}, expected ({n},)")
            cells.update((int(i), j) for i in np.flatnonzero(mask))
    return cells
