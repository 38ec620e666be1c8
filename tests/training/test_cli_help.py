"""Every command's help is something a user can trust (issue 12).

The help screens are produced by the real entry points in subprocesses, as a
user sees them: console scripts from the virtualenv and ``python -m`` modules.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.testing import clean_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: (argv, what the usage line must start with)
COMMANDS: list[tuple[list[str], str]] = [
    ([str(BIN / "heart-train")], "heart-train"),
    ([sys.executable, "-m", "training"], "python -m training"),
    ([str(BIN / "heart-train"), "export"], "heart-train export"),
    ([str(BIN / "heart-compare")], "heart-compare"),
    ([sys.executable, "-m", "training.compare"], "python -m training.compare"),
    ([str(BIN / "heart-api")], "heart-api"),
    ([str(BIN / "heart-api"), "serve"], "heart-api serve"),
    ([str(BIN / "heart-api"), "check"], "heart-api check"),
    ([str(BIN / "heart-api"), "openapi"], "heart-api openapi"),
    ([sys.executable, "-m", "app"], "python -m app"),
    ([str(BIN / "heart-score")], "heart-score"),
    ([sys.executable, "-m", "scoring"], "python -m scoring"),
]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=clean_environment()
    )


@pytest.mark.parametrize(("argv", "typed"), COMMANDS, ids=[c[1] for c in COMMANDS])
def test_help_names_the_typed_command_and_shows_each_default_once(
    argv: list[str], typed: str
) -> None:
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed (pip install -e .)")
    result = _run([*argv, "--help"])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"usage: {typed} "), text.splitlines()[0]
    flat = " ".join(text.split())  # argparse wraps lines anywhere
    assert "(default: None)" not in flat
    assert str(REPO_ROOT) not in flat, "help shows a machine's absolute path"
    # No option says its default twice.
    for block in re.split(r"\n  (?=-)", text)[1:]:
        if block.startswith("--quick"):  # its help lists the options it changes
            continue
        assert len(re.findall(r"\bdefault\b", block)) <= 1, block


@pytest.mark.parametrize(("argv", "typed"), COMMANDS, ids=[c[1] for c in COMMANDS])
def test_every_command_has_version(argv: list[str], typed: str) -> None:
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed (pip install -e .)")
    result = _run([*argv, "--version"])
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"{re.escape(typed)} \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_heart_train_help_shows_the_defaults_the_issue_found_missing() -> None:
    text = " ".join(_run([sys.executable, "-m", "training", "--help"]).stdout.split())
    for option, default in {
        "--learning-rate": "0.003",
        "--init": "he",
        "--validation-fraction": "0.1",
        "--test-size": "0.2",
        "--cv-repeats": "5",
        "--cv-seed": "0",
        "--data": "data/heart.dat",
    }.items():
        after = text.split(f" {option} ", 1)[1]
        shown = re.search(r"\(default: ([^)]*)\)", after)
        assert shown is not None and shown.group(1).split()[0] == default, (option, after[:120])


def test_check_says_which_model_it_checked(artifact_path: Path) -> None:
    result = _run([sys.executable, "-m", "app", "check", "--model-path", str(artifact_path)])
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["model_path"] == str(artifact_path)
    assert lines["model_sha256"] == hashlib.sha256(artifact_path.read_bytes()).hexdigest()
    assert lines["model_version"].startswith("mlp-")
