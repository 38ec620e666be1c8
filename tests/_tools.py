"""Helpers shared by the test folders: the repository, the session model, commands, tools.

External tools skip when absent on a developer's machine and fail in CI: CI
installs every tool (.ci/run), so a missing one there means the install step
is broken, and letting the test skip would turn a broken check into a green
run that checks nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest

from training.pipeline import TrainingConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The session model's configuration: the default with a short cross-validation
#: (it only adds figures to the report, and training it is the slow part).
SESSION_TRAINING: Final = TrainingConfig(cv_folds=3, cv_repeats=1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of executable ``name``; skip locally, fail in CI, if it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (see .ci/run for how CI installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(
    argv: Sequence[str],
    *,
    cwd: Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output as text (never raises on failure)."""
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """:func:`run` (same options), and fail the test with its stderr unless it exited 0."""
    done = run(argv, **options)
    assert done.returncode == 0, done.stderr
    return done
