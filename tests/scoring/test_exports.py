"""``heart-score`` on what a hospital's systems actually write, and where it writes it."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from scoring.cli import EXIT_OK, EXIT_ROWS_REFUSED, EXIT_UNUSABLE, main
from scoring.synthetic import KEY, registry
from tests._tools import REQUIRED_NOT_A_NUMBER, TEXT_WHERE_MAY_BE_MISSING
from tests.scoring.same import assert_same_probabilities


@pytest.fixture
def registry_csv(tmp_path: Path) -> Path:
    path = tmp_path / "registry.csv"
    registry(50, seed=2).to_csv(path, index=False)
    return path


def _run(args: list[str], artifact_path: Path) -> int:
    return main([*args, "--model", str(artifact_path)])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        # The output, or the errors file, named as the input: by its name, through `..`,
        # or through a link. Written, the registry was gone and scores stood in its place.
        (["{in}", "{in}"], "the output {in} is the input file"),
        (["{in}", "{dir}/x/../registry.csv"], "is the input file"),
        (["{in}", "{dir}/link.csv"], "is the input file"),
        (["{in}", "{dir}/out.csv", "--errors", "{in}"], "the --errors file {in} is the input"),
        (["{in}", "{dir}/out.csv", "--errors", "{dir}/out.csv"], "is the output file"),
    ],
)
def test_an_output_that_would_replace_the_input_is_refused(
    registry_csv: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    names: list[str],
    message: str,
) -> None:
    where = {"in": str(registry_csv), "dir": str(registry_csv.parent)}
    (registry_csv.parent / "link.csv").symlink_to(registry_csv)
    before = registry_csv.read_bytes()
    assert _run([n.format(**where) for n in names], artifact_path) == EXIT_UNUSABLE
    assert message.format(**where) in capsys.readouterr().err
    assert registry_csv.read_bytes() == before
    assert not (registry_csv.parent / "out.csv").exists()


@pytest.mark.parametrize(
    ("output", "errors", "reason"),
    [
        ("registry.csv/out.csv", None, "Not a directory"),  # a file where a directory must be
        ("a-directory.csv", None, "Is a directory"),
        ("out.csv", "registry.csv/errors.csv", "Not a directory"),
        ("out.csv", "a-directory.csv", "Is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_named_and_exit_2(
    registry_csv: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    output: str,
    errors: str | None,
    reason: str,
) -> None:
    """The message names the file the user asked for, not the temporary one beside it, and
    the reason; no temporary file is left behind, and no output without its errors file."""
    here = registry_csv.parent
    (here / "a-directory.csv").mkdir()
    args = [str(registry_csv), str(here / output)]
    if errors is not None:
        args += ["--errors", str(here / errors)]
    assert _run(args, artifact_path) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    named = here / (errors or output)
    assert err == f"heart-score: cannot write {named}: {reason}\n"
    assert sorted(p.name for p in here.iterdir()) == ["a-directory.csv", "registry.csv"]
    assert list((here / "a-directory.csv").iterdir()) == []
    # The same file and directory, written where they can be: scored.
    assert _run([str(registry_csv), str(here / "out.csv")], artifact_path) == EXIT_OK


@pytest.mark.parametrize(
    ("input_name", "output_name", "message"),
    [
        # The option that names a format is --input-format or --output-format: the message
        # named a --format that does not exist.
        ("registry.gz", "out.csv", "cannot tell the format of {dir}/registry.gz: name it"),
        ("registry.csv", "scores.out", "or pass --output-format\n"),
        ("registry.xlsx", "out.csv", "is a spreadsheet workbook, which heart-score does not"),
        ("registry.feather", "out.csv", "is an Arrow IPC file, which heart-score does not read"),
    ],
)
def test_a_name_that_says_no_format_read_names_the_option_or_the_remedy(
    registry_csv: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    input_name: str,
    output_name: str,
    message: str,
) -> None:
    here = registry_csv.parent
    source = here / input_name
    if source != registry_csv:
        source.write_bytes(registry_csv.read_bytes())
    assert _run([str(source), str(here / output_name)], artifact_path) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert message.format(dir=here) in err and "--format" not in err


@pytest.mark.parametrize("end", [".gz", ".bz2", ".zst"])
def test_a_compressed_name_is_read_and_written_compressed(
    registry_csv: Path, artifact_path: Path, end: str
) -> None:
    """An output named .csv.gz was plain text under that name: neither heart-score nor
    anything else that goes by the name could read it back. The --errors file too."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    here = registry_csv.parent
    df = registry(50, seed=2).astype({"thal": object})
    df.loc[3, "thal"] = "?"  # one refused row, for the errors file
    df.to_csv(registry_csv, index=False)
    packed = here / f"registry.csv{end}"
    with pa.output_stream(packed, compression="detect") as sink:
        sink.write(registry_csv.read_bytes())
    plain = [str(registry_csv), str(here / "out.csv"), "--errors", str(here / "e.csv")]
    assert _run(plain, artifact_path) == EXIT_ROWS_REFUSED
    packed_args = [str(packed), str(here / f"out.csv{end}"), "--errors", str(here / f"e.csv{end}")]
    assert _run(packed_args, artifact_path) == EXIT_ROWS_REFUSED
    for name in (f"out.csv{end}", f"e.csv{end}"):
        with pa.input_stream(here / name, compression=None) as raw:
            assert not raw.read(64).startswith(b'"row"')  # not plain text
    for name in ("out.csv", "e.csv"):
        want = pacsv.read_csv(here / name)
        assert pacsv.read_csv(here / f"{name}{end}").equals(want) and want.num_rows >= 1


def _european(df: pd.DataFrame, *, decimal: str = ",") -> bytes:
    """``df`` as Excel writes "CSV UTF-8" where the decimal mark is a comma: a byte-order
    mark, ';' between cells, decimal commas, CRLF, extra columns (a name holding the
    separator's neighbour, a date) and the columns in another order."""
    out = df[[*reversed(df.columns)]].copy()
    out.insert(0, "name", "Doe, J.")
    out.insert(1, "visit", "01.02.1988")
    text = out.to_csv(index=False, sep=";", decimal=decimal, lineterminator="\r\n")
    return ("\ufeff" + text).encode("utf-8")


def test_a_european_excel_export_reads_as_the_plain_file_with_its_dialect(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = registry(300, seed=3, missing=0.1)
    plain, eu = tmp_path / "plain.csv", tmp_path / "eu.csv"
    df.to_csv(plain, index=False)
    eu.write_bytes(_european(df))
    assert b"," in eu.read_bytes().split(b"\r\n")[5]  # decimal commas, not just the name's
    keys = ["--key", KEY]
    assert _run([str(plain), str(tmp_path / "p.csv"), *keys], artifact_path) == EXIT_OK
    dialect = ["--delimiter", ";", "--decimal", ","]
    assert _run([str(eu), str(tmp_path / "e.csv"), *keys, *dialect], artifact_path) == EXIT_OK
    assert pd.read_csv(tmp_path / "e.csv").equals(pd.read_csv(tmp_path / "p.csv"))
    # Without the dialect, the header's ';' is named, with the options that read it.
    assert _run([str(eu), str(tmp_path / "x.csv")], artifact_path) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err == (
        f"heart-score: cannot read {eu} as csv: its header has no ',' between the column names "
        "but has ';': pass --delimiter ';' (and --decimal ',' if its numbers are written 1,5)\n"
    )
    # With the delimiter alone, a decimal comma is refused by row and column, never misread.
    args = [str(eu), str(tmp_path / "x.csv"), "--delimiter", ";", "--errors", str(tmp_path / "r")]
    assert _run(args, artifact_path) == EXIT_ROWS_REFUSED
    refused = pd.read_csv(tmp_path / "r")
    # Each feature by its kind: age, sex and chest pain type are required.
    assert len(refused) and set(refused["reason"]) == {
        TEXT_WHERE_MAY_BE_MISSING,
        REQUIRED_NOT_A_NUMBER,
    }
    required = refused.loc[refused["reason"] == REQUIRED_NOT_A_NUMBER, "column"]
    assert set(required) == {"age", "sex", "chest_pain_type"}
    scored = pd.read_csv(tmp_path / "x.csv")
    assert scored["probability"].isna().tolist() == scored.index.isin(refused["row"]).tolist()


@pytest.mark.parametrize("cell", ["1.5", "1.234", " 2.0 "])
@pytest.mark.parametrize("chunk_rows", ["100", "7"])  # no effect on the dialect, a check
def test_with_a_decimal_comma_a_point_is_refused_not_read_as_a_decimal_mark(
    tmp_path: Path, artifact_path: Path, cell: str, chunk_rows: str
) -> None:
    """In a file whose decimal mark is a comma, 1.234 is a thousand and more: read as
    1.234 it would be a value silently a thousand times too small. Refused, on the fast
    read (pyarrow's decimal_point) and on the read again as text alike."""
    lines = _european(registry(20, seed=5)).decode("utf-8").split("\r\n")
    at = lines[0].split(";").index("st_depression")
    cells = lines[5].split(";")
    cells[at] = cell
    lines[5] = ";".join(cells)  # row 4
    inp = tmp_path / "eu.csv"
    inp.write_text("\r\n".join(lines), encoding="utf-8")
    args = [str(inp), str(tmp_path / "o.csv"), "--delimiter", ";", "--decimal", ","]
    args += ["--errors", str(tmp_path / "r.csv"), "--chunk-rows", chunk_rows]
    assert _run(args, artifact_path) == EXIT_ROWS_REFUSED
    refused = pd.read_csv(tmp_path / "r.csv")
    assert refused[["row", "column", "reason"]].values.tolist() == [
        [4, "st_depression", TEXT_WHERE_MAY_BE_MISSING]
    ]


def test_a_tab_separated_export_is_read_with_delimiter_tab(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = registry(40, seed=6, missing=0.1)
    (tmp_path / "in.tsv.csv").write_text(df.to_csv(index=False, sep="\t"))
    df.to_csv(tmp_path / "plain.csv", index=False)
    inp = str(tmp_path / "in.tsv.csv")
    assert _run([inp, str(tmp_path / "o.csv")], artifact_path) == EXIT_UNUSABLE
    assert "has tab: pass --delimiter tab\n" in capsys.readouterr().err
    assert _run([inp, str(tmp_path / "o.csv"), "--delimiter", "tab"], artifact_path) == EXIT_OK
    assert _run([str(tmp_path / "plain.csv"), str(tmp_path / "p.csv")], artifact_path) == EXIT_OK
    assert pd.read_csv(tmp_path / "o.csv").equals(pd.read_csv(tmp_path / "p.csv"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delimiter", ",", "--decimal", ","], "--delimiter and --decimal are both ','"),
        (["--delimiter", "ab"], "one character that no number holds"),
        (["--delimiter", "-"], "one character that no number holds"),
        (["--decimal", ";"], "invalid choice"),
    ],
)
def test_a_dialect_that_cannot_be_read_apart_is_a_usage_error(
    registry_csv: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as done:
        main([str(registry_csv), str(registry_csv.parent / "o.csv"), *args])
    assert done.value.code == EXIT_UNUSABLE and message in capsys.readouterr().err


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    df.to_parquet(sink, index=False)
    return sink.getvalue()


def _zip_bytes(text: str) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("registry.csv", text)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda df: _parquet_bytes(df), "it is a Parquet file: name it .parquet, or pass --inp"),
        (lambda df: gzip.compress(df.to_csv(index=False).encode()), "it is gzip-compressed: na"),
        (lambda df: _zip_bytes(df.to_csv(index=False)), "it is a ZIP archive (an .xlsx or .o"),
        (lambda df: df.to_csv(index=False).encode("utf-16"), "it is UTF-16 text (Excel's 'Uni"),
    ],
)
def test_a_file_named_csv_that_is_another_format_says_what_it_is(
    tmp_path: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    said: str,
) -> None:
    """Read as CSV, each was 'a row of the wrong width' or a header without the features,
    which sent the user looking for the wrong mistake."""
    inp = tmp_path / "registry.csv"
    inp.write_bytes(make(registry(30, seed=1)))  # type: ignore[operator]
    assert _run([str(inp), str(tmp_path / "o.csv")], artifact_path) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith(f"heart-score: cannot read {inp} as csv: {said}")
    assert err.count("\n") == 1 and "cells where the header" not in err


def test_a_header_that_differs_in_case_or_spaces_is_named(
    registry_csv: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = registry(5).rename(columns={"age": "Age", "sex": " sex ", "thal": "Thal"})
    df.to_csv(registry_csv, index=False)
    assert _run([str(registry_csv), str(registry_csv.parent / "o.csv")], artifact_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("heart-score: missing feature column(s): age, sex, thal (")
    assert err.endswith(
        "; the header has 'Age', ' sex ', 'Thal': names must match exactly (lower case, "
        "no spaces)\n"
    )


def test_the_dialect_is_the_csv_files_and_a_parquet_text_column_is_read_as_any_text(
    tmp_path: Path, artifact_path: Path
) -> None:
    df = registry(10, seed=4).astype({"st_depression": str})
    df.loc[2, "st_depression"] = "1,5"
    df.to_parquet(tmp_path / "in.parquet", index=False)
    args = [str(tmp_path / "in.parquet"), str(tmp_path / "o.csv"), "--decimal", ","]
    args += ["--delimiter", ";", "--errors", str(tmp_path / "r.csv")]
    assert _run(args, artifact_path) == EXIT_ROWS_REFUSED
    assert pd.read_csv(tmp_path / "r.csv")["row"].tolist() == [2]


@pytest.mark.parametrize(
    ("cells", "refused"),
    [
        # docs/scoring.md: a number as a file writes one, with spaces around it or not.
        (["130", " 130 ", "130.0", "1.3e2", "+130", "1.30E+02"], []),
        # A dash or a dot alone is text, never 0 (nor "not measured": not the markers).
        (["130", "-", ".", "?", "N/A", "NaN"], [1, 2, 3, 4, 5]),
    ],
)
def test_how_a_number_may_be_written_and_what_is_never_one(
    tmp_path: Path, artifact_path: Path, cells: list[str], refused: list[int]
) -> None:
    df = registry(len(cells), seed=9).astype({"resting_blood_pressure": object})
    df["resting_blood_pressure"] = cells
    df.to_csv(tmp_path / "in.csv", index=False)
    args = [str(tmp_path / "in.csv"), str(tmp_path / "o.csv"), "--errors", str(tmp_path / "r")]
    assert _run(args, artifact_path) == (EXIT_ROWS_REFUSED if refused else EXIT_OK)
    assert pd.read_csv(tmp_path / "r")["row"].tolist() == refused
    scored = pd.read_csv(tmp_path / "o.csv")["probability"]
    fixed = registry(len(cells), seed=9).assign(resting_blood_pressure=130.0)
    fixed.to_csv(tmp_path / "fixed.csv", index=False)
    assert _run([str(tmp_path / "fixed.csv"), str(tmp_path / "f.csv")], artifact_path) == 0
    want = pd.read_csv(tmp_path / "f.csv")["probability"]
    kept = ~scored.index.isin(refused)
    assert_same_probabilities(scored[kept].to_numpy(), want[kept].to_numpy())
    assert scored[~kept].isna().all()


class _FullOnClose:
    """A stream whose last flush, on close, meets a full disk: where a compressed file's
    trailer is written, after every row went through."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def close(self) -> None:
        self._stream.close()  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("which", ["output", "errors"])
def test_a_disk_full_at_the_last_flush_names_the_file_and_leaves_no_partial(
    tmp_path: Path,
    artifact_path: Path,
    which: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was an OSError naming the hidden .partial file, which stayed on the disk."""
    import io as stdlib_io

    import scoring.writing

    registry(20, seed=4).assign(age=[200] + [50] * 19).to_csv(tmp_path / "in.csv", index=False)
    out, errors = tmp_path / "o.csv.gz", tmp_path / "r.csv.gz"
    if which == "output":
        real = scoring.writing.output_stream
        monkeypatch.setattr(scoring.writing, "output_stream", lambda t, p: _FullOnClose(real(t, p)))
        failing = out
    else:
        real_wrapper = stdlib_io.TextIOWrapper
        monkeypatch.setattr(
            "scoring.cli.io.TextIOWrapper", lambda *a, **k: _FullOnClose(real_wrapper(*a, **k))
        )
        failing = errors
    args = [str(tmp_path / "in.csv"), str(out), "--errors", str(errors)]
    assert _run(args, artifact_path) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert f"cannot write {failing}: No space left on device" in err, err
    assert not list(tmp_path.glob(".*.partial"))
    assert not failing.exists()
