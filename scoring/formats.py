"""What a file's name says it holds, for the input and the output alike.

``heart-score`` picks its reader and its writer by the same rule (unless
``--input-format`` or ``--output-format`` says otherwise), and refuses by name
the exports it does not read (a workbook, an Arrow file, a ZIP archive) with
what to do instead, rather than as a CSV file that fails to parse.
"""

from __future__ import annotations

import os
from typing import Literal

from scoring.errors import InputError

Format = Literal["csv", "parquet"]
#: The names read as CSV; pyarrow decompresses by the same ends (``compression="detect"``).
CSV_NAMES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt")


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
