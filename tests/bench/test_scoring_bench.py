"""bench.scoring measures what it says: real heart-score runs against a real pyarrow copy."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from bench.scoring import measure, render, write_inputs


def test_inputs_are_generated_in_steps_with_every_row(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path, 2_500)
    assert pq.read_table(paths["parquet"]).num_rows == 2_500
    assert paths["csv"].read_text().count("\n") == 2_501
    gapped = pq.read_table(paths["parquet-gaps"]).to_pandas()
    assert len(gapped) == 2_500 and 0.25 < gapped.isna().any(axis=1).mean() < 0.45


def test_measure_times_both_formats_and_the_reference(artifact_path: Path) -> None:
    results = measure([3_000], 1, artifact_path, core=0)
    assert [r["input"] for r in results] == ["parquet", "csv", "parquet-gaps"]
    assert results[2]["x_complete_cpu"] > 0
    for r in results:
        assert r["score_wall"]["median"] > 0 and r["copy_wall"]["median"] > 0
        assert r["score_rss_mib"]["median"] > 10  # a real Python process, not a stub
        assert r["rows_per_s_cpu"] == 3_000 / r["score_cpu"]["median"]
    text = "\n".join(render(results))
    assert "parquet -> parquet" in text and "35% of rows with gaps" in text
