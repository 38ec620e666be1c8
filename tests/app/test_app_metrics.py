"""Metrics internals: histogram percentiles, drift, error kinds, content negotiation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from app.metrics import (
    LATENCY_BUCKETS,
    ServiceMetrics,
    _quantile_ms,
    error_kind,
    negotiate_metrics_format,
)
from model.features import FEATURE_NAMES, N_FEATURES
from tests._tools import REPO_ROOT


def test_quantile_interpolates_inside_buckets_like_prometheus() -> None:
    # 100 observations: 50 in (0, 1 ms], 40 in (1, 2 ms], 10 in (2, 4 ms]
    cumulative = [(0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (float("inf"), 100.0)]
    assert _quantile_ms(cumulative, 0.5) == pytest.approx(1.0)
    assert _quantile_ms(cumulative, 0.25) == pytest.approx(0.5)
    assert _quantile_ms(cumulative, 0.7) == pytest.approx(1.5)
    assert _quantile_ms(cumulative, 0.95) == pytest.approx(3.0)
    assert _quantile_ms([(0.001, 0.0), (float("inf"), 0.0)], 0.5) is None
    # Beyond the last finite bucket Prometheus answers that bucket's bound.
    assert _quantile_ms([(0.001, 0.0), (float("inf"), 4.0)], 0.5) == pytest.approx(1.0)


def test_latency_report_tracks_observed_distribution() -> None:
    metrics = ServiceMetrics()
    rng = np.random.default_rng(1)
    samples = rng.uniform(0.0002, 0.0008, size=2000)  # 0.2..0.8 ms
    for s in samples:
        metrics.observe_request("POST", "/predict", 200, float(s))
    summary = metrics.serving_report().latency["/predict"]
    assert summary.count == 2000
    assert summary.p50_ms is not None and summary.p99_ms is not None
    # Bucket bounds around 0.5 ms are 0.25/0.5/0.75: the estimate is within one bucket.
    assert abs(summary.p50_ms - 1000 * float(np.median(samples))) < 0.25
    assert 0.75 <= summary.p99_ms <= 1.0
    assert LATENCY_BUCKETS[0] <= 0.0002


def test_drift_is_the_window_mean_in_training_standard_deviations() -> None:
    metrics = ServiceMetrics(drift_window=10)
    mean = np.arange(N_FEATURES, dtype=float)
    std = np.full(N_FEATURES, 2.0)
    metrics.bind_model("v-test", mean, std)
    rows = np.tile(mean + 4.0, (10, 1))  # every served value 2 std above the mean
    metrics.observe_batch(rows[:7], n_positive=3)
    metrics.observe_prediction(rows[7], prediction=1)
    metrics.observe_prediction(rows[8], prediction=0)
    metrics.observe_prediction(rows[9], prediction=0)
    report = metrics.serving_report()
    assert report.predictions_total == 10
    assert report.positive_predictions == 4
    assert report.positive_share == pytest.approx(0.4)
    assert report.drift_window_min_patients == 10
    assert [d.feature for d in report.drift] == list(FEATURE_NAMES)
    for i, d in enumerate(report.drift):
        assert d.training_mean == mean[i] and d.training_std == 2.0
        assert d.served_mean == pytest.approx(mean[i] + 4.0)
        assert d.drift_std == pytest.approx(2.0)
    # The next window replaces the figure: recent versus training, not since start.
    metrics.observe_batch(np.tile(mean, (10, 1)), n_positive=0)
    assert all(d.drift_std == pytest.approx(0.0) for d in metrics.serving_report().drift)


def test_one_patient_rows_held_for_folding_give_the_same_window() -> None:
    """/predict's rows are folded into the sums in blocks (and at each flush): more rows
    than one block, some with gaps, give exactly the figures of summing them one by one."""
    rng = np.random.default_rng(3)
    rows = rng.normal(50.0, 10.0, (2500, N_FEATURES))
    rows[rng.random(rows.shape) < 0.2] = np.nan
    metrics = ServiceMetrics(drift_window=10)
    mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    metrics.bind_model("v-test", mean, std)
    for row in rows:
        metrics.observe_prediction(row, prediction=0)
    drift = metrics.serving_report().drift
    expected = np.nanmean(rows, axis=0)
    assert [d.served_mean for d in drift] == pytest.approx(expected.tolist(), rel=1e-12)
    assert metrics.drift_rows.collect()[0].samples[0].value == 2500.0


def test_drift_is_published_only_per_window_of_k_patients() -> None:
    metrics = ServiceMetrics(drift_window=10)
    for _ in range(9):
        metrics.observe_prediction(np.ones(N_FEATURES), prediction=1)
    metrics.flush()
    assert metrics.drift_rows.collect()[0].samples[0].value == 0.0  # 9 < k: not published
    assert all(d.served_mean is None for d in metrics.serving_report().drift)
    metrics.observe_prediction(np.ones(N_FEATURES), prediction=1)
    metrics.flush()
    assert metrics.drift_rows.collect()[0].samples[0].value == 10.0


def test_metrics_never_show_one_patients_values() -> None:
    """Issue 11: one request made heart_drift_feature_sums equal that patient's values."""
    metrics = ServiceMetrics(drift_window=10)
    metrics.bind_model("v-test", np.zeros(N_FEATURES), np.ones(N_FEATURES))
    before = metrics.exposition("prometheus")[0].decode()
    patient = np.array([61.0, 1, 4, 143, 577, 0, 2, 131, 1, 3.7, 2, 3, 7])
    metrics.observe_prediction(patient, prediction=1)
    after = metrics.exposition("prometheus")[0].decode()
    # Sample values, not substrings: the start-time gauge's digits may contain "577".
    samples = [line.rpartition(" ") for line in after.splitlines() if not line.startswith("#")]
    values = {float(value) for _, _, value in samples}
    assert not values & {577.0, 3.7, 143.0, 131.0}
    assert not any("577" in series or "3.7" in series for series, _, _ in samples)

    def drift_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if "drift" in line and "#" not in line]

    assert drift_lines(after) == drift_lines(before)  # nothing moved for one patient
    for _ in range(9):
        metrics.observe_prediction(patient, prediction=1)
    text = metrics.exposition("prometheus")[0].decode()
    # A gauge, not a counter: ST depression may be negative (issue 9), so a sum may fall.
    assert 'heart_drift_feature_sums{feature="serum_cholesterol"} 5770.0' in text
    assert 'heart_drift_feature_values_total{feature="serum_cholesterol"} 10.0' in text


def test_error_kinds() -> None:
    assert error_kind(422) == "validation"
    assert error_kind(401) == "unauthorized"
    assert error_kind(413) == "payload_too_large"
    assert error_kind(418) == "client_other"
    assert error_kind(502) == "server_other"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("text/plain", "prometheus"),
        ("TEXT/PLAIN; version=0.0.4", "prometheus"),
        ("application/openmetrics-text", "openmetrics"),
        ("application/json, text/plain", "json"),
        ("text/plain, application/json", "json"),  # equal q: JSON
        ("text/plain;q=0.9, application/json;q=0.5", "prometheus"),
        ("text/plain;q=0", "json"),
        ("text/plain;q=abc", "json"),
        # Not a qvalue (RFC 9110 12.4.2), so the element is ignored: float() read inf and
        # nan, and inf outranked the client's valid choice.
        ("application/openmetrics-text;q=inf, text/plain;q=0.5", "prometheus"),
        ("text/plain;q=2, application/openmetrics-text;q=0.1", "openmetrics"),
        ("image/png", "json"),
    ],
)
def test_negotiation(accept: str | None, expected: str) -> None:
    assert negotiate_metrics_format(accept, None) == expected


def test_query_parameter_wins() -> None:
    assert negotiate_metrics_format("application/json", "prometheus") == "prometheus"
    assert negotiate_metrics_format("text/plain", "json") == "json"


def test_a_worker_file_not_yet_sized_is_skipped_not_a_500(tmp_path: Path) -> None:
    """A starting worker creates its metric file empty, then sizes it: a scrape in between
    was a struct.error and a 500 on /metrics (seen at a two-worker reload in CI)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    # One worker's counter, in the file format of prometheus_client's multiprocess mode.
    worker = MmapedDict(str(tmp_path / "counter_101.db"))  # type: ignore[no-untyped-call]
    key = mmap_key("heart_probe", "heart_probe_total", [], [], "A worker's counter.")
    worker.write_value(key, 3.0, 0.0)  # type: ignore[no-untyped-call]
    worker.close()  # type: ignore[no-untyped-call]
    (tmp_path / "counter_202.db").write_bytes(b"")  # the next worker, between create and size
    families = {f.name: f for f in ServiceMetrics(multiprocess_dir=str(tmp_path)).collect()}
    assert [s.value for s in families["heart_probe"].samples] == [3.0]


def test_every_exposed_metric_is_in_the_documented_table() -> None:
    """docs/api.md's table is the operators' list: a series added without a row there
    (or a row left for one removed) is a metric nobody knows the labels of."""
    text = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `heart_")]
    documented = {name for cell in first_cells for name in re.findall(r"`(heart_\w+)`", cell)}
    exposed = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in ServiceMetrics().collect()
    }
    assert documented == exposed
