"""docs/scoring.md's Dask example runs as written (in a scratch directory, on a real cluster)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from app.testing import REPO_ROOT

DOC = REPO_ROOT / "docs" / "scoring.md"


def dask_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- dask-example:begin -->\s*```python\n(.*?)```\s*<!-- dask-example:end -->",
        text,
        re.DOTALL,
    )
    assert match, "docs/scoring.md lost its marked Dask example"
    return match.group(1)


@pytest.mark.slow
def test_dask_example_runs(tmp_path: Path, artifact_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    shutil.copy(artifact_path, tmp_path / "artifacts" / "model.joblib")
    script = tmp_path / "example.py"
    script.write_text(dask_example())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    share = float(run.stdout.strip().splitlines()[-1])
    assert 0.0 < share < 1.0
    scores = pd.read_parquet(tmp_path / "scores")
    assert len(scores) == 50_000 and scores["probability"].notna().all()
