"""``heart-score``: files in, the same probabilities as the predictor out, bad rows listed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.artifact import load_artifact
from model.features import FEATURE_NAMES
from scoring.cli import EXIT_OK, EXIT_ROWS_REFUSED, EXIT_UNUSABLE, main
from scoring.core import HIGH, LOW
from scoring.synthetic import KEY, registry
from tests._tools import REQUIRED_NOT_A_NUMBER, TEXT_WHERE_MAY_BE_MISSING
from tests.scoring.same import assert_same_probabilities


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return registry(5_000, seed=7, missing=0.05)


def _expected(artifact_path: Path, df: pd.DataFrame) -> np.ndarray:
    return load_artifact(artifact_path).probability(df[list(FEATURE_NAMES)].to_numpy())


@pytest.mark.parametrize(
    ("src", "dst"), [("parquet", "parquet"), ("csv", "csv"), ("csv", "parquet")]
)
def test_scores_equal_the_predictor(
    tmp_path: Path, artifact_path: Path, frame: pd.DataFrame, src: str, dst: str
) -> None:
    inp, out = tmp_path / f"in.{src}", tmp_path / f"out.{dst}"
    frame.to_parquet(inp, index=False) if src == "parquet" else frame.to_csv(inp, index=False)
    code = main(
        [str(inp), str(out), "--key", KEY, "--model", str(artifact_path), "--chunk-rows", "777"]
    )
    assert code == EXIT_OK
    got = pd.read_parquet(out) if dst == "parquet" else pd.read_csv(out)
    assert list(got.columns) == [KEY, "probability", "prediction", LOW, HIGH]
    # A Parquet key keeps its declared type (int64 here); a CSV key is text, as written.
    keys = frame[KEY] if src == "parquet" or dst == "csv" else frame[KEY].astype(str)
    assert got[KEY].tolist() == keys.tolist()
    if dst == "parquet":
        assert pq.read_schema(out).field(KEY).type == (pa.int64() if src == dst else pa.string())
    expected = _expected(artifact_path, frame)
    # CSV holds the shortest text that reads back as the same double, so CSV loses nothing;
    # BLAS sums a row's products in an order that depends on the chunk's row count, so a
    # different chunking moves the last bit (measured: at most 1.1e-16). Same below 1e-15.
    assert_same_probabilities(got["probability"].to_numpy(), expected)
    threshold = load_artifact(artifact_path).threshold
    assert np.array_equal(got["prediction"].to_numpy(), (expected >= threshold).astype(int))


def test_bad_rows_listed_kept_with_empty_scores_and_exit_1(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = registry(30, seed=1).astype({"serum_cholesterol": object})
    df.loc[3, "age"] = 650
    df.loc[5, "thal"] = 5
    df.loc[9, "serum_cholesterol"] = "high"
    df.loc[11, "age"] = np.nan
    inp, out, errors = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "errors.csv"
    df.to_csv(inp, index=False)
    code = main(
        [str(inp), str(out), "--key", KEY, "--errors", str(errors), "--model", str(artifact_path)]
    )
    assert code == EXIT_ROWS_REFUSED
    listed = pd.read_csv(errors)
    assert list(listed.columns) == ["row", KEY, "column", "reason"]
    assert listed[["row", "column"]].values.tolist() == [
        [3, "age"],
        [5, "thal"],
        [9, "serum_cholesterol"],
        [11, "age"],
    ]
    assert listed.loc[2, "reason"] == TEXT_WHERE_MAY_BE_MISSING
    scored = pd.read_csv(out)
    assert len(scored) == 30
    assert scored["probability"].isna().tolist() == [i in (3, 5, 9, 11) for i in range(30)]
    err = capsys.readouterr().err
    assert "4 of 30 rows refused" in err
    assert "650" not in err and "high" not in err  # never a patient's value


def test_csv_nan_text_is_refused_and_the_documented_markers_are_missing(
    tmp_path: Path, artifact_path: Path
) -> None:
    """The same rule as /predict/table: empty, NA and null are "not measured"; NaN is text."""
    df = registry(7, seed=3).astype({"thal": object, "age": object})
    df["thal"] = ["", "NA", "null", "NaN", "N/A", 3, "?"]
    df.loc[5, "age"] = "?"  # required: the reason says so, not "leave it empty"
    inp, out, errors = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "errors.csv"
    df.to_csv(inp, index=False)
    code = main([str(inp), str(out), "--errors", str(errors), "--model", str(artifact_path)])
    assert code == EXIT_ROWS_REFUSED
    listed = pd.read_csv(errors, keep_default_na=False)
    assert listed[["row", "column", "reason"]].values.tolist() == [
        [3, "thal", TEXT_WHERE_MAY_BE_MISSING],
        [4, "thal", TEXT_WHERE_MAY_BE_MISSING],
        [5, "age", REQUIRED_NOT_A_NUMBER],
        [6, "thal", TEXT_WHERE_MAY_BE_MISSING],
    ]
    scored = pd.read_csv(out)
    assert scored["probability"].notna().tolist() == [True, True, True, False, False, False, False]


def test_missing_column_is_named_and_nothing_written(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    registry(10).drop(columns=["thal"]).to_parquet(inp)
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_UNUSABLE
    assert "thal" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(("repeated", "args"), [("age", []), (KEY, ["--key", KEY])])
def test_a_repeated_feature_or_key_column_is_named_and_exit_2(
    tmp_path: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    repeated: str,
    args: list[str],
) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    header, *rows = registry(5).to_csv(index=False).splitlines()
    inp.write_text("\n".join([f"{header},{repeated}", *(f"{r},1" for r in rows)]) + "\n")
    assert main([str(inp), str(out), *args, "--model", str(artifact_path)]) == EXIT_UNUSABLE
    assert f"column(s) given more than once: {repeated}" in capsys.readouterr().err
    assert not out.exists()


def test_a_key_named_twice_is_refused_with_exit_2(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--key id --key id`` was written as one column with exit 0, where the docs list a
    repeated key among the exit-2 cases; most likely a slip for two different keys."""
    inp, out = tmp_path / "in.parquet", tmp_path / "out.csv"
    registry(5).to_parquet(inp)
    args = [str(inp), str(out), "--key", KEY, "--key", KEY, "--model", str(artifact_path)]
    assert main(args) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert f"--key given more than once for: {KEY}; name each key column once" in err
    assert not out.exists()


def test_unknown_key_and_unknown_format_exit_2(tmp_path: Path, artifact_path: Path) -> None:
    inp = tmp_path / "in.parquet"
    registry(10).to_parquet(inp)
    assert (
        main(
            [str(inp), str(tmp_path / "o.parquet"), "--key", "nope", "--model", str(artifact_path)]
        )
        == 2
    )
    assert main([str(inp), str(tmp_path / "o.xlsx"), "--model", str(artifact_path)]) == 2


def test_empty_input_gives_an_empty_output_with_the_columns(
    tmp_path: Path, artifact_path: Path
) -> None:
    inp, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    registry(0).to_parquet(inp, index=False)
    assert main([str(inp), str(out), "--key", KEY, "--model", str(artifact_path)]) == EXIT_OK
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == [
        KEY,
        "probability",
        "prediction",
        LOW,
        HIGH,
    ]


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz"])
def test_a_header_without_its_line_end_is_an_input_of_no_rows(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """pyarrow calls such a file empty; /predict/table reads it as a header (837c5ca), and
    heart-score reads it the same way: no rows in, an output of only the header, exit 0."""
    import gzip

    header = registry(0).to_csv(index=False).rstrip("\n").encode()
    assert b"\n" not in header and KEY in header.decode()
    inp, out = tmp_path / name, tmp_path / "out.csv"
    inp.write_bytes(gzip.compress(header) if name.endswith(".gz") else header)
    args = [str(inp), str(out), "--key", KEY, "--model", str(artifact_path)]
    assert main(args) == EXIT_OK, capsys.readouterr().err
    assert out.read_text().splitlines() == [
        ",".join(f'"{c}"' for c in [KEY, "probability", "prediction", LOW, HIGH])
    ]
    # A file with no header at all is still no table: nothing to score, exit 2.
    (tmp_path / "nothing.csv").write_bytes(b"")
    assert main([str(tmp_path / "nothing.csv"), str(out), "--model", str(artifact_path)]) == 2
    assert "Empty CSV file" in capsys.readouterr().err


def test_without_a_key_rows_are_numbered(tmp_path: Path, artifact_path: Path) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    registry(300).to_csv(inp, index=False)
    assert main([str(inp), str(out), "--model", str(artifact_path), "--chunk-rows", "64"]) == 0
    assert pd.read_csv(out)["row"].tolist() == list(range(300))


def test_module_entry_point_is_quiet_off_a_terminal(tmp_path: Path, artifact_path: Path) -> None:
    inp, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    registry(100).to_parquet(inp)
    run = subprocess.run(
        [sys.executable, "-m", "scoring", str(inp), str(out), "--model", str(artifact_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    forced = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring",
            str(inp),
            str(out),
            "--model",
            str(artifact_path),
            "--progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forced.returncode == 0 and "rows/s" in forced.stderr


def test_without_pyarrow_the_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == EXIT_UNUSABLE
    assert "heart-risk[bulk]" in capsys.readouterr().err


def test_version_and_help_show_each_default(capsys: pytest.CaptureFixture[str]) -> None:
    """README: every command has --version, and --help shows each option's default."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"\S.* \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "(default: 131072)" in flat  # --chunk-rows
    assert "single-threaded) (default: 0)" in flat  # --threads


def test_only_plain_numbers_are_read_from_csv(tmp_path: Path, artifact_path: Path) -> None:
    """Python's float reads '1_30', 'inf' and digits of other scripts; a CSV number is
    ASCII digits, sign, point and exponent, and anything else is text, refused."""
    odd = ["1_30", "\u0661\u0663\u0660", "\uff11\uff13\uff10", "inf", "0x82", "130.", "1.3e2"]
    df = registry(len(odd), seed=3).astype({"resting_blood_pressure": object})
    df["resting_blood_pressure"] = odd
    inp, out, errors = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "errors.csv"
    df.to_csv(inp, index=False)
    code = main([str(inp), str(out), "--errors", str(errors), "--model", str(artifact_path)])
    assert code == EXIT_ROWS_REFUSED
    listed = pd.read_csv(errors)
    assert listed["row"].tolist() == [0, 1, 2, 3, 4]
    assert set(listed["reason"]) == {TEXT_WHERE_MAY_BE_MISSING}
    assert pd.read_csv(out)["probability"].notna().tolist() == [False] * 5 + [True, True]


def test_a_number_beyond_a_double_is_out_of_range_not_text(
    tmp_path: Path, artifact_path: Path
) -> None:
    """A 400-digit integer is a number too large for the range, not 'is not a number'; the
    text 'inf', which pyarrow reads as the same infinity, still is."""
    df = registry(4, seed=3).astype({"resting_blood_pressure": object})
    df["resting_blood_pressure"] = ["1" * 400, "-1e400", "inf", "130"]
    inp, out, errors = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "errors.csv"
    df.to_csv(inp, index=False)
    code = main([str(inp), str(out), "--errors", str(errors), "--model", str(artifact_path)])
    assert code == EXIT_ROWS_REFUSED
    listed = pd.read_csv(errors)
    assert listed[["row", "reason"]].values.tolist() == [
        [0, "must be between 60 and 260 mm Hg"],
        [1, "must be between 60 and 260 mm Hg"],
        [2, TEXT_WHERE_MAY_BE_MISSING],
    ]


@pytest.mark.parametrize("threads", ["0", "1"])
@pytest.mark.parametrize("row", [5, 19_000])  # in the first block read for the header; later
def test_a_row_of_the_wrong_width_is_named_and_exit_2(
    tmp_path: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    row: int,
    threads: str,
) -> None:
    """pyarrow's message quotes the row and, reading on several threads, has no number."""
    monkeypatch.setattr(pa, "set_cpu_count", lambda n: None)  # --threads: not for the session
    header, *rows = registry(20_000, seed=4).to_csv(index=False).splitlines()
    rows[row] += ",987654321"
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text("\n".join([header, *rows]) + "\n")
    assert inp.stat().st_size > 1 << 20  # more than one block of the reader
    args = [str(inp), str(out), "--model", str(artifact_path), "--threads", threads]
    assert main(args) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert f"row {row} has 15 cells where the header has 14 (rows are counted from 0" in err
    assert "987654321" not in err and not out.exists()


def test_parquet_dictionary_and_decimal_columns_are_numbers_and_a_timestamp_is_refused(
    tmp_path: Path, artifact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The upload's reading of each Arrow type, in a Parquet file: a category column (of
    text, the kind Parquet keeps dictionary-encoded) and a decimal are scored as numbers;
    a timestamp column is refused once, by name and type."""
    df = registry(40, seed=2)
    table = pa.Table.from_pandas(df, preserve_index=False)
    for name, change in [
        ("thal", lambda c: c.cast(pa.int64()).cast(pa.string()).dictionary_encode()),
        ("age", lambda c: c.cast(pa.decimal128(10, 1))),
    ]:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, change(table.column(name)))
    inp, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, inp)
    assert pa.types.is_dictionary(pq.ParquetFile(inp).schema_arrow.field("thal").type)
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_OK
    assert_same_probabilities(
        pq.read_table(out)["probability"].to_numpy(), _expected(artifact_path, df)
    )

    index = table.schema.get_field_index("thal")
    dates = pa.array(range(40), pa.timestamp("ms"))  # Parquet keeps ms (s becomes ms)
    pq.write_table(table.set_column(index, "thal", dates), inp)
    out.unlink()
    assert main([str(inp), str(out), "--model", str(artifact_path)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "column 'thal' has the type timestamp[ms], which holds no numbers" in err
    assert not out.exists()


@pytest.mark.parametrize("feature_text", [False, True])  # the fast read, and the read again
@pytest.mark.parametrize("dst", ["parquet", "csv"])
def test_a_csv_key_is_copied_as_text_whatever_its_first_block_looks_like(
    tmp_path: Path,
    artifact_path: Path,
    capsys: pytest.CaptureFixture[str],
    dst: str,
    feature_text: bool,
) -> None:
    """A key that reads as integers in the file's first block and holds text later (an id
    like A17 at row 19,500) once crashed both reads with a traceback: pyarrow fixes a
    column's type from the first block. A key is an identifier: read as text, it is copied
    as written (007 stays 007), and has the type string in every output, as an empty
    input's key always had."""
    df = registry(20_000, seed=5).astype({KEY: str})
    df.loc[3, KEY] = "007"
    df.loc[19_500, KEY] = "A17"
    if feature_text:  # a text feature cell: scored by the read of the features as text
        df = df.astype({"thal": object})
        df.loc[19_600, "thal"] = "high"
    inp, out, errors = tmp_path / "in.csv", tmp_path / f"out.{dst}", tmp_path / "errors.csv"
    df.to_csv(inp, index=False)
    assert inp.stat().st_size > 1 << 20  # more than one block of the reader
    args = [str(inp), str(out), "--key", KEY, "--errors", str(errors)]
    code = main([*args, "--model", str(artifact_path)])
    assert code == (EXIT_ROWS_REFUSED if feature_text else EXIT_OK), capsys.readouterr().err
    if dst == "parquet":
        assert pq.read_schema(out).field(KEY).type == pa.string()
        got = pd.read_parquet(out)
    else:
        got = pd.read_csv(out, dtype={KEY: str})
    assert got[KEY].tolist() == df[KEY].tolist()
    if feature_text:
        listed = pd.read_csv(errors, dtype={KEY: str})
        assert listed[["row", KEY, "column"]].values.tolist() == [[19_600, "19600", "thal"]]

    # No rows: the key's type is the same string.
    inp.write_text(df.head(0).to_csv(index=False))
    assert main([*args, "--model", str(artifact_path)]) == EXIT_OK
    if dst == "parquet":
        assert pq.read_schema(out).field(KEY).type == pa.string()
