"""One set of patients through every path gives the same probabilities and intervals.

/predict, the JSON batch, the Arrow table upload, heart-score and a Dask cluster
with worker processes (issue 13). "The same" is :data:`tests.scoring.same.TOLERANCE`:
the one-row path and BLAS's batch-size-dependent grouping move the last bit; the
risk interval's ends agree to :data:`tests.scoring.same.INTERVAL_TOLERANCE`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from app import Settings, create_app
from scoring.cli import main as heart_score
from scoring.frame import score_dask
from scoring.synthetic import KEY, registry
from tests.scoring.same import (
    ARROW,
    as_json,
    assert_same_intervals,
    assert_same_probabilities,
)


@pytest.mark.slow
def test_every_path_gives_the_same_probabilities(tmp_path: Path, artifact_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    dd = pytest.importorskip("dask.dataframe")
    # Half the rows lack one of the sites' gap patterns: the marginalised path agrees too.
    data = registry(40, seed=21, gaps=0.5)
    assert 10 < data.isna().any(axis=1).sum() < 30
    patients = [as_json(row) for _, row in data.iterrows()]

    with TestClient(create_app(Settings(model_path=artifact_path))) as client:
        answers = [client.post("/predict", json=p).json() for p in patients]
        one_by_one = [a["probability"] for a in answers]
        batch = client.post("/predict/batch", json={"patients": patients}).json()
        sink = pa.BufferOutputStream()
        table = pa.Table.from_pandas(data, preserve_index=False)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        arrow = client.post(
            "/predict/table",
            content=bytes(sink.getvalue()),
            headers={"Content-Type": ARROW, "Accept": ARROW},
        )
    from_batch = [p["probability"] for p in batch["predictions"]]
    arrow_table = pa.ipc.open_stream(arrow.content).read_all()
    from_arrow = arrow_table.column("probability").to_pylist()

    source, scored = tmp_path / "in.csv", tmp_path / "out.parquet"
    data.to_csv(source, index=False)
    assert heart_score([str(source), str(scored), "--key", KEY, "--model", str(artifact_path)]) == 0
    file_scores = pd.read_parquet(scored)
    from_file = file_scores["probability"]

    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        ddf = dd.from_pandas(data, npartitions=3)
        dask_scores = score_dask(ddf, artifact_path, keys=[KEY]).compute()
        from_dask = dask_scores["probability"]

    reference = np.asarray(one_by_one)
    for name, values in {
        "JSON batch": from_batch,
        "Arrow upload": from_arrow,
        "heart-score": from_file,
        "Dask": from_dask,
    }.items():
        assert len(values) == 40, name
        assert_same_probabilities(values, reference)
    # The batch paths share one NumPy call on the same rows: there they agree to the bit.
    assert from_arrow == from_batch

    # The risk interval: /predict's risk_interval, and the two columns of every bulk output.
    for end, low_or_high in (("lower", "probability_low"), ("upper", "probability_high")):
        reference = np.asarray([a["risk_interval"][end] for a in answers])
        for name, values in {
            "JSON batch": [p["risk_interval"][end] for p in batch["predictions"]],
            "Arrow upload": arrow_table.column(low_or_high).to_pylist(),
            "heart-score": file_scores[low_or_high],
            "Dask": dask_scores[low_or_high],
        }.items():
            assert len(values) == 40, name
            assert_same_intervals(values, reference)
