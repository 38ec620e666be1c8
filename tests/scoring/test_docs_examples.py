"""The README's Dask example runs as written (in a scratch directory, on a real cluster).

Its Spark example is run by ``tests/scoring/test_spark.py``; both are read from the
README here, between their ``<!-- NAME-example:begin/end -->`` markers.
"""

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

README = REPO_ROOT / "README.md"


def readme_example(name: str) -> str:
    """The Python block between the README's ``<!-- {name}-example:... -->`` markers."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- {name}-example:begin -->\s*```python\n(.*?)```\s*<!-- {name}-example:end -->",
        text,
        re.DOTALL,
    )
    assert match, f"README.md lost its marked {name} example"
    return match.group(1)


def run_example(name: str, directory: Path, artifact_path: Path, **env: str) -> str:
    """Run the example as a script in ``directory`` (with the model at artifacts/); its stdout."""
    (directory / "artifacts").mkdir(exist_ok=True)
    shutil.copy(artifact_path, directory / "artifacts" / "model.joblib")
    script = directory / f"{name}_example.py"
    script.write_text(readme_example(name))
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_dask_example_runs(tmp_path: Path, artifact_path: Path) -> None:
    stdout = run_example("dask", tmp_path, artifact_path)
    share = float(stdout.strip().splitlines()[-1])
    assert 0.0 < share < 1.0
    scores = pd.read_parquet(tmp_path / "scores")
    assert len(scores) == 50_000 and scores["probability"].notna().all()
    # The session model has the interval's ensemble, so the example writes its two columns.
    assert {"probability_low", "probability_high"} <= set(scores.columns)
    assert (scores["probability_low"] < scores["probability_high"]).all()
