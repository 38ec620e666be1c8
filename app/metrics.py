"""Service metrics: Prometheus counters and histograms, and the JSON report built from them.

One set of ``prometheus_client`` metrics feeds both representations of
``/metrics``, so the JSON document and the Prometheus text always agree.

Several workers: the CLI runs ``prometheus_client`` in multiprocess mode (a
private ``PROMETHEUS_MULTIPROC_DIR``). Every worker writes its counters to
memory-mapped files there, and whichever worker answers a scrape sums all of
them, so the figures add up across workers. Gauges use explicit aggregation
modes (start time: min, live workers: sum over live processes).

Cost on the request path: a cached label child per (method, route, status)
and per route, so recording a request is one counter increment and one
histogram observation. The 13 per-feature sums for the drift signal would be
13 more increments per prediction (each a locked write to a memory map in
multiprocess mode), so they are accumulated in a NumPy vector and added to
their counters on every scrape and once a second: the drift figures of the
*other* workers may lag by up to a second; request and prediction counts never
lag.

``/metrics`` serves this one set of figures as JSON (the default), the
Prometheus text format or OpenMetrics, chosen by :func:`negotiate_metrics_format`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition, openmetrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample

from app.schemas import FeatureDrift, LatencySummary, ServingMetrics
from app.settings import StartupError
from model.arrays import FloatArray
from model.features import FEATURE_NAMES, N_FEATURES

PREFIX: Final[str] = "heart"

#: Latency buckets in seconds: a prediction takes well under a millisecond, so the
#: default buckets (starting at 5 ms) would put every request in the first one.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_METHODS: Final[frozenset[str]] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)

ERROR_KINDS: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    500: "internal",
    503: "unavailable",
}


MetricsFormat = Literal["json", "prometheus", "openmetrics"]
PROMETHEUS_TEXT: Final[str] = exposition.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_TEXT: Final[str] = openmetrics.exposition.CONTENT_TYPE_LATEST
_METRICS_MEDIA_TYPES: Final[dict[str, MetricsFormat]] = {
    "application/json": "json",
    "text/plain": "prometheus",
    "application/openmetrics-text": "openmetrics",
}


def negotiate_metrics_format(accept: str | None, requested: MetricsFormat | None) -> MetricsFormat:
    """``?format=`` wins; otherwise the Accept media type with the highest q-value.

    JSON is the default (no Accept, ``*/*``, ``application/json``, or a tie), so a
    browser or a generated client gets JSON and a Prometheus scraper, whose Accept
    header lists openmetrics and text/plain, gets the exposition format.
    """
    if requested is not None:
        return requested
    candidates: list[tuple[float, int, int, MetricsFormat]] = []
    for rank, item in enumerate((accept or "").split(",")):
        media, _, params = item.partition(";")
        fmt = _METRICS_MEDIA_TYPES.get(media.strip().lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Highest q first; on equal q JSON wins, then the earlier entry.
        candidates.append((q, int(fmt == "json"), -rank, fmt))
    best = max(candidates, default=None)
    return best[3] if best is not None and best[0] > 0 else "json"


def multiprocess_dir() -> str | None:
    """The shared metrics directory of a multi-worker server, if this process has one.

    ``prometheus_client`` chooses its value storage when it is imported, so the
    variable only takes effect when it was set before that import.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return None
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        raise StartupError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
            "set it before the process starts (heart-api serve does this for you)"
        )
    return path


def error_kind(status: int) -> str:
    kind = ERROR_KINDS.get(status)
    if kind is not None:
        return kind
    return "server_other" if status >= 500 else "client_other"


class _Snapshot:
    """Already-collected metric families, presented as a collector for the encoders."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class ServiceMetrics:
    """All metrics of one service process, and their aggregation over workers."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self._training_mean = np.zeros(N_FEATURES)
        self._training_std = np.ones(N_FEATURES)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_http_errors",
            "Requests answered with an error status, by kind.",
            ["kind"],
            registry=r,
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions",
            "Patients scored, by predicted class (0 or 1).",
            ["predicted_class"],
            registry=r,
        )
        self.drift_rows = Counter(
            f"{PREFIX}_drift_rows",
            "Patients included in the drift feature sums.",
            registry=r,
        )
        self.drift_missing = Counter(
            f"{PREFIX}_drift_feature_missing",
            "Values sent as null (not measured), per feature: left out of its drift sum, so "
            "the running mean divides by drift rows minus these.",
            ["feature"],
            registry=r,
        )
        # A gauge, not a counter: a sum of feature values need not be monotonic.
        self.drift_sums = Gauge(
            f"{PREFIX}_drift_feature_sums",
            "Sum of each served feature's values; divided by heart_drift_rows_total it is "
            "the running mean compared with the training mean.",
            ["feature"],
            registry=r,
            multiprocess_mode="sum",
        )
        self.start_time = Gauge(
            f"{PREFIX}_start_time_seconds",
            "Unix time at which the service started.",
            registry=r,
            multiprocess_mode="min",
        )
        self.live_workers = Gauge(
            f"{PREFIX}_worker_processes",
            "Worker processes currently serving.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "The loaded model (value is always 1).",
            ["model_version"],
            registry=r,
            multiprocess_mode="max",
        )
        self._predicted = (self.predictions.labels("0"), self.predictions.labels("1"))
        self._drift_children = [self.drift_sums.labels(name) for name in FEATURE_NAMES]
        self._missing_children = [self.drift_missing.labels(name) for name in FEATURE_NAMES]
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._error_children: dict[int, Counter] = {}
        self._pending_sum = np.zeros(N_FEATURES)
        self._pending_missing = np.zeros(N_FEATURES)
        self._pending_rows = 0
        self.start_time.set(time.time())
        self.live_workers.set(1)
        # Touch every label we report so the series exist (at 0) from the first scrape.
        for child in self._predicted:
            child.inc(0)
        self.drift_rows.inc(0)

    def bind_model(
        self,
        model_version: str,
        training_mean: FloatArray,
        training_std: FloatArray,
    ) -> None:
        """Record the loaded model: its version and the training statistics for drift."""
        self._training_mean = np.asarray(training_mean, dtype=np.float64)
        self._training_std = np.asarray(training_std, dtype=np.float64)
        self.model_info.labels(model_version).set(1)

    # -- request path ------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            label = method if method in _METHODS else "other"
            child = self.requests.labels(label, route, str(status))
            self._request_children[key] = child
        child.inc()
        timer = self._duration_children.get(route)
        if timer is None:
            timer = self._duration_children[route] = self.duration.labels(route)
        timer.observe(seconds)
        if status >= 400:
            error = self._error_children.get(status)
            if error is None:
                error = self._error_children[status] = self.errors.labels(error_kind(status))
            error.inc()

    def observe_prediction(self, row: FloatArray, prediction: int) -> None:
        """One patient scored as class ``prediction`` (1: positive); gaps left out of drift."""
        self._predicted[prediction].inc()
        self._pending_rows += 1
        gaps = np.isnan(row)
        if gaps.any():  # a missing value says nothing about drift: leave it out
            self._pending_sum += np.where(gaps, 0.0, row)
            self._pending_missing += gaps
        else:
            self._pending_sum += row

    def observe_batch(self, rows: FloatArray, n_positive: int) -> None:
        """``len(rows)`` patients scored, ``n_positive`` of them as class 1."""
        n = rows.shape[0]
        if n_positive:
            self._predicted[1].inc(n_positive)
        if n - n_positive:
            self._predicted[0].inc(n - n_positive)
        self._pending_rows += n
        gaps = np.isnan(rows)
        if gaps.any():
            self._pending_sum += np.where(gaps, 0.0, rows).sum(axis=0)
            self._pending_missing += gaps.sum(axis=0)
        else:
            self._pending_sum += rows.sum(axis=0)

    def flush(self) -> None:
        """Move the locally accumulated drift sums into the shared counters."""
        if not self._pending_rows:
            return
        for child, value in zip(self._drift_children, self._pending_sum.tolist(), strict=True):
            if value:
                child.inc(value)
        for missing, count in zip(
            self._missing_children, self._pending_missing.tolist(), strict=True
        ):
            if count:
                missing.inc(count)
        self.drift_rows.inc(self._pending_rows)
        self._pending_missing[:] = 0.0
        self._pending_sum[:] = 0.0
        self._pending_rows = 0

    async def flush_every(self, seconds: float) -> None:
        """Flush periodically, so other workers see this one's drift sums (until cancelled)."""
        while True:
            await asyncio.sleep(seconds)
            self.flush()

    def close(self) -> None:
        """Flush, and stop counting this process as a live worker."""
        self.flush()
        if self.multiprocess_dir:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self.live_workers.set(0)

    # -- reading -----------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        """Every family, summed over workers in multiprocess mode, plus the drift gauges."""
        self.flush()
        if self.multiprocess_dir:
            collector = MultiProcessCollector(None, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            families = list(collector.collect())  # type: ignore[no-untyped-call]
        else:
            families = list(self.registry.collect())
        families.extend(self._drift_families(families))
        return families

    def exposition(self, fmt: Literal["prometheus", "openmetrics"]) -> tuple[bytes, str]:
        """The metrics in a text exposition format, and its content type."""
        if fmt == "prometheus":
            return exposition.generate_latest(_Snapshot(self.collect())), PROMETHEUS_TEXT
        text = openmetrics.exposition.generate_latest(_Snapshot(self.collect()))  # type: ignore[no-untyped-call]
        return text, OPENMETRICS_TEXT

    def _drift_families(self, families: Sequence[Metric]) -> list[Metric]:
        served_mean = _served_mean(families)
        mean = GaugeMetricFamily(
            f"{PREFIX}_feature_training_mean",
            "Mean of each feature in the training data.",
            labels=["feature"],
        )
        std = GaugeMetricFamily(
            f"{PREFIX}_feature_training_stddev",
            "Standard deviation of each feature in the training data.",
            labels=["feature"],
        )
        drift = GaugeMetricFamily(
            f"{PREFIX}_feature_drift",
            "Running mean of each served feature minus its training mean, in training "
            "standard deviations (absent until a prediction is served).",
            labels=["feature"],
        )
        for i, name in enumerate(FEATURE_NAMES):
            mean.add_metric([name], float(self._training_mean[i]))
            std.add_metric([name], float(self._training_std[i]))
            if served_mean is not None and np.isfinite(served_mean[i]):
                z = (served_mean[i] - self._training_mean[i]) / self._training_std[i]
                drift.add_metric([name], float(z))
        return [mean, std, drift]

    def serving_report(self) -> ServingMetrics:
        """The live half of the JSON ``/metrics`` document."""
        families = {f.name: f for f in self.collect()}
        by_route: dict[str, int] = {}
        requests_total = 0
        for s in _samples(families, f"{PREFIX}_http_requests", "_total"):
            by_route[s.labels["route"]] = by_route.get(s.labels["route"], 0) + int(s.value)
            requests_total += int(s.value)
        errors = {
            s.labels["kind"]: int(s.value)
            for s in _samples(families, f"{PREFIX}_http_errors", "_total")
            if s.value
        }
        predicted = {
            s.labels["predicted_class"]: int(s.value)
            for s in _samples(families, f"{PREFIX}_predictions", "_total")
        }
        total = sum(predicted.values())
        n_positive = predicted.get("1", 0)
        starts = [s.value for s in _samples(families, f"{PREFIX}_start_time_seconds", "")]
        workers = [s.value for s in _samples(families, f"{PREFIX}_worker_processes", "")]
        served = _served_mean(list(families.values()))
        drift = [
            FeatureDrift(
                feature=name,
                training_mean=float(self._training_mean[i]),
                training_std=float(self._training_std[i]),
                served_mean=None
                if served is None or not np.isfinite(served[i])
                else float(served[i]),
                drift_std=None
                if served is None or not np.isfinite(served[i])
                else float((served[i] - self._training_mean[i]) / self._training_std[i]),
            )
            for i, name in enumerate(FEATURE_NAMES)
        ]
        return ServingMetrics(
            uptime_seconds=round(max(0.0, time.time() - min(starts)), 3) if starts else 0.0,
            worker_processes=int(sum(workers)),
            requests_total=requests_total,
            requests_by_route=dict(sorted(by_route.items())),
            predictions_total=total,
            positive_predictions=n_positive,
            positive_share=n_positive / total if total else None,
            errors_total=sum(errors.values()),
            errors_by_kind=dict(sorted(errors.items())),
            latency=_latency_by_route(families),
            drift=drift,
        )


def _samples(families: dict[str, Metric], name: str, suffix: str) -> Iterable[Sample]:
    family = families.get(name)
    if family is None:
        return []
    return [s for s in family.samples if s.name == name + suffix]


def _served_mean(families: Sequence[Metric]) -> FloatArray | None:
    by_name = {f.name: f for f in families}
    rows = sum(s.value for s in _samples(by_name, f"{PREFIX}_drift_rows", "_total"))
    if not rows:
        return None
    sums = {
        s.labels["feature"]: s.value for s in _samples(by_name, f"{PREFIX}_drift_feature_sums", "")
    }
    missing: dict[str, float] = {}
    for s in _samples(by_name, f"{PREFIX}_drift_feature_missing", "_total"):
        missing[s.labels["feature"]] = missing.get(s.labels["feature"], 0.0) + s.value
    counts = np.array([rows - missing.get(name, 0.0) for name in FEATURE_NAMES])
    with np.errstate(invalid="ignore", divide="ignore"):  # never-measured feature: NaN
        mean: FloatArray = np.array([sums.get(name, 0.0) for name in FEATURE_NAMES]) / counts
    return mean


def _latency_by_route(families: dict[str, Metric]) -> dict[str, LatencySummary]:
    name = f"{PREFIX}_http_request_duration_seconds"
    buckets: dict[str, list[tuple[float, float]]] = {}
    for s in _samples(families, name, "_bucket"):
        buckets.setdefault(s.labels["route"], []).append((float(s.labels["le"]), s.value))
    report = {}
    for route, pairs in sorted(buckets.items()):
        pairs.sort()
        count = int(pairs[-1][1]) if pairs else 0
        report[route] = LatencySummary(
            count=count,
            p50_ms=_quantile_ms(pairs, 0.50),
            p90_ms=_quantile_ms(pairs, 0.90),
            p99_ms=_quantile_ms(pairs, 0.99),
        )
    return report


def _quantile_ms(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket."""
    if not cumulative or cumulative[-1][1] == 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound * 1000.0  # beyond the last finite bucket: its bound
            width = count - lower_count
            fraction = (rank - lower_count) / width if width else 1.0
            return round((lower_bound + (bound - lower_bound) * fraction) * 1000.0, 4)
        lower_bound, lower_count = bound, count
    return lower_bound * 1000.0
