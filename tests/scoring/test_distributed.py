"""``score_frame`` on a real engine: a Dask LocalCluster with worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.artifact import load_artifact
from model.columns import DuplicateColumnsError
from scoring.cli import main
from scoring.core import HIGH, LOW
from scoring.frame import ERROR, score_dask, score_frame, times_received
from scoring.synthetic import KEY, registry
from tests._tools import REQUIRED_NOT_A_NUMBER, TEXT_WHERE_MAY_BE_MISSING
from tests.scoring.same import assert_same_intervals, assert_same_probabilities

ROWS = 300_000
PARTITIONS = 12


def test_score_frame_keeps_index_and_explains_refused_rows(artifact_path: Path) -> None:
    df = registry(50, seed=4).set_index(np.arange(100, 150))
    df["age"] = df["age"].astype(object)
    df.loc[103, "age"] = "old"
    df.loc[104, "thal"] = 2
    out = score_frame(df, load_artifact(artifact_path), keys=[KEY])
    assert list(out.columns) == [KEY, "probability", "prediction", LOW, HIGH, ERROR]
    assert out.index.tolist() == df.index.tolist()
    assert out.loc[103, ERROR] == f"age: {REQUIRED_NOT_A_NUMBER}"
    assert out.loc[104, ERROR].startswith("thal: must be one of 3")
    assert out["probability"].isna().sum() == 2 and out["prediction"].isna().sum() == 2
    assert out[ERROR].isna().sum() == 48


def test_score_frame_refuses_booleans_and_nan_text_like_the_files(artifact_path: Path) -> None:
    df = registry(6, seed=5)
    df["sex"] = df["sex"] == 1  # a boolean column: refused, as JSON refuses "sex": true
    out = score_frame(df, load_artifact(artifact_path))
    assert (out[ERROR] == f"sex: {REQUIRED_NOT_A_NUMBER}").all()
    df = registry(6, seed=5).astype({"thal": object})
    df["thal"] = ["", "NA", "null", "NaN", "inf", np.nan]
    out = score_frame(df, load_artifact(artifact_path))
    assert out[ERROR].fillna("").tolist() == [
        "",
        "",
        "",
        f"thal: {TEXT_WHERE_MAY_BE_MISSING}",
        f"thal: {TEXT_WHERE_MAY_BE_MISSING}",
        "",
    ]


def test_score_frame_refuses_a_repeated_feature_column(artifact_path: Path) -> None:
    df = registry(5, seed=4)
    twice = pd.concat([df, df[["age"]]], axis=1)
    with pytest.raises(DuplicateColumnsError, match="given more than once: age"):
        score_frame(twice, load_artifact(artifact_path))


@pytest.mark.slow
def test_dask_cluster_matches_heart_score_and_ships_the_model_once(
    tmp_path: Path, artifact_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    dd = pytest.importorskip("dask.dataframe")
    data = registry(ROWS, seed=11, missing=0.02)
    data.loc[[17, 123_456], "age"] = 5  # refused rows travel too
    source, reference = tmp_path / "registry.parquet", tmp_path / "scores.parquet"
    data.to_parquet(source, index=False, row_group_size=ROWS // PARTITIONS)
    assert main([str(source), str(reference), "--key", KEY, "--model", str(artifact_path)]) == 1

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # The workers read the file themselves, one partition per row group.
        ddf = dd.read_parquet(source, split_row_groups=True)
        assert ddf.npartitions == PARTITIONS
        scored = score_dask(ddf, artifact_path, keys=[KEY]).compute()
        received = client.run(times_received)

    expected = pd.read_parquet(reference)
    scored = scored.reset_index(drop=True)
    assert scored[KEY].tolist() == expected[KEY].tolist()
    assert_same_probabilities(scored["probability"], expected["probability"])
    for end in (LOW, HIGH):
        assert_same_intervals(scored[end], expected[end])
    assert scored["prediction"].astype("Float64").equals(expected["prediction"].astype("Float64"))
    assert scored[ERROR].notna().sum() == 2
    # 12 partitions over 2 worker processes, the model unpickled at most once in each.
    assert len(received) == 2 and all(count <= 1 for count in received.values()), received
    assert sum(received.values()) >= 1
