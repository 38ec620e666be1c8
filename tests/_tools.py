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
#: (it only adds figures to the report, and training it is the slow part) and a
#: 3-member risk-interval ensemble instead of 10 (each member is one more training
#: run; the tests check how the interval is computed and served, which 3 exercise).
SESSION_TRAINING: Final = TrainingConfig(cv_folds=3, cv_repeats=1, ensemble_size=3)

#: How every file and table path refuses a text cell (docs/scoring.md), written out here
#: rather than imported so that a change of wording fails the tests: where the feature may
#: be missing (the reason says how to mark "not measured"), and where it is required.
TEXT_WHERE_MAY_BE_MISSING: Final = (
    "is not a number (a value not measured is an empty cell, NA or null)"
)
REQUIRED_NOT_A_NUMBER: Final = "is not a number (the feature is required: it may not be missing)"


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


def doc_python_block(page: str, heading: str) -> str:
    """The first ```python block under ``## heading`` of ``docs/page``, to run as written."""
    text = (REPO_ROOT / "docs" / page).read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)
    assert len(section) == 2, f"docs/{page} has no section {heading!r}"
    block = section[1].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def assert_example_patient_answer(stdout: str, artifact: Path) -> None:
    """``stdout`` is "<probability> <class>" of the documented example patient, as we score it."""
    from model.artifact import load_artifact
    from model.features import as_row, example_patient

    probability, predicted = stdout.split()
    predictor = load_artifact(artifact)
    expected = predictor.probability_one(as_row(example_patient()))
    assert float(probability) == pytest.approx(expected, abs=1e-12)
    assert int(predicted) == int(expected >= predictor.threshold)


def text_not_utf8(cells: Sequence[bytes], *, large: bool = False) -> Any:
    """An Arrow text column holding exactly these bytes, UTF-8 or not: pyarrow checks a
    text column's UTF-8 only when asked (``validate(full=True)``), so a client's Arrow
    stream or a Parquet file can carry such cells, and a test builds them the same way."""
    import numpy as np
    import pyarrow as pa

    offsets = np.cumsum([0, *map(len, cells)]).astype(np.int64 if large else np.int32)
    return pa.Array.from_buffers(
        pa.large_string() if large else pa.string(),
        len(cells),
        [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(cells))],
    )
