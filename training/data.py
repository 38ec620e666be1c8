"""Loading and validating the Statlog (Heart) data file.

The file is small, so we parse it ourselves line by line: that is what lets an
error say exactly which row and which column is wrong, instead of a NumPy
parser's "could not convert string to float".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split

from model.features import FEATURE_NAMES, FEATURES, N_FEATURES, TARGET_CODES, invalid_cells

#: SHA-256 of the published UCI file; data/README.md states the same value.
EXPECTED_SHA256: Final[str] = "f5f3b4204c285bafadd85cb735f38b47689f2be7047feb172dcbeab648110bf9"
N_COLUMNS: Final[int] = N_FEATURES + 1
TARGET_NAME: Final[str] = "target"


class DataError(ValueError):
    """The data file is missing, changed or malformed; the message says where."""


def default_data_path() -> Path:
    """``data/heart.dat`` of the source tree, or of the working directory when installed."""
    in_tree = Path(__file__).resolve().parents[1] / "data" / "heart.dat"
    return in_tree if in_tree.is_file() else Path("data") / "heart.dat"


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_dataset(
    path: str | os.PathLike[str] | None = None, *, verify_checksum: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Return ``(X, y)``: the 13 raw features in feature order and the target as 0/1.

    With ``verify_checksum`` a file that differs from the published one is
    refused, so results stay comparable with the documented ones; pass
    ``False`` (``--accept-data-change``) to train on your own data of the
    same format on purpose.
    """
    source = Path(path) if path is not None else default_data_path()
    if not source.is_file():
        raise DataError(f"data file not found: {source}")
    if verify_checksum:
        digest = file_sha256(source)
        if digest != EXPECTED_SHA256:
            raise DataError(
                f"data file {source} has SHA-256 {digest}, not the published {EXPECTED_SHA256}; "
                "pass --accept-data-change to train on a modified file on purpose"
            )
    return parse_rows(source.read_text(encoding="utf-8").splitlines(), source=str(source))


def parse_rows(
    lines: list[str], *, source: str = "<data>"
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Parse whitespace-separated rows; every problem names its row and column."""
    names = (*FEATURE_NAMES, TARGET_NAME)
    rows: list[list[float]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != N_COLUMNS:
            raise DataError(
                f"{source}: row {number} has {len(fields)} columns, expected {N_COLUMNS}"
            )
        values: list[float] = []
        for col, text in enumerate(fields):
            try:
                value = float(text)
            except ValueError:
                raise DataError(
                    f"{source}: row {number}, column {col + 1} ({names[col]}): "
                    f"{text!r} is not a number (missing values are not allowed)"
                ) from None
            values.append(value)
        rows.append(values)
    if not rows:
        raise DataError(f"{source}: no data rows")
    table = np.array(rows, dtype=np.float64)
    x, target = table[:, :N_FEATURES], table[:, N_FEATURES]
    check_cells(source, x)
    bad_target = np.flatnonzero(~np.isin(target, list(TARGET_CODES)))
    if bad_target.size:
        row = int(bad_target[0])
        raise DataError(
            f"{source}: row {row + 1}, column {N_COLUMNS} ({TARGET_NAME}) = {target[row]:g}: "
            f"must be 1 (absence) or 2 (presence)"
        )
    y = np.array([TARGET_CODES[int(t)] for t in target], dtype=np.int64)
    return x, y


def check_cells(source: str, x: npt.NDArray[np.float64], *, allow_missing: bool = False) -> None:
    """Refuse a file with an out-of-domain cell, naming the first one and the count of the
    rest, so every loader reports a bad file the same way (``model.features`` decides)."""
    problems = invalid_cells(x, allow_missing=allow_missing)
    if problems:
        row, col, reason = problems[0]
        more = f" ({len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(
            f"{source}: row {row + 1}, column {col + 1} ({FEATURES[col].name}) = "
            f"{x[row, col]:g}: {reason}{more}"
        )


def split(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    test_size: float = 0.2,
    random_state: int = 2,
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    """Stratified train/test split; the defaults are the tutorial's, so results compare."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=y
    )
    return x_train, x_test, y_train, y_test
