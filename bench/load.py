"""Load benchmark of the service against two reference servers measured in the same run.

One command (``python -m bench.load``; ``--quick`` for a smoke test) does it all:

1. **Comparison.** Three servers run side by side on free loopback ports, each
   a single uvicorn worker pinned to core 0 while ``wrk`` runs on core 1 (when
   there are two cores or more):

   - reference 1, ``bench/ref_asgi.py``: a raw ASGI app with a constant reply
     (uvicorn's own ceiling);
   - reference 2, ``bench/ref_fastapi.py``: FastAPI with the service's own
     ``PatientFeatures`` body model and a constant reply (the framework's
     ceiling for this body);
   - the service as shipped (``python -m app``, defaults unchanged: metrics,
     request ids and logging on) serving an artifact made by ``python -m training``.

   Each scenario (server x endpoint x concurrency) gets a warm-up run, then a
   measured run; rounds are interleaved (every scenario once per round, the
   order reversed every other round) and the report takes medians over rounds.
   Ratios compare figures measured minutes apart on the same machine.
2. **Memory.** A fresh service worker's resident memory (``VmRSS``) after
   1,000 and after 100,000 ``/predict`` requests.
3. **Scale.** Throughput with one and with two uvicorn workers, unpinned.

Results: ``bench/results/load.md`` and ``load.json`` (``load-quick.*`` for
``--quick``), printed as well. Raw wrk output and server logs go to
``bench/results/logs/`` (not committed).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.testing import clean_environment
from bench import machine, payloads, report, servers, wrk
from bench.stats import ratio, summarize

PYTHON = sys.executable
REPO_ROOT = machine.REPO_ROOT
LOG_DIR = report.RESULTS_DIR / "logs"

# The issue's reference figures (issue 6, "Reference figures measured on this kind of
# machine"). MLServer and BentoML are NOT re-measured here: they are quoted, and every
# comparison with them says so.
ISSUE_FIGURES: dict[str, dict[str, float]] = {
    "raw ASGI": {"c1_rps": 8390, "c1_p99_ms": 0.26, "c32_rps": 28290, "c32_p99_ms": 2.4},
    "FastAPI + Pydantic, constant": {
        "c1_rps": 4100,
        "c1_p99_ms": 0.46,
        "c32_rps": 6800,
        "c32_p99_ms": 8.7,
    },
    "MLServer 1.7 defaults": {"c1_rps": 610, "c1_p99_ms": 2.7, "c32_rps": 590, "c32_p99_ms": 123},
    "MLServer parallel_workers=0": {
        "c1_rps": 980,
        "c1_p99_ms": 1.6,
        "c32_rps": 1245,
        "c32_p99_ms": 51,
    },
    "BentoML 1.4": {"c1_rps": 527, "c1_p99_ms": 3.6, "c32_rps": 462, "c32_p99_ms": 342},
}
#: The issue's targets for /predict at c=32, as multiples of the quoted servers' figures.
ISSUE_MULTIPLES = {
    "MLServer 1.7 defaults": 8.0,
    "BentoML 1.4": 8.0,
    "MLServer parallel_workers=0": 3.5,
}
TARGET_C32_VS_FASTAPI = 0.7
TARGET_C1_P99_VS_FASTAPI = 1.5
TARGET_BATCH_ROWS_PER_S = 300_000.0
TARGET_MEMORY_GROWTH = 1.05


@dataclass(frozen=True)
class Settings:
    warmup_s: float = 3.0
    duration_s: float = 10.0
    rounds: int = 3
    concurrencies: tuple[int, ...] = (1, 32)
    batch_size: int = 1000
    batch_concurrency: int = 4
    memory_checkpoints: tuple[int, ...] = (1_000, 10_000, 50_000, 100_000)
    memory_concurrency: int = 32
    scale_workers: tuple[int, ...] = (1, 2)
    scale_concurrency: int = 64
    #: nice value for servers and wrk (negative: ahead of other jobs; needs root).
    nice: int = 0
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(
            warmup_s=1.0,
            duration_s=2.0,
            rounds=1,
            memory_checkpoints=(1_000, 5_000),
            quick=True,
        )


@dataclass(frozen=True)
class Target:
    """A server under test and how to start it."""

    key: str
    label: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/"
    has_batch: bool = True
    #: Set for the container target: podman's name for it.
    container: str | None = None


@dataclass(frozen=True)
class Scenario:
    target: str
    endpoint: str  # "predict" or "batch"
    connections: int

    @property
    def key(self) -> str:
        return f"{self.target}/{self.endpoint}/c{self.connections}"

    @property
    def path(self) -> str:
        return "/predict" if self.endpoint == "predict" else "/predict/batch"


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the servers and the load generator may use (None: no pinning)."""

    server: tuple[int, ...] | None
    client: tuple[int, ...] | None

    @classmethod
    def for_this_machine(cls) -> CpuPlan:
        n = len(os.sched_getaffinity(0))
        if n >= 2:
            cores = sorted(os.sched_getaffinity(0))
            return cls(server=(cores[0],), client=(cores[1],))
        return cls(server=None, client=None)

    def describe(self) -> str:
        if self.server is None:
            return "no pinning (fewer than 2 cores): server and wrk share the CPU"
        return f"server on core {self.server}, wrk on core {self.client} (taskset)"


# --------------------------------------------------------------------------- targets


def uvicorn_argv(app_path: str, port: int) -> tuple[str, ...]:
    return (
        PYTHON,
        "-m",
        "uvicorn",
        app_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    )


def service_argv(port: int, workers: int = 1) -> tuple[str, ...]:
    return (
        PYTHON,
        "-m",
        "app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    )


def service_env(artifact: Path) -> dict[str, str]:
    """Only the model path: everything else stays at the shipped defaults."""
    return {"HEART_MODEL_PATH": str(artifact)}


def targets(ports: dict[str, int], artifact: Path, container: str | None) -> list[Target]:
    found = [
        Target(
            "asgi",
            "reference 1: raw ASGI, constant reply",
            uvicorn_argv("bench.ref_asgi:app", ports["asgi"]),
        ),
        Target(
            "fastapi",
            "reference 2: FastAPI + PatientFeatures, constant reply",
            uvicorn_argv("bench.ref_fastapi:app", ports["fastapi"]),
            ready_path="/health",
        ),
        Target(
            "fastapi-bytes",
            "reference 2b: same, constant reply as pre-encoded bytes",
            uvicorn_argv("bench.experiments:param_bytes", ports["fastapi-bytes"]),
            ready_path="/health",
            has_batch=False,
        ),
        Target(
            "service",
            "the service as shipped (python -m app)",
            service_argv(ports["service"]),
            env=service_env(artifact),
            ready_path="/ready",
        ),
    ]
    if container:
        found.append(
            Target(
                "container",
                f"the service in its container ({container})",
                ("podman", "run", "--rm", "--name", f"heart-bench-{ports['container']}"),
                ready_path="/ready",
                container=f"heart-bench-{ports['container']}",
            )
        )
    return found


def start_target(
    target: Target,
    port: int,
    cpus: tuple[int, ...] | None,
    log_dir: Path,
    image: str | None,
    nice: int = 0,
) -> servers.Server:
    if target.container:
        assert image is not None
        # Host networking, as the project's podman setup and Kubernetes probes use it:
        # no port-forwarding proxy in the path. taskset's affinity is inherited by
        # conmon and the container's processes.
        argv = [
            *target.argv,
            "--network",
            "host",
            "-e",
            f"HEART_PORT={port}",
            "-e",
            "HEART_HOST=127.0.0.1",
            image,
        ]
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        remove = ["podman", "rm", "--force", "--time", "0", target.container]
        try:
            server = servers.start(
                target.key,
                argv,
                port=port,
                log_dir=log_dir,
                cpus=cpus,
                env=podman_environment(),
                ready_path=target.ready_path,
                ready_timeout_s=120.0,
            )
        except servers.ServerError:
            subprocess.run(remove, capture_output=True, check=False, env=podman_environment())
            raise
        server.cleanup = remove
        return server
    command = ("nice", "-n", str(nice), *target.argv) if nice else target.argv
    return servers.start(
        target.key,
        command,
        port=port,
        log_dir=log_dir,
        cpus=cpus,
        # The shipped defaults: a developer's own HEART_* settings must not leak in.
        env=clean_environment(target.env),
        ready_path=target.ready_path,
        cwd=REPO_ROOT,
    )


def server_pids(server: servers.Server, target: Target) -> list[int]:
    """The serving processes, whose CPU time tells the cost per request."""
    if target.container:
        proc = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Pid}}", target.container],
            capture_output=True,
            text=True,
            check=False,
            env=podman_environment(),
        )
        pid = int(proc.stdout.strip() or 0)
        return servers.worker_pids(pid) if pid > 0 else []
    return server.workers()


# --------------------------------------------------------------------------- checks


def preflight(server: servers.Server, target: Target, bodies: dict[str, Path], batch: int) -> None:
    """One request per endpoint before measuring: a benchmark of error replies is worthless."""
    reply = servers.post_json(server.url("/predict"), payloads.first_body(bodies["predict"]))
    if target.key in ("service", "container") and not 0.0 <= reply["probability"] <= 1.0:
        raise servers.ServerError(f"{target.key} /predict gave {reply!r}")
    if target.has_batch:
        reply = servers.post_json(
            server.url("/predict/batch"), payloads.first_body(bodies["batch"])
        )
        if target.key in ("service", "container") and len(reply["predictions"]) != batch:
            raise servers.ServerError(
                f"{target.key} /predict/batch answered {len(reply['predictions'])} predictions "
                f"for {batch} patients"
            )


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` so far (from /proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def measure(
    server: servers.Server,
    target: Target,
    scenario: Scenario,
    body_file: Path,
    settings: Settings,
    plan: CpuPlan,
    log: Path,
) -> dict[str, Any]:
    """Warm up, then one measured wrk run; also the server's CPU time per request."""
    url = server.url(scenario.path)
    warmup_requests = 0
    if settings.warmup_s > 0:
        warmup_requests = wrk.run(
            url,
            body_file,
            connections=scenario.connections,
            duration_s=settings.warmup_s,
            cpus=plan.client,
            nice=settings.nice,
        ).requests
    server.check_alive()
    pids = server_pids(server, target)
    per_worker_before = [cpu_seconds([pid]) for pid in pids]
    machine_before = machine.cpu_busy_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk.run(
        url,
        body_file,
        connections=scenario.connections,
        duration_s=settings.duration_s,
        cpus=plan.client,
        nice=settings.nice,
    )
    per_worker = [cpu_seconds([pid]) - b for pid, b in zip(pids, per_worker_before, strict=True)]
    cpu_used = sum(per_worker)
    machine_after = machine.cpu_busy_seconds()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.check_alive()
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    busy = machine_after[0] - machine_before[0]
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"==== {scenario.key} load {os.getloadavg()}\n{result.raw}\n")
    out = result.as_dict()
    if result.requests == 0:  # a stalled server must not pass as a slow one
        out["errors"]["no_request_completed"] = 1
    out["warmup_requests"] = warmup_requests
    out["server_cpu_s"] = cpu_used
    # With several workers: the busiest one's share of the CPU time (1/workers when
    # the kernel spread the keep-alive connections evenly, 1.0 when one got them all).
    out["busiest_worker_share"] = ratio(max(per_worker, default=0.0), cpu_used)
    out["wrk_cpu_s"] = wrk_cpu
    # Whatever else kept the cores busy during the run (other jobs on a shared machine),
    # in cores: 0 on a quiet machine, 1.0 means one whole core was taken by others.
    out["other_load_cores"] = max(0.0, busy - cpu_used - wrk_cpu) / result.duration_s
    out["steal_cores"] = (machine_after[1] - machine_before[1]) / result.duration_s
    out["server_cpu_us_per_request"] = ratio(cpu_used * 1e6, result.requests)
    out["load_average"] = machine.load_average()
    return out


def summarize_runs(runs: list[dict[str, Any]], batch_size: int, endpoint: str) -> dict[str, Any]:
    rows_per_request = batch_size if endpoint == "batch" else 1
    return {
        "requests_per_s": summarize(r["requests_per_s"] for r in runs).as_dict(),
        "rows_per_s": summarize(r["requests_per_s"] * rows_per_request for r in runs).as_dict(),
        "p50_us": summarize(r["latency_us"]["p50"] for r in runs).as_dict(),
        "p99_us": summarize(r["latency_us"]["p99"] for r in runs).as_dict(),
        "server_cpu_us_per_request": summarize(
            r["server_cpu_us_per_request"] for r in runs
        ).as_dict(),
        # What one core doing nothing else would sustain: 1 / CPU time per request.
        # Meaningful where the worker is the bottleneck (c=32, batch), and far less
        # sensitive to other jobs on the machine than wall-clock throughput.
        "rows_per_busy_core_s": summarize(
            ratio(1e6 * rows_per_request, r["server_cpu_us_per_request"]) for r in runs
        ).as_dict(),
        "other_load_cores": summarize(r["other_load_cores"] for r in runs).as_dict(),
        "busiest_worker_share": summarize(
            r.get("busiest_worker_share", math.nan) for r in runs
        ).as_dict(),
        "errors": sum(sum(r["errors"].values()) for r in runs),
        "runs": runs,
    }


def scenarios_for(found: list[Target], settings: Settings) -> list[Scenario]:
    out: list[Scenario] = []
    for target in found:
        out.extend(Scenario(target.key, "predict", c) for c in settings.concurrencies)
        if target.has_batch and target.key != "asgi":
            out.append(Scenario(target.key, "batch", settings.batch_concurrency))
    return out


def comparison(
    found: list[Target],
    ports: dict[str, int],
    bodies: dict[str, Path],
    settings: Settings,
    plan: CpuPlan,
    image: str | None,
) -> dict[str, Any]:
    """Phase 1: every scenario, interleaved over rounds, all servers started once."""
    started: dict[str, servers.Server] = {}
    try:
        for target in found:
            started[target.key] = start_target(
                target, ports[target.key], plan.server, LOG_DIR, image, settings.nice
            )
            preflight(started[target.key], target, bodies, settings.batch_size)
        plan_list = scenarios_for(found, settings)
        by_key = {t.key: t for t in found}
        runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in plan_list}
        for round_no in range(settings.rounds):
            order = plan_list if round_no % 2 == 0 else list(reversed(plan_list))
            for scenario in order:
                progress(f"round {round_no + 1}/{settings.rounds}: {scenario.key}")
                runs[scenario.key].append(
                    measure(
                        started[scenario.target],
                        by_key[scenario.target],
                        scenario,
                        bodies[scenario.endpoint],
                        settings,
                        plan,
                        LOG_DIR / "wrk.log",
                    )
                )
        return {
            s.key: {
                "target": s.target,
                "endpoint": s.endpoint,
                "connections": s.connections,
                **summarize_runs(runs[s.key], settings.batch_size, s.endpoint),
            }
            for s in plan_list
        }
    finally:
        for server in started.values():
            server.stop()


def memory(
    artifact: Path, bodies: dict[str, Path], settings: Settings, plan: CpuPlan
) -> dict[str, Any]:
    """Phase 2: RSS of a fresh worker at request-count checkpoints."""
    port = servers.free_port()
    target = next(
        t
        for t in targets(
            {"asgi": 0, "fastapi": 0, "fastapi-bytes": 0, "service": port}, artifact, None
        )
        if t.key == "service"
    )
    server = start_target(target, port, plan.server, LOG_DIR, None, settings.nice)
    try:
        preflight(server, target, bodies, settings.batch_size)
        sent = 1 + (1 if target.has_batch else 0)
        points: list[dict[str, Any]] = [
            {"requests": sent, "rss_kib": server.rss_kib(), "label": "after start-up"}
        ]
        rate = 1000.0  # requests/s; refined from each run's mean latency
        for checkpoint in settings.memory_checkpoints:
            missing = checkpoint - sent
            while missing > 0:
                progress(f"memory: {sent:,} requests sent, next checkpoint {checkpoint:,}")
                connections = min(settings.memory_concurrency, missing)
                # wrk runs for its whole duration even after STOP_AFTER responses, so
                # ask for a duration just long enough at the rate seen so far.
                result = wrk.run(
                    server.url("/predict"),
                    bodies["predict"],
                    connections=connections,
                    duration_s=min(30.0, 1.0 + 1.3 * missing / rate),
                    cpus=plan.client,
                    stop_after=missing,
                    nice=settings.nice,
                )
                if result.error_count:
                    raise servers.ServerError(f"memory run had errors: {result.errors}")
                if result.latency_us.get("mean", 0) > 0:
                    rate = connections / (result.latency_us["mean"] / 1e6)
                sent += result.requests
                missing = checkpoint - sent
            time.sleep(0.5)  # let requests still in flight when wrk stopped finish
            points.append(
                {"requests": sent, "rss_kib": server.rss_kib(), "label": f"{checkpoint:,}"}
            )
        worker = server.workers()[0]
        peak = servers.read_status_kib(worker, "VmHWM")
    finally:
        server.stop()
    first = next(p for p in points if p["label"] == f"{settings.memory_checkpoints[0]:,}")
    last = points[-1]
    return {
        "points": points,
        "peak_rss_kib": peak,
        "growth": ratio(last["rss_kib"], first["rss_kib"]),
        "first_checkpoint": first["requests"],
        "last_checkpoint": last["requests"],
    }


def scale(artifact: Path, bodies: dict[str, Path], settings: Settings) -> dict[str, Any]:
    """Phase 3: 1 vs 2 workers, nothing pinned (wrk shares the cores with the workers)."""
    started: dict[int, servers.Server] = {}
    results: dict[int, list[dict[str, Any]]] = {w: [] for w in settings.scale_workers}
    try:
        for workers in settings.scale_workers:
            port = servers.free_port()
            target = Target(
                f"service-{workers}w",
                f"service, {workers} workers",
                service_argv(port, workers),
                env=service_env(artifact),
                ready_path="/ready",
            )
            started[workers] = start_target(target, port, None, LOG_DIR, None, settings.nice)
            preflight(started[workers], target, bodies, settings.batch_size)
        unpinned = CpuPlan(server=None, client=None)
        for round_no in range(settings.rounds):
            order = list(settings.scale_workers)
            if round_no % 2:
                order.reverse()
            for workers in order:
                progress(f"scale round {round_no + 1}/{settings.rounds}: {workers} worker(s)")
                target = Target(f"service-{workers}w", "", ())
                scenario = Scenario(target.key, "predict", settings.scale_concurrency)
                results[workers].append(
                    measure(
                        started[workers],
                        target,
                        scenario,
                        bodies["predict"],
                        settings,
                        unpinned,
                        LOG_DIR / "wrk.log",
                    )
                )
        counts = {
            w: prometheus_check(started[w], results[w], settings.scale_concurrency)
            for w in settings.scale_workers
        }
    finally:
        for server in started.values():
            server.stop()
    return {
        str(w): {
            "workers": w,
            "connections": settings.scale_concurrency,
            "prometheus": counts[w],
            **summarize_runs(results[w], settings.batch_size, "predict"),
        }
        for w in settings.scale_workers
    }


def predict_requests_counted(exposition: str) -> float:
    """Sum of ``heart_http_requests_total`` for route ``/predict`` over all label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "heart_http_requests_total" and sample.labels.get("route") == (
                "/predict"
            ):
                total += sample.value
    return total


def prometheus_check(
    server: servers.Server, runs: list[dict[str, Any]], connections: int
) -> dict[str, Any]:
    """Do the Prometheus counters add up across workers? Compare with what wrk completed.

    wrk counts the responses it received; the service also counts requests that
    were still in flight when wrk stopped (at most ``connections`` per wrk run),
    so the service's figure must lie between the two bounds. Several scrapes
    are taken because each may be answered by a different worker.
    """
    completed = 1 + sum(r["requests"] + r["warmup_requests"] for r in runs)  # 1: pre-flight
    upper = completed + connections * 2 * len(runs)
    scrapes = []
    for _ in range(4):
        status, body = servers.request(
            server.url("/metrics?format=prometheus"), method="GET", timeout_s=10
        )
        if status != 200:
            raise servers.ServerError(f"/metrics?format=prometheus answered {status}")
        scrapes.append(predict_requests_counted(body.decode()))
    consistent = all(completed <= v <= upper for v in scrapes) and len(set(scrapes)) == 1
    return {
        "wrk_completed": completed,
        "upper_bound": upper,
        "scrapes": scrapes,
        "consistent": consistent,
    }


# --------------------------------------------------------------------------- reporting


def med(results: dict[str, Any], key: str, figure: str) -> float:
    entry = results.get(key)
    return float("nan") if entry is None else float(entry[figure]["median"])


def comparison_table(results: dict[str, Any], found: list[Target]) -> str:
    labels = {t.key: t.label for t in found}
    rows = []
    for key, r in results.items():
        per_row = r["endpoint"] == "batch"
        rows.append(
            [
                labels[r["target"]],
                "/predict/batch" if per_row else "/predict",
                str(r["connections"]),
                report.number(r["requests_per_s"]["median"]),
                report.number(r["rows_per_s"]["median"]) if per_row else "",
                report.milliseconds(r["p50_us"]["median"]),
                report.milliseconds(r["p99_us"]["median"]),
                report.number(r["server_cpu_us_per_request"]["median"]),
                report.number(r["rows_per_busy_core_s"]["median"]),
                f"{r['requests_per_s']['spread'] * 100:.0f}%",
                f"{r['other_load_cores']['median']:.2f}",
                str(r["errors"]),
            ]
        )
        del key
    return report.table(
        [
            "server",
            "endpoint",
            "c",
            "req/s",
            "rows/s",
            "p50",
            "p99",
            "server CPU us/req",
            "rows/s per busy core",
            "req/s spread",
            "other load",
            "errors",
        ],
        rows,
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def targets_table(results: dict[str, Any], mem: dict[str, Any] | None) -> tuple[str, list[str]]:
    """The issue's targets with the measured value; also the list of missed ones.

    The verdict uses wall-clock figures, as the issue defines the targets. The
    "per busy core" column gives the same comparison from CPU time per request,
    which other jobs on a shared machine distort far less; on a quiet machine
    the two agree wherever the worker is the bottleneck.
    """
    core = "rows_per_busy_core_s"
    c32 = ratio(
        med(results, "service/predict/c32", "requests_per_s"),
        med(results, "fastapi/predict/c32", "requests_per_s"),
    )
    c32_core = ratio(
        med(results, "service/predict/c32", core), med(results, "fastapi/predict/c32", core)
    )
    c32_bytes = ratio(
        med(results, "service/predict/c32", "requests_per_s"),
        med(results, "fastapi-bytes/predict/c32", "requests_per_s"),
    )
    c32_bytes_core = ratio(
        med(results, "service/predict/c32", core),
        med(results, "fastapi-bytes/predict/c32", core),
    )
    c1_p99 = ratio(
        med(results, "service/predict/c1", "p99_us"), med(results, "fastapi/predict/c1", "p99_us")
    )
    batch_key = f"service/batch/c{_batch_c(results)}"
    rows_s = med(results, batch_key, "rows_per_s")
    rows_core = med(results, batch_key, core)
    lines = [
        (
            "/predict c=32 req/s vs reference 2 (FastAPI)",
            f">= {TARGET_C32_VS_FASTAPI}x",
            report.times(c32),
            c32 >= TARGET_C32_VS_FASTAPI,
            f"{report.times(c32_core)} ({verdict(c32_core >= TARGET_C32_VS_FASTAPI)})",
        ),
        (
            "/predict c=1 p99 vs reference 2 (FastAPI)",
            f"<= {TARGET_C1_P99_VS_FASTAPI}x",
            report.times(c1_p99),
            c1_p99 <= TARGET_C1_P99_VS_FASTAPI,
            "",
        ),
        (
            "/predict/batch (1000 patients) rows/s, one worker",
            f">= {report.number(TARGET_BATCH_ROWS_PER_S)}",
            report.number(rows_s),
            rows_s >= TARGET_BATCH_ROWS_PER_S,
            f"{report.number(rows_core)} ({verdict(rows_core >= TARGET_BATCH_ROWS_PER_S)})",
        ),
    ]
    if not math.isnan(c32_bytes):
        # Informational: the issue's reference 2 says "constant reply", not how it is
        # encoded; a pre-encoded reply makes FastAPI's ceiling higher, so say how we do
        # against that stricter reading too (not counted as a missed target).
        informational = (
            "(informational) /predict c=32 req/s vs reference 2b (bytes reply)",
            f">= {TARGET_C32_VS_FASTAPI}x",
            report.times(c32_bytes),
            True,
            f"{report.times(c32_bytes_core)} ({verdict(c32_bytes_core >= TARGET_C32_VS_FASTAPI)})",
        )
        lines.insert(1, informational)
        verdicts_override = {informational[0]: verdict(c32_bytes >= TARGET_C32_VS_FASTAPI)}
    else:
        verdicts_override = {}
    if mem is not None:
        lines.append(
            (
                f"RSS after {mem['last_checkpoint']:,} vs after {mem['first_checkpoint']:,} "
                "requests",
                f"<= {TARGET_MEMORY_GROWTH}x",
                f"{mem['growth']:.3f}x",
                mem["growth"] <= TARGET_MEMORY_GROWTH,
                "",
            )
        )
    missed = [name for name, _, _, ok, _ in lines if not ok]
    table = report.table(
        ["target (issue 6)", "wanted", "measured", "verdict", "per busy core (CPU time)"],
        [
            [name, want, got, verdicts_override.get(name, verdict(ok)), core_cell]
            for name, want, got, ok, core_cell in lines
        ],
    )
    return table, missed


def _batch_c(results: dict[str, Any]) -> int:
    for r in results.values():
        if r["target"] == "service" and r["endpoint"] == "batch":
            return int(r["connections"])
    return 0


def quoted_table(results: dict[str, Any]) -> str:
    """Our service against the issue's MLServer/BentoML figures (quoted, not re-measured).

    Two views: the plain ratio of our figure to the quoted one (different machines and
    days), and a ratio normalised by our reference 2 against the issue's FastAPI
    reference, which removes most of the difference between the two machines.
    """
    ours = {c: med(results, f"service/predict/c{c}", "requests_per_s") for c in (1, 32)}
    ref2 = {c: med(results, f"fastapi/predict/c{c}", "requests_per_s") for c in (1, 32)}
    issue_ref2 = ISSUE_FIGURES["FastAPI + Pydantic, constant"]
    rows = []
    for name in ISSUE_MULTIPLES:
        fig = ISSUE_FIGURES[name]
        cells = [name + " (issue's figure)"]
        for c in (1, 32):
            quoted = fig[f"c{c}_rps"]
            plain = ratio(ours[c], quoted)
            normalised = ratio(ours[c], ref2[c]) * issue_ref2[f"c{c}_rps"] / quoted
            cells += [report.number(quoted), report.times(plain), report.times(normalised)]
        wanted = ISSUE_MULTIPLES[name]
        normalised_c32 = ratio(ours[32], ref2[32]) * issue_ref2["c32_rps"] / fig["c32_rps"]
        cells.append(f">= {wanted}x: {verdict(normalised_c32 >= wanted)}")
        rows.append(cells)
    return report.table(
        [
            "quoted server",
            "c=1 req/s (quoted)",
            "ours / quoted",
            "normalised",
            "c=32 req/s (quoted)",
            "ours / quoted",
            "normalised",
            "target at c=32 (normalised)",
        ],
        rows,
    )


def memory_table(mem: dict[str, Any]) -> str:
    return report.table(
        ["after", "requests served (approx.)", "VmRSS", "vs first checkpoint"],
        [
            [
                p["label"],
                report.number(p["requests"]),
                f"{p['rss_kib'] / 1024:.1f} MiB",
                "" if i == 0 else report.times(ratio(p["rss_kib"], mem["points"][1]["rss_kib"])),
            ]
            for i, p in enumerate(mem["points"])
        ],
    )


def scale_table(sc: dict[str, Any]) -> str:
    base = sc[min(sc, key=int)]["requests_per_s"]["median"]
    return report.table(
        [
            "workers",
            "c",
            "req/s",
            "p50",
            "p99",
            "CPU us/req (all workers)",
            "vs 1 worker",
            "busiest worker's CPU share",
            "other load",
            "/predict in Prometheus vs wrk",
        ],
        [
            [
                str(r["workers"]),
                str(r["connections"]),
                report.number(r["requests_per_s"]["median"]),
                report.milliseconds(r["p50_us"]["median"]),
                report.milliseconds(r["p99_us"]["median"]),
                report.number(r["server_cpu_us_per_request"]["median"]),
                report.times(ratio(r["requests_per_s"]["median"], base)),
                f"{r['busiest_worker_share']['max']:.2f}",
                f"{r['other_load_cores']['median']:.2f}",
                prometheus_cell(r["prometheus"]),
            ]
            for r in sc.values()
        ],
    )


def prometheus_cell(check: dict[str, Any]) -> str:
    counted = ", ".join(report.number(v) for v in sorted(set(check["scrapes"])))
    verdict_text = "consistent" if check["consistent"] else "**inconsistent**"
    return f"{counted} vs {report.number(check['wrk_completed'])} completed: {verdict_text}"


def to_markdown(data: dict[str, Any], found: list[Target]) -> tuple[str, list[str]]:
    s = data["settings"]
    parts = [
        "## Load benchmark" + (" (--quick: a smoke test, not a measurement)" if s["quick"] else ""),
        "",
        machine.markdown(data["machine"]),
        f"- pinning: {data['cpu_plan']}",
        f"- method: wrk with bench/post.lua cycling through the 270 real patients; "
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s measured per scenario, "
        f"{s['rounds']} interleaved round(s), medians; batch bodies of {s['batch_size']} patients",
        f"- command: `{data['command']}`",
        "- columns: `server CPU us/req` is the worker's CPU time per request (from "
        "/proc/PID/stat); `req/s spread` is (max - min) / median over the rounds; "
        "`other load` is how many cores other processes kept busy during the runs "
        "(median; 0 on a quiet machine)",
        "",
        comparison_table(data["comparison"], found),
        "",
    ]
    mem = data.get("memory")
    table, missed = targets_table(data["comparison"], mem)
    parts += ["### Targets", "", table, ""]
    parts += [
        "### Against the issue's MLServer and BentoML figures (quoted, not re-measured)",
        "",
        "`ours / quoted` divides our median by the figure quoted in issue 6 (measured on "
        "another machine of the same kind); `normalised` first divides ours by reference 2 "
        "measured in this run and multiplies by the issue's reference-2 figure, which removes "
        "most of the machine difference.",
        "",
        quoted_table(data["comparison"]),
        "",
    ]
    if mem is not None:
        parts += [
            f"### Memory of one worker (fresh process, /predict at c={s['memory_concurrency']})",
            "",
            memory_table(mem),
            "",
            f"Peak RSS (VmHWM) of the worker: {mem['peak_rss_kib'] / 1024:.1f} MiB.",
            "",
        ]
    sc = data.get("scale")
    if sc is not None:
        per_core = med(data["comparison"], "service/predict/c32", "requests_per_s")
        per_busy_core = med(data["comparison"], "service/predict/c32", "rows_per_busy_core_s")
        parts += [
            f"### Workers (nothing pinned: wrk shares the {data['machine']['cores']} cores)",
            "",
            scale_table(sc),
            "",
            f"Per core: one pinned worker with wrk on the other core served "
            f"{report.number(per_core)} req/s at c=32 in the comparison above, and its CPU "
            f"time per request means {report.number(per_busy_core)} req/s for a core that "
            "does nothing else; that is the figure to plan with per core. Here the load "
            "generator competes with the workers for the same two cores, so two workers "
            "cannot double the throughput of one. The Prometheus column compares the "
            'service\'s own `heart_http_requests_total{route="/predict"}` (several scrapes, '
            "each answered by whichever worker) with the responses wrk received. The "
            "busiest worker's CPU share (worst round) is 0.50 when the kernel spread wrk's "
            "keep-alive connections evenly over two workers; near 1.0, one worker served "
            "almost everything, which caps the gain.",
            "",
        ]
        missed += [
            f"Prometheus counts with {w} workers"
            for w, r in sc.items()
            if not r["prometheus"]["consistent"]
        ]
    return "\n".join(parts), missed


# --------------------------------------------------------------------------- main


def progress(message: str) -> None:
    print(f"[bench.load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_wrk(install: bool) -> None:
    """Use wrk if present; otherwise install Debian's package when we are allowed to."""
    if wrk.wrk_path():
        return
    apt = shutil.which("apt-get")
    if install and apt and os.geteuid() == 0:
        progress("wrk is missing: apt-get update && apt-get install -y wrk")
        subprocess.run([apt, "update", "-q"], check=True)
        subprocess.run([apt, "install", "-y", "-q", "wrk"], check=True)
        if wrk.wrk_path():
            return
    raise SystemExit(
        "wrk is not installed; install Debian's package (apt-get install wrk) "
        "or rerun as root without --no-install"
    )


@contextlib.contextmanager
def artifact_path(given: Path | None) -> Iterator[Path]:
    """The artifact to serve: the given one, or a fresh one from ``python -m training``."""
    if given is not None:
        if not given.is_file():
            raise SystemExit(f"no artifact at {given}: run `python -m training --output {given}`")
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-artifact-") as tmp:
        path = Path(tmp) / "model.joblib"
        progress("training the default model (python -m training --quiet --no-plot)")
        subprocess.run(
            [PYTHON, "-m", "training", "--output", str(path), "--quiet", "--no-plot"],
            check=True,
            cwd=REPO_ROOT,
        )
        yield path


def podman_environment() -> dict[str, str]:
    """Our environment, with the project's private podman configuration when it exists.

    scripts/container-lib.sh keeps podman's storage and settings under
    .cache/containers (the image built by the container scripts lives there).
    """
    env = dict(os.environ)
    conf_dir = REPO_ROOT / ".cache" / "containers"
    for variable, name in (
        ("CONTAINERS_STORAGE_CONF", "storage.conf"),
        ("CONTAINERS_CONF", "containers.conf"),
    ):
        if variable not in env and (conf_dir / name).is_file():
            env[variable] = str(conf_dir / name)
    return env


def image_description(image: str) -> str:
    """``IMAGE (built DATE from REVISION)``: which code the container figures are about."""
    proc = subprocess.run(
        [
            "podman",
            "image",
            "inspect",
            "--format",
            '{{.Created}} {{index .Labels "org.opencontainers.image.revision"}}',
            image,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=podman_environment(),
    )
    # "2026-11-25 10:08:54.26 +0000 UTC <revision>"
    parts = proc.stdout.split()
    if proc.returncode != 0 or len(parts) < 2:
        return image
    built = f"built {parts[0]} {parts[1][:5]} UTC"
    revision = parts[4] if len(parts) > 4 else ""
    if revision and revision not in ("unknown", "<no"):
        built += f" from {revision[:7]}"
    return f"{image}, {built}"


def container_available(image: str) -> bool:
    if shutil.which("podman") is None:
        return False
    proc = subprocess.run(
        ["podman", "image", "exists", image],
        capture_output=True,
        check=False,
        env=podman_environment(),
    )
    return proc.returncode == 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Load-test the service with wrk against a raw ASGI and a bare FastAPI "
        "reference measured in the same run; also worker memory and 1-vs-2-worker scaling.",
    )
    d = Settings()
    p.add_argument("--quick", action="store_true", help="1 s warm-up, 2 s runs, 1 round")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="seconds before each run")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds per run")
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved rounds")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--batch-concurrency", type=int, default=d.batch_concurrency)
    p.add_argument(
        "--artifact", type=Path, default=None, help="model to serve (default: train one now)"
    )
    p.add_argument(
        "--container",
        metavar="IMAGE",
        default=None,
        help="also measure this container image (needs podman and the image)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and wrk with this nice value (e.g. -10, as root) so other jobs "
        "on a shared machine disturb the measurement less",
    )
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    p.add_argument("--output-dir", type=Path, default=report.RESULTS_DIR)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        base = Settings.quick_mode()
        return Settings(
            **{
                **base.__dict__,
                "batch_size": args.batch_size,
                "batch_concurrency": args.batch_concurrency,
                "nice": args.nice,
            }
        )
    return Settings(
        warmup_s=args.warmup,
        duration_s=args.duration,
        rounds=args.rounds,
        batch_size=args.batch_size,
        batch_concurrency=args.batch_concurrency,
        nice=args.nice,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    ensure_wrk(not args.no_install)
    image = args.container
    if image and not container_available(image):
        progress(f"podman or the image {image} is missing: skipping the container")
        image = None
    image_label = image_description(image) if image else None
    plan = CpuPlan.for_this_machine()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "benchmark": "load",
        "machine": machine.describe(),
        "cpu_plan": plan.describe(),
        "settings": dict(settings.__dict__),
        "command": "python -m bench.load " + " ".join(sys.argv[1:] if argv is None else argv),
        "container_image": image_label,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp,
        artifact_path(args.artifact) as artifact,
    ):
        bodies = {
            "predict": payloads.write_single_bodies(Path(tmp) / "predict.jsonl"),
            "batch": payloads.write_batch_bodies(
                Path(tmp) / "batch.jsonl", batch_size=settings.batch_size
            ),
        }
        ports = {
            k: servers.free_port()
            for k in ("asgi", "fastapi", "fastapi-bytes", "service", "container")
        }
        found = targets(ports, artifact, image_label)
        data["comparison"] = comparison(found, ports, bodies, settings, plan, image)
        if not args.skip_memory:
            data["memory"] = memory(artifact, bodies, settings, plan)
        if not args.skip_scale:
            data["scale"] = scale(artifact, bodies, settings)
    data["machine"]["load_average_end"] = machine.load_average()
    markdown, missed = to_markdown(data, found)
    data["missed_targets"] = missed
    stem = "load-quick" if settings.quick else "load"
    for path in report.write_results(stem, markdown, data, args.output_dir):
        progress(f"wrote {path}")
    print(markdown)
    errors = sum(r["errors"] for r in data["comparison"].values())
    if errors:
        progress(f"{errors} requests failed during the runs: the figures are not valid")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
