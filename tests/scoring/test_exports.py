"""``heart-score`` on what a hospital's systems actually write, and where it writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring.cli import EXIT_OK, EXIT_ROWS_REFUSED, EXIT_UNUSABLE, main
from scoring.synthetic import registry


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
