"""``heart-score`` on text that is not UTF-8: a Latin-1 or Windows-1252 export, a Parquet
file whose text was never checked. A feature cell is refused as not a number, an extra
column is ignored, a bad row or key refuses the input in one line: never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.cli import EXIT_OK, EXIT_ROWS_REFUSED, EXIT_UNUSABLE, main
from scoring.synthetic import KEY, registry
from tests._tools import TEXT_WHERE_MAY_BE_MISSING, run, text_not_utf8

#: "24é" in Latin-1: the byte 0xE9, which no UTF-8 text starts a character with.
NOT_UTF8_NUMBER = "24\xe9"


def _lines(n: int, seed: int) -> tuple[str, list[str]]:
    header, *rows = registry(n, seed=seed).to_csv(index=False).splitlines()
    return header, rows


def _with_cell(header: str, row: str, column: str, cell: str) -> str:
    cells = row.split(",")
    cells[header.split(",").index(column)] = cell
    return ",".join(cells)


def _write_latin1(path: Path, header: str, rows: list[str]) -> None:
    path.write_bytes("\n".join([header, *rows, ""]).encode("latin-1"))


def _table(n: int, seed: int, column: str, values: pa.Array) -> pa.Table:
    """``n`` valid patients with ``column`` replaced by (or added as) ``values``."""
    table = pa.Table.from_pandas(registry(n, seed=seed), preserve_index=False)
    index = table.schema.get_field_index(column)
    if index < 0:
        return table.append_column(column, values)
    return table.set_column(index, column, values)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_feature_cell_that_is_not_utf8_is_refused_and_the_rest_scored(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """CSV: pyarrow refused the whole column read again as text, and heart-score printed a
    traceback and wrote nothing. Parquet: pyarrow does not check the text as it reads it,
    and its text functions refused the whole column (exit 2). The cell is one more cell
    that is not a number: the row refused, the output complete, exit 1."""
    inp, out, errors = tmp_path / f"in.{fmt}", tmp_path / "out.csv", tmp_path / "errors.csv"
    if fmt == "csv":
        header, rows = _lines(5, seed=1)
        rows[2] = _with_cell(header, rows[2], "serum_cholesterol", NOT_UTF8_NUMBER)
        _write_latin1(inp, header, rows)
    else:
        cells = [b"245", b"230", NOT_UTF8_NUMBER.encode("latin-1"), b"300", b"250"]
        pq.write_table(_table(5, 1, "serum_cholesterol", text_not_utf8(cells)), inp)
    args = [str(inp), str(out), "--key", KEY, "--errors", str(errors)]
    assert main([*args, "--model", str(artifact_path)]) == EXIT_ROWS_REFUSED
    listed = pd.read_csv(errors)
    assert listed.values.tolist() == [[2, 2, "serum_cholesterol", TEXT_WHERE_MAY_BE_MISSING]]
    scored = pd.read_csv(out)
    assert scored[KEY].tolist() == [0, 1, 2, 3, 4]
    assert scored["probability"].isna().tolist() == [False, False, True, False, False]
    assert "1 of 5 rows refused" in capsys.readouterr().err


def test_a_column_name_that_is_not_utf8_is_ignored(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Windows-1252 header ("Bemerkung ä"): pyarrow decodes every name at once, and
    heart-score printed a traceback. The column is extra, so it is ignored."""
    header, rows = _lines(4, seed=2)
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_bytes(
        "\n".join([f"{header},Bemerkung \xe4", *(f"{r},x" for r in rows), ""]).encode("cp1252")
    )
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_OK
    assert len(pd.read_csv(out)) == 4
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("progress", [False, True])
def test_a_parquet_column_name_that_is_not_utf8_is_unreadable_input(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    """Parquet requires UTF-8 names, and pyarrow decodes them all as it opens the file (to
    find columns by name), so the column cannot be skipped as in CSV: one line and exit 2,
    not a traceback (the progress line's row count opens the file first)."""
    inp, out = tmp_path / "in.parquet", tmp_path / "out.csv"
    table = pa.Table.from_pandas(registry(3, seed=3), preserve_index=False)
    field = pa.field("Bemerkung \xe4".encode("cp1252"), pa.int64())  # pyarrow takes bytes
    pq.write_table(table.append_column(field, pa.array([1, 2, 3])), inp)
    args = [str(inp), str(out), "--model", str(artifact_path)]
    assert main([*args, "--progress" if progress else "--quiet"]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err == (
        f"heart-score: cannot read {inp} as parquet: a column name is not UTF-8 text, which "
        "Parquet requires; rename the column where the file is written\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_that_is_not_utf8_in_an_ignored_column_is_ignored(
    tmp_path: Path, artifact_path: Path, fmt: str
) -> None:
    inp, out = tmp_path / f"in.{fmt}", tmp_path / "out.csv"
    if fmt == "csv":
        header, rows = _lines(3, seed=4)
        _write_latin1(inp, f"{header},name", [f"{r},M\xfcller" for r in rows])
    else:
        pq.write_table(_table(3, 4, "name", text_not_utf8([b"M\xfcller"] * 3)), inp)
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_OK
    assert len(pd.read_csv(out)) == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_key_that_is_not_utf8_is_refused_in_one_line(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """A key is copied to the output as text, which these bytes are not. CSV: pyarrow's
    refusal was taken for a feature cell of text, twice, and ended in a traceback;
    Parquet: the key was copied unchecked, and listing a refused row's key in --errors
    ended in a traceback. Both refuse the input, naming the column, never its bytes."""
    inp, out, errors = tmp_path / f"in.{fmt}", tmp_path / "out.csv", tmp_path / "errors.csv"
    if fmt == "csv":
        header, rows = _lines(3, seed=5)
        rows = [f"{r},Anna" for r in rows]
        rows[1] = f"{rows[1].removesuffix(',Anna')},M\xfcller"
        _write_latin1(inp, f"{header},name", rows)
    else:
        pq.write_table(_table(3, 5, "name", text_not_utf8([b"Anna", b"M\xfcller", b"Li"])), inp)
    args = [str(inp), str(out), "--key", "name", "--errors", str(errors)]
    assert main([*args, "--model", str(artifact_path)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the key column 'name' is not UTF-8 text" in err
    assert not out.exists() and not errors.exists()


@pytest.mark.parametrize("threads", ["0", "1"])
@pytest.mark.parametrize("row", [1, 19_000])  # in the first block read for the header; later
def test_a_row_of_the_wrong_width_that_is_not_utf8_is_named_as_any_other(
    tmp_path: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unraisable: list[str],
    row: int,
    threads: str,
) -> None:
    """pyarrow decodes a bad row's text before it calls the invalid-row handler; for a
    Latin-1 row that failed inside pyarrow ("Exception ignored" and a traceback on
    stderr) and the message lost the documented numbering (pyarrow's, from 1 with the
    header, or none). A feature cell that is not UTF-8 before it must not stop the
    search for the row's number either."""
    monkeypatch.setattr(pa, "set_cpu_count", lambda n: None)  # --threads: not for the session
    header, rows = _lines(20_000, seed=6)
    rows = [f"{r},Anna" for r in rows]
    rows[0] = _with_cell(header, rows[0], "age", NOT_UTF8_NUMBER)
    rows[row] = f"{rows[row].removesuffix(',Anna')},M\xfcller,987654321"
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_latin1(inp, f"{header},name", rows)
    assert inp.stat().st_size > 1 << 20  # more than one block of the reader
    args = [str(inp), str(out), "--model", str(artifact_path), "--threads", threads]
    assert main(args) == EXIT_UNUSABLE
    # The header is read from the first 64 KiB, the rows in blocks of 1 MiB after.
    where = f"cannot read {inp} as csv" if row == 1 else f"cannot parse {inp} as CSV"
    assert capsys.readouterr().err == (
        f"heart-score: {where}: row {row} has 16 cells where the header has 15 "
        "(rows are counted from 0, the header not counted)\n"
    )
    assert unraisable == [] and not out.exists()


def test_the_refusal_is_one_line_on_stderr_from_the_command(
    tmp_path: Path, artifact_path: Path
) -> None:
    """The whole of stderr, from the real command: what the probe saw was pyarrow's
    "Exception ignored in: <scoring.files._RowWidths ...>" and a traceback first."""
    header, rows = _lines(3, seed=7)
    rows = [f"{r},Anna" for r in rows]
    rows[1] = f"{rows[1].removesuffix(',Anna')},M\xfcller,extra"
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_latin1(inp, f"{header},name", rows)
    done = run([sys.executable, "-m", "scoring", str(inp), str(out), "--model", str(artifact_path)])
    assert (done.returncode, done.stderr) == (
        EXIT_UNUSABLE,
        f"heart-score: cannot read {inp} as csv: row 1 has 16 cells where the header has 15 "
        "(rows are counted from 0, the header not counted)\n",
    )


def test_a_wide_row_that_quotes_pyarrows_words_is_still_a_wide_row(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyarrow's message quotes the row's first 100 bytes, and the error was told by the
    words in it: a row whose extra cell read "CSV conversion error" was taken for a cell
    of text, read again, and ended in a traceback."""
    header, rows = _lines(3, seed=8)
    rows[1] = f"In CSV column #4: CSV conversion error to double,{rows[1]}"
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text("\n".join([header, *rows, ""]))
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_UNUSABLE
    assert "row 1 has 15 cells where the header has 14" in capsys.readouterr().err


def test_a_parquet_dictionary_of_text_that_is_not_utf8_is_unreadable_input(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyarrow checks a dictionary-encoded Parquet column's text as it decodes it, and its
    refusal ended in a traceback: it names no column or row, so the input is refused."""
    cells = text_not_utf8([b"3", NOT_UTF8_NUMBER.encode("latin-1"), b"7"])
    thal = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], pa.int8()), cells)
    inp, out = tmp_path / "in.parquet", tmp_path / "out.csv"
    pq.write_table(_table(3, 9, "thal", thal), inp)
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err == f"heart-score: cannot read {inp} as parquet: Invalid UTF8 payload\n"
    assert not out.exists()
