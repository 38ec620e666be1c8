"""The README's Spark example (``mapInPandas``, local mode) scores as ``heart-score`` does.

Opt-in: Spark needs a Java runtime and the ``spark`` extra (pyspark, ~450 MB),
which ``make test`` does not install. Without them the test skips and says
which is missing; ``make spark-ci`` installs both and sets
``HEART_REQUIRE_SPARK=1``, under which a missing one fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from scoring.cli import main as heart_score
from scoring.core import HIGH, LOW
from scoring.frame import ERROR
from scoring.synthetic import KEY, registry
from tests.scoring.same import assert_same_intervals, assert_same_probabilities
from tests.scoring.test_docs_examples import run_example

ROWS = 200_000


def require_spark() -> None:
    """Skip, or fail under ``HEART_REQUIRE_SPARK=1``, without Java or pyspark."""
    missing = [
        what
        for what, present in (
            ("a Java runtime (`java`; Debian: default-jre-headless)", shutil.which("java")),
            ("pyspark (pip install -e '.[spark]')", importlib.util.find_spec("pyspark")),
        )
        if not present
    ]
    if missing:
        message = "Spark needs " + " and ".join(missing) + "; `make spark-ci` installs both"
        if os.environ.get("HEART_REQUIRE_SPARK") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_readme_spark_example_matches_heart_score(tmp_path: Path, artifact_path: Path) -> None:
    require_spark()
    data = registry(ROWS, seed=13, gaps=0.35)
    data.loc[[5, 150_000], "age"] = 5  # refused rows come back with their reasons
    # The example reads registry.parquet from its working directory.
    source, reference = tmp_path / "registry.parquet", tmp_path / "scores.parquet"
    data.to_parquet(source, index=False, row_group_size=ROWS // 4)
    assert (
        heart_score([str(source), str(reference), "--key", KEY, "--model", str(artifact_path)]) == 1
    )

    # Split the small file by row group, as a large one is split, so several tasks share it.
    run_example(
        "spark",
        tmp_path,
        artifact_path,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_SUBMIT_ARGS="--conf spark.sql.files.maxPartitionBytes=256k "
        "--conf spark.ui.enabled=false pyspark-shell",
    )
    assert len(list((tmp_path / "scores-spark").glob("part-*.parquet"))) > 1  # several tasks
    scored = pd.read_parquet(tmp_path / "scores-spark")

    expected = pd.read_parquet(reference)
    scored = scored.sort_values(KEY).reset_index(drop=True)
    assert scored[KEY].tolist() == expected[KEY].tolist()
    assert_same_probabilities(scored["probability"], expected["probability"])
    for end in (LOW, HIGH):  # the schema from spark_schema carries the interval too
        assert_same_intervals(scored[end], expected[end])
    refused = scored[ERROR].notna()
    assert refused.sum() == 2 and scored.loc[refused, KEY].tolist() == [5, 150_000]
    assert scored.loc[refused, ERROR].str.startswith("age: ").all()
    assert scored["probability"].isna().sum() == 2
