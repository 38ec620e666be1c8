"""``heart-score`` on what a hospital's systems actually write, and where it writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring.cli import EXIT_OK, EXIT_UNUSABLE, main
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
