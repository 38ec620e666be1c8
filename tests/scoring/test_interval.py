"""Every bulk output carries the risk interval when the artifact has the ensemble.

``docs/scoring.md`` promises ``probability_low``/``probability_high`` next to the
probability whenever the model has an uncertainty interval; the session model
has a (3-member) ensemble, so every path must write them, with the values
``/predict`` gives the same patient in ``risk_interval``.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from app import Settings, create_app
from model.artifact import load_artifact
from model.columns import validate_columns
from model.features import FEATURE_NAMES
from model.predictor import Predictor
from scoring.cli import EXIT_OK, main
from scoring.core import HIGH, LOW, output_columns, score_batch
from scoring.frame import empty_output, score_frame, spark_schema
from scoring.synthetic import KEY, registry
from tests.scoring.same import ARROW, as_json, assert_same_intervals


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    """Half the rows lack one of the sites' gap patterns: the marginalised band too."""
    return registry(40, seed=21, gaps=0.5)


@pytest.fixture(scope="module")
def client(artifact_path: Path) -> Any:
    with TestClient(create_app(Settings(model_path=artifact_path))) as c:
        yield c


@pytest.fixture(scope="module")
def from_predict(client: TestClient, patients: pd.DataFrame) -> pd.DataFrame:
    """What /predict answers for each patient: probability and the interval's two ends."""
    rows = []
    for _, row in patients.iterrows():
        answer = client.post("/predict", json=as_json(row)).json()
        interval = answer["risk_interval"]
        rows.append((answer["probability"], interval["lower"], interval["upper"]))
    return pd.DataFrame(rows, columns=["probability", LOW, HIGH])


def assert_like_predict(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    # /predict's one-row pass and the batch paths add the members' sums in another order.
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-12)
    assert_same_intervals(got[LOW], expected[LOW])
    assert_same_intervals(got[HIGH], expected[HIGH])
    assert (got[LOW] < got[HIGH]).all()


def test_interval_columns_appear_only_when_the_artifact_has_the_ensemble(
    artifact_path: Path,
) -> None:
    banded = load_artifact(artifact_path)
    assert banded.ensemble is not None
    plain = dataclasses.replace(banded, ensemble=None)
    assert output_columns(plain) == ["probability", "prediction"]
    assert output_columns(banded) == ["probability", "prediction", LOW, HIGH]
    # Dask's meta and Spark's schema follow the same list.
    assert list(empty_output(banded, {KEY: "int64"}).columns) == [
        KEY,
        "probability",
        "prediction",
        LOW,
        HIGH,
        "error",
    ]
    assert "probability_low double, probability_high double" in spark_schema(
        banded, {KEY: "bigint"}
    )
    assert LOW not in spark_schema(plain, {KEY: "bigint"})


def test_score_batch_gives_predicts_interval_and_none_for_refused_rows(
    artifact_path: Path, patients: pd.DataFrame, from_predict: pd.DataFrame
) -> None:
    predictor: Predictor = load_artifact(artifact_path)
    df = patients.copy()
    df.loc[4, "age"] = 500
    scores = score_batch(predictor, validate_columns({n: df[n].to_numpy() for n in FEATURE_NAMES}))
    assert scores.low is not None and scores.high is not None
    expected = from_predict.copy()
    expected.loc[4] = np.nan
    got = pd.DataFrame({"probability": scores.probability, LOW: scores.low, HIGH: scores.high})
    assert np.isnan(scores.low[4]) and np.isnan(scores.high[4])
    assert_like_predict(got.drop(index=4), expected.drop(index=4))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_heart_score_writes_the_interval(
    tmp_path: Path,
    artifact_path: Path,
    patients: pd.DataFrame,
    from_predict: pd.DataFrame,
    fmt: str,
) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / f"out.{fmt}"
    patients.to_csv(inp, index=False)
    assert main([str(inp), str(out), "--key", KEY, "--model", str(artifact_path)]) == EXIT_OK
    got = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(got.columns) == [KEY, "probability", "prediction", LOW, HIGH]
    assert_like_predict(got, from_predict)


@pytest.mark.parametrize("accept", ["text/csv", ARROW, "application/json"])
def test_table_upload_answers_carry_the_interval(
    client: TestClient, patients: pd.DataFrame, from_predict: pd.DataFrame, accept: str
) -> None:
    r = client.post(
        "/predict/table",
        content=patients.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv", "Accept": accept},
    )
    assert r.status_code == 200, r.text
    if accept == "text/csv":
        got = pd.read_csv(io.BytesIO(r.content))
        assert list(got.columns) == ["probability", "prediction", LOW, HIGH]
    elif accept == ARROW:
        got = pa.ipc.open_stream(r.content).read_all().to_pandas()
        assert list(got.columns) == ["probability", "prediction", LOW, HIGH]
    else:
        got = pd.DataFrame(
            [
                (p["probability"], p["risk_interval"]["lower"], p["risk_interval"]["upper"])
                for p in r.json()["predictions"]
            ],
            columns=["probability", LOW, HIGH],
        )
    assert_like_predict(got, from_predict)


def test_score_frame_carries_the_interval(
    artifact_path: Path, patients: pd.DataFrame, from_predict: pd.DataFrame
) -> None:
    out = score_frame(patients, load_artifact(artifact_path), keys=[KEY])
    assert list(out.columns) == [KEY, "probability", "prediction", LOW, HIGH, "error"]
    assert_like_predict(out, from_predict)
