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

from model.features import FEATURE_NAMES, FEATURES, N_FEATURES, all_in_domain, invalid_cells

#: The reason given for a cell that held text where a number was expected.
NOT_A_NUMBER = "is not a number"
#: The text cells that mean "not measured" (docs/scoring.md), in every CSV this project
#: reads: ``heart-score``, ``POST /predict/table`` uploads and ``heart-train recalibrate``
#: (which reads CSV without pyarrow, and must not disagree about what a blank is). Matched
#: after surrounding whitespace is stripped. Anything else that is not a finite number
#: (``NaN``, ``N/A``, ``inf`` as text; ``?``, the UCI files' marker) is refused: a text
#: "NaN" may be a failed computation rather than a test not done, and the JSON API refuses
#: NaN too.
MISSING_MARKERS: Final[tuple[str, ...]] = ("", "NA", "null")

#: A number as a CSV cell writes one: ASCII digits, an optional sign, point and exponent.
_CSV_NUMBER: Final[re.Pattern[str]] = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)


def csv_number(cell: str) -> float:
    """A CSV cell (already stripped) as a float; ``ValueError`` unless it is a plain number.

    Python's ``float`` reads more than a number as a file writes it: ``1_000``,
    ``NaN``, ``inf``, and digits of any script (Arabic-Indic, full-width). A registry
    cell like that is a typo or an export gone wrong, not a measurement, so
    ``heart-score``, ``/predict/table`` and ``heart-train recalibrate`` all refuse it.

    A plain number beyond a double (an integer of 400 digits) is still a number: it
    comes back as the largest double of its sign, not as an infinity, so that the
    domain rule of :mod:`model.features` refuses it as out of range ("must be between
    80 and 700 mg/dl") rather than as text or as a missing value.
    """
    if _CSV_NUMBER.fullmatch(cell) is None:
        raise ValueError("not a plain number")
    value = float(cell)
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


class MissingColumnsError(ValueError):
    """The batch lacks whole feature columns: no row of it can be scored."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            "missing feature column(s): "
            + ", ".join(missing)
            + " (every one of the 13 must be present; cells may be empty where a value may be"
            " missing)"
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
        raise MissingColumnsError(missing)
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
        cells.extend((i, j, NOT_A_NUMBER) for i, j in texts)
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
