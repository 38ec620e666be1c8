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
histogram observation. The 13 per-feature sums for the drift signal are
accumulated in a NumPy vector, not in the shared metrics.

Privacy of the drift signal (issue 11): ``/metrics`` may be open to anyone, and
a per-request sum lets a scraper read each patient's values off the difference
of two scrapes. So each worker publishes drift only per *window* of at least
``HEART_DRIFT_MIN_PATIENTS`` (k, 100 by default) patients: its local sums go
into the shared counters only when k or more patients have accumulated, and
``heart_feature_drift`` is the mean of the most recent such window, in
training standard deviations (a recent-versus-training signal, not a since-start
average that dilutes a change). Every published figure is a sum or mean over
k or more patients, and windows do not overlap, so differences of scrapes give
only whole windows. (No aggregate protects against a client who sends k - 1 of
the k patients of a window itself; k keeps one patient's share at 1/k.)
Patients of a window not yet complete when a worker stops are not published.

``/metrics`` serves this one set of figures as JSON (the default), the
Prometheus text format or OpenMetrics, chosen by :func:`negotiate_metrics_format`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition, openmetrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample

from app import qvalues
from app.encoding import BodyOutcome, Coding
from app.reload_status import RESULTS, read_reload_status
from app.schemas import FeatureDrift, LatencySummary, ServingMetrics
from app.settings import StartupError
from model.arrays import FloatArray
from model.features import FEATURE_NAMES, N_FEATURES

PREFIX: Final[str] = "heart"
#: How prometheus_client combines one gauge's values over the worker processes.
GaugeMode = Literal["sum", "mostrecent", "min", "livesum", "livemax"]
#: Fewest patients a published drift figure aggregates (HEART_DRIFT_MIN_PATIENTS).
DRIFT_WINDOW: Final[int] = 100
#: /predict rows held before they are folded into the drift sums (a flush folds sooner).
_MAX_UNFOLDED: Final[int] = 1024

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
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    431: "header_too_large",
    499: "client_closed",
    500: "internal",
    503: "unavailable",
}


#: Label values of the compression counters: fixed here, never read from a request
#: (an unsupported ``Content-Encoding`` is counted as ``other``, not by its name).
CODINGS: Final[tuple[Coding, ...]] = ("gzip", "deflate")
BODY_OUTCOMES: Final[tuple[BodyOutcome, ...]] = ("decoded", "corrupt", "too_large")


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
    for rank, (media, q, _) in enumerate(qvalues.elements(accept or "")):
        fmt = _METRICS_MEDIA_TYPES.get(media)
        if fmt is None or q is None:
            continue
        # Highest q first; on equal q JSON wins, then the earlier entry.
        candidates.append((q, int(fmt == "json"), -rank, fmt))
    best = max(candidates, default=None)
    return best[3] if best is not None and best[0] > 0 else "json"


def _workers_families(directory: str) -> list[Metric]:
    """Every worker's metric files merged, as ``MultiProcessCollector.collect`` does, less
    the files a starting worker has created but not yet sized.

    A worker (a new one at a reload, or a restart) creates its file empty and then
    sizes it; a scrape between the two read zero bytes where prometheus_client
    expects a header, and ``/metrics`` answered 500. Such a file holds nothing yet.
    A file can also go between listing and reading (a dead worker's live gauges
    are removed): the listing is taken again, a few times.
    """
    tries = 3
    while True:
        files = [
            path
            for path in glob.glob(os.path.join(directory, "*.db"))
            if _size(path) >= _MMAP_HEADER_BYTES
        ]
        try:
            return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
        except FileNotFoundError:
            tries -= 1
            if not tries:
                raise


#: prometheus_client's metric file starts with its used length (4 bytes) and 4 of padding.
_MMAP_HEADER_BYTES: Final[int] = 8


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


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

    def __init__(
        self, *, multiprocess_dir: str | None = None, drift_window: int = DRIFT_WINDOW
    ) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.drift_window = drift_window
        self._training_mean = np.zeros(N_FEATURES)
        self._training_std = np.ones(N_FEATURES)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", documentation, labels, registry=r)

        def gauge(name: str, documentation: str, *labels: str, mode: GaugeMode) -> Gauge:
            return Gauge(
                f"{PREFIX}_{name}", documentation, labels, registry=r, multiprocess_mode=mode
            )

        self.requests = counter(
            "http_requests", "HTTP requests answered.", "method", "route", "status"
        )
        self.duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = counter(
            "http_errors", "Requests answered with an error status, by kind.", "kind"
        )
        self.refused_connections = counter(
            "http_refused_connections",
            "Connections closed before a request could be read, by reason "
            "(header_too_large: 431; header_timeout: 408; malformed_request: 400, a request the "
            "HTTP parser refused).",
            "reason",
        )
        self.compressed_requests = counter(
            "http_compressed_requests",
            "Compressed request bodies an endpoint read, by coding (gzip, deflate) and outcome "
            "(decoded; refused: corrupt 400, too_large 413 once inflated); a coding not read is "
            "coding other, outcome unsupported (415).",
            "coding",
            "outcome",
        )
        self.compressed_responses = counter(
            "http_compressed_responses", "Answers sent compressed, by coding.", "coding"
        )
        self.predictions = counter(
            "predictions", "Patients scored, by predicted class (0 or 1).", "predicted_class"
        )
        self.drift_rows = counter(
            "drift_rows",
            "Patients included in the drift feature sums (grows by whole windows of at "
            "least heart_drift_window_min_patients).",
        )
        self.drift_values = counter(
            "drift_feature_values",
            "Measured values in each feature's drift sum (null, not measured, is left out); "
            "a feature is published once a window holds at least "
            "heart_drift_window_min_patients measured values of it.",
            "feature",
        )
        # A gauge: ST depression may be negative (ST elevation), so a sum need not grow.
        self.drift_sums = gauge(
            "drift_feature_sums",
            "Sum of each served feature's measured values, published per window of at least "
            "heart_drift_window_min_patients of them; increase of it over the increase of "
            "heart_drift_feature_values_total is the mean over any time range.",
            "feature",
            mode="sum",
        )
        self.recent_drift = gauge(
            "feature_drift",
            "Mean of each feature over the most recent window of at least "
            "heart_drift_window_min_patients measured values, minus its training mean, in "
            "training standard deviations (absent until such a window is complete).",
            "feature",
            mode="mostrecent",
        )
        self.start_time = gauge(
            "start_time_seconds", "Unix time at which the service started.", mode="min"
        )
        self.live_workers = gauge(
            "worker_processes", "Worker processes currently serving.", mode="livesum"
        )
        # Live workers only: after a reload the old workers' version disappears.
        self.model_info = gauge(
            "model_info", "The loaded model (value is always 1).", "model_version", mode="livemax"
        )
        self._predicted = (self.predictions.labels("0"), self.predictions.labels("1"))
        self._drift_children = [self.drift_sums.labels(name) for name in FEATURE_NAMES]
        self._count_children = [self.drift_values.labels(name) for name in FEATURE_NAMES]
        # Created with the first window: until then the drift series are absent, not 0.
        self._recent_children: dict[int, Gauge] = {}
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._error_children: dict[int, Counter] = {}
        # Every series of the compression counters, so each exists (at 0) from the start.
        self._compressed_request_children = {
            (coding, outcome): self.compressed_requests.labels(coding, outcome)
            for coding in CODINGS
            for outcome in BODY_OUTCOMES
        }
        self._unsupported_coding = self.compressed_requests.labels("other", "unsupported")
        self._compressed_response_children = {
            coding: self.compressed_responses.labels(coding) for coding in CODINGS
        }
        self._pending_sum = np.zeros(N_FEATURES)
        #: Measured (non-null) values per feature in the pending window.
        self._pending_count = np.zeros(N_FEATURES)
        self._pending_rows = 0
        #: /predict's rows since the last fold into the sums (see ``observe_prediction``).
        self._unfolded: list[FloatArray] = []
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

    def observe_request(
        self, method: str, route: str, status: int, seconds: float, kind: str | None = None
    ) -> None:
        """Count one answered request; ``kind`` overrides the error kind of its status."""
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
            if kind is not None:
                self.errors.labels(kind).inc()
                return
            error = self._error_children.get(status)
            if error is None:
                error = self._error_children[status] = self.errors.labels(error_kind(status))
            error.inc()

    def observe_refused_connection(self, reason: str) -> None:
        """A connection closed before it made a request (oversized or too slow headers)."""
        self.refused_connections.labels(reason).inc()

    def observe_compressed_request(self, coding: Coding, outcome: BodyOutcome) -> None:
        """A compressed request body read to its end (decoded) or refused while read."""
        self._compressed_request_children[coding, outcome].inc()

    def observe_unsupported_coding(self) -> None:
        """A body refused (415) for a ``Content-Encoding`` the service does not read."""
        self._unsupported_coding.inc()

    def observe_compressed_response(self, coding: Coding) -> None:
        """An answer sent compressed with ``coding``."""
        self._compressed_response_children[coding].inc()

    def observe_prediction(self, row: FloatArray, prediction: int) -> None:
        """One patient scored as class ``prediction`` (1: positive); gaps left out of drift.

        The row is kept, not summed: folding a list of rows into the drift sums
        once per flush is one vectorised step, where summing here cost /predict
        four NumPy calls per request. ``row`` must not be changed afterwards.
        """
        self._predicted[prediction].inc()
        self._unfolded.append(row)
        if len(self._unfolded) >= _MAX_UNFOLDED:
            self._fold()

    def _fold(self) -> None:
        if self._unfolded:
            rows = np.vstack(self._unfolded)
            self._unfolded = []
            self._add_rows(rows)

    def observe_batch(self, rows: FloatArray, n_positive: int) -> None:
        """``len(rows)`` patients scored, ``n_positive`` of them as class 1."""
        n = rows.shape[0]
        if n_positive:
            self._predicted[1].inc(n_positive)
        if n - n_positive:
            self._predicted[0].inc(n - n_positive)
        self._add_rows(rows)

    def _add_rows(self, rows: FloatArray) -> None:
        """Rows into the pending drift window: sums and counts of the measured values."""
        self._pending_rows += rows.shape[0]
        gaps = np.isnan(rows)
        if gaps.any():
            self._pending_sum += np.where(gaps, 0.0, rows).sum(axis=0)
            self._pending_count += rows.shape[0] - gaps.sum(axis=0)
        else:
            self._pending_sum += rows.sum(axis=0)
            self._pending_count += rows.shape[0]

    def flush(self) -> None:
        """Publish the local drift window if it holds enough patients (see the module doc).

        A feature's values are published only once the window holds at least k
        *measured* values of it: a window of k patients of whom one had a thallium
        scan would otherwise publish that one patient's result. Its values wait
        for a later window instead.
        """
        self._fold()
        if self._pending_rows < self.drift_window:
            return
        self.drift_rows.inc(self._pending_rows)
        self._pending_rows = 0
        for j in np.flatnonzero(self._pending_count >= self.drift_window).tolist():
            count, total = float(self._pending_count[j]), float(self._pending_sum[j])
            self._drift_children[j].inc(total)
            self._count_children[j].inc(count)
            z = (total / count - self._training_mean[j]) / self._training_std[j]
            if j not in self._recent_children:
                self._recent_children[j] = self.recent_drift.labels(FEATURE_NAMES[j])
            self._recent_children[j].set(float(z))
            self._pending_sum[j] = 0.0
            self._pending_count[j] = 0.0

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
            families = _workers_families(self.multiprocess_dir)
        else:
            families = list(self.registry.collect())
        families.extend(self._drift_families())
        families.extend(_reload_families(read_reload_status()))
        return families

    def exposition(self, fmt: Literal["prometheus", "openmetrics"]) -> tuple[bytes, str]:
        """The metrics in a text exposition format, and its content type."""
        if fmt == "prometheus":
            return exposition.generate_latest(_Snapshot(self.collect())), PROMETHEUS_TEXT
        text = openmetrics.exposition.generate_latest(_Snapshot(self.collect()))  # type: ignore[no-untyped-call]
        return text, OPENMETRICS_TEXT

    def _drift_families(self) -> list[Metric]:
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
        window = GaugeMetricFamily(
            f"{PREFIX}_drift_window_min_patients",
            "Fewest patients any published drift figure aggregates (HEART_DRIFT_MIN_PATIENTS).",
            value=float(self.drift_window),
        )
        for i, name in enumerate(FEATURE_NAMES):
            mean.add_metric([name], float(self._training_mean[i]))
            std.add_metric([name], float(self._training_std[i]))
        return [mean, std, window]

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
        recent = {
            s.labels["feature"]: s.value for s in _samples(families, f"{PREFIX}_feature_drift", "")
        }
        drift = []
        for i, name in enumerate(FEATURE_NAMES):
            mean, std, z = self._training_mean[i], self._training_std[i], recent.get(name)
            drift.append(
                FeatureDrift(
                    feature=name,
                    training_mean=float(mean),
                    training_std=float(std),
                    served_mean=None if z is None else float(mean + z * std),
                    drift_std=None if z is None else float(z),
                )
            )
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
            drift_window_min_patients=self.drift_window,
        )


def _reload_families(status: dict[str, Any] | None) -> list[Metric]:
    """The supervisor's reload outcomes (absent when no supervisor runs this worker)."""
    reloads = CounterMetricFamily(
        f"{PREFIX}_model_reloads",
        "Model reloads asked for with SIGHUP, by result (success, failed, unchanged).",
        labels=["result"],
    )
    last = GaugeMetricFamily(
        f"{PREFIX}_model_reload_info",
        "The last reload (value 1): its result, the model version served after it, and "
        "why it failed (empty when it did not).",
        labels=["result", "model_version", "reason"],
    )
    counts = (status or {}).get("counts", {})
    for result in RESULTS:
        reloads.add_metric([result], float(counts.get(result, 0)))
    if status and status.get("last"):
        info = status["last"]
        last.add_metric([info["result"], info["model_version"], info["reason"][:500]], 1.0)
    return [reloads, last]


def _samples(families: dict[str, Metric], name: str, suffix: str) -> Iterable[Sample]:
    family = families.get(name)
    if family is None:
        return []
    return [s for s in family.samples if s.name == name + suffix]


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
