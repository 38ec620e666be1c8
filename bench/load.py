"""Load benchmark: the service against reference servers measured in the same run.

``python -m bench.load`` (``--quick`` for a smoke test) runs three phases:
**comparison** of the references (bench/references.py), the service as shipped
and optionally its image, one pinned worker each, every scenario in interleaved
rounds (``--scenario`` adds requests of your own); **memory** of a fresh worker
from 1,000 to 100,000 requests; **scale** from one to two workers. Results go to
``bench/results/load.{md,json}``, wrk output and server logs to
``bench/results/logs/``; BENCHMARKS.md explains the method and the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import report, servers, wrk
from bench.report import number, times
from bench.servers import CpuPlan, Server, Target
from bench.wrk import Scenario
from model.artifact import read_payload, save_artifact
from training.report import markdown_table

LOG_DIR = report.RESULTS_DIR / "logs"
#: How many patients a reply of the service scored, by scenario: the pre-flight check.
ANSWERED: dict[str, Callable[[Any], int]] = {
    "predict": lambda r: int(0.0 <= r["probability"] <= 1.0),
    "batch": lambda r: len(r["predictions"]),
    "oip": lambda r: next(o["shape"][0] for o in r["outputs"] if o["name"] == "probability"),
}


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


@dataclass(frozen=True)
class Run:
    target: Target
    scenario: Scenario
    connections: int

    @property
    def key(self) -> str:
        return f"{self.target.key}/{self.scenario.name}/c{self.connections}"

    def __str__(self) -> str:
        return self.key


def targets(image: str | None = None, built: str | None = None) -> list[Target]:
    """The references, the service as shipped and, when given, its container image."""
    found = [
        Target("asgi", "reference 1: raw ASGI, constant reply", "bench.references:raw_asgi", "/"),
        Target(
            "fastapi",
            "reference 2: FastAPI + PatientFeatures, constant reply",
            "bench.references:fastapi_app",
            "/health",
        ),
        Target(
            "fastapi-bytes",
            "reference 2b: same, constant reply as pre-encoded bytes",
            "bench.references:fastapi_bytes",
            "/health",
            has_batch=False,
        ),
        Target("service", "the service as shipped (python -m app)"),
    ]
    # The image's description says when and from which commit it was built: which code.
    container = Target("container", f"the service in its container ({built or image})", image=image)
    return [*found, container] if image else found


def extra_scenarios(specs: Sequence[Sequence[str]]) -> list[Scenario]:
    """``--scenario NAME PATH BODIES`` options, checked before any server starts."""
    found = [Scenario(n, path, Path(file).resolve(), service_only=True) for n, path, file in specs]
    for s in found:
        if s.name in ("predict", "batch") or not s.path.startswith("/") or not s.bodies.is_file():
            raise SystemExit(f"--scenario {s.name}: wants a new name, a path from /, a body file")
    return found


def plan_runs(found: list[Target], scenarios: list[Scenario], settings: Settings) -> list[Run]:
    """Every scenario a target can answer, at its concurrencies, target by target."""
    runs: list[Run] = []
    for target in found:
        for scenario in scenarios:
            if scenario.name == "batch":
                if target.has_batch and target.key != "asgi":  # a constant reply, no batch
                    runs.append(Run(target, scenario, settings.batch_concurrency))
            elif scenario.name == "oip":  # the batches again, beside /predict/batch
                if target.is_service:
                    runs.append(Run(target, scenario, settings.batch_concurrency))
            elif target.is_service or not scenario.service_only:
                runs.extend(Run(target, scenario, c) for c in settings.concurrencies)
    return runs


def preflight(server: Server, scenarios: Sequence[Scenario]) -> None:
    """One request per scenario before measuring (a benchmark of error replies is worthless):
    any reply but 200 fails, and the service's must score every patient sent."""
    for s in scenarios:
        reply = servers.post(server.url(s.path), s.first_body(), s.media_type)
        count = ANSWERED.get(s.name) if server.target.is_service and not s.media_type else None
        if count is not None and count(reply) != s.rows_per_request:
            raise servers.ServerError(
                f"{server.target.key} {s.path} answered {str(reply)[:300]} "
                f"for {s.rows_per_request} patient(s)"
            )


def measure(server: Server, run: Run, settings: Settings, cpus: Sequence[int] | None) -> Any:
    return wrk.measure(
        server,
        run.scenario.path,
        run.scenario.bodies,
        connections=run.connections,
        warmup_s=settings.warmup_s,
        duration_s=settings.duration_s,
        cpus=cpus,
        nice=settings.nice,
        log=LOG_DIR / "wrk.log",
        media_type=run.scenario.media_type,
    )


def measured(
    found: list[Target], runs: list[Run], artifact: Path, settings: Settings, plan: CpuPlan
) -> dict[str, Any]:
    """Start every target once, check each answers, then measure every run once per round."""
    with contextlib.ExitStack() as stack:
        up: dict[str, Server] = {}
        for t in found:
            server = servers.started(t, artifact, LOG_DIR, plan.server, settings.nice)
            up[t.key] = stack.enter_context(server)
            preflight(up[t.key], list(dict.fromkeys(r.scenario for r in runs if r.target == t)))
        samples = servers.in_rounds(
            settings.rounds, runs, lambda r: measure(up[r.target.key], r, settings, plan.client)
        )
    return {
        r.key: {
            "target": r.target.key,
            "workers": r.target.workers,
            "endpoint": r.scenario.name,
            "path": r.scenario.path,
            "connections": r.connections,
            "rows_per_request": r.scenario.rows_per_request,
        }
        | report.summarize_runs(samples[r], r.scenario.rows_per_request)
        for r in runs
    }


def memory(
    artifact: Path, scenarios: list[Scenario], settings: Settings, plan: CpuPlan
) -> dict[str, Any]:
    """Phase 2: RSS of a fresh worker at request-count checkpoints."""
    predict, service = scenarios[0], targets()[3]
    with servers.started(service, artifact, LOG_DIR, plan.server, settings.nice) as server:
        preflight(server, scenarios)
        sent, rate = len(scenarios), 1000.0  # requests/s; refined from each run's mean latency
        points = [{"requests": sent, "rss_kib": server.rss_kib(), "label": "after start-up"}]
        for checkpoint in settings.memory_checkpoints:
            while (missing := checkpoint - sent) > 0:
                report.progress(f"memory: {sent:,} requests sent, next checkpoint {checkpoint:,}")
                connections = min(settings.memory_concurrency, missing)
                # wrk runs for its whole duration even after STOP_AFTER responses, so
                # ask for a duration just long enough at the rate seen so far.
                result = wrk.run(
                    server.url(predict.path),
                    predict.bodies,
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
            time.sleep(0.5)  # let requests still in flight when wrk stopped finish
            label = f"{checkpoint:,}"
            points.append({"requests": sent, "rss_kib": server.rss_kib(), "label": label})
        return {"points": points, "peak_rss_kib": server.rss_kib("VmHWM")}


def scale(artifact: Path, scenarios: list[Scenario], settings: Settings) -> dict[str, Any]:
    """Phase 3: 1 vs 2 workers, nothing pinned (wrk shares the cores with the workers);
    tests/e2e/test_e2e_server.py checks that their Prometheus counters add up."""
    found = [Target(f"{w}w", f"service, {w} workers", workers=w) for w in settings.scale_workers]
    runs = [Run(t, scenarios[0], settings.scale_concurrency) for t in found]
    return measured(found, runs, artifact, settings, CpuPlan(None, None))


def to_markdown(data: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The whole report: figures and same-run ratios; BENCHMARKS.md holds the targets."""
    s, results = data["settings"], data["comparison"]
    mem, sc = data.get("memory"), data.get("scale")
    parts = [
        f"- pinning: {data['cpu_plan']}\n"
        f"- method: wrk with bench/post.lua cycling through each scenario's bodies; "
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s measured per scenario, "
        f"{s['rounds']} interleaved round(s), medians; batches of {s['batch_size']} patients\n"
        "- columns: `server CPU us/req` is the worker's CPU time per request (/proc/PID/stat); "
        "`req/s spread` is (max - min) / median over the rounds; `other load` is how many "
        "cores other processes kept busy (median; 0 on a quiet machine). BENCHMARKS.md "
        "explains the method.",
        report.comparison_table(results, labels),
    ]
    if mem is not None:
        first = mem["points"][1]["rss_kib"]  # the first checkpoint (point 0 is start-up)
        rss = [
            [
                p["label"],
                number(p["requests"]),
                f"{p['rss_kib'] / 1024:.1f} MiB",
                times(p["rss_kib"] / first) if i else "",
            ]
            for i, p in enumerate(mem["points"])
        ]
        parts += [
            f"### Memory of one worker (fresh process, /predict at c={s['memory_concurrency']})",
            markdown_table(
                ["after", "requests served (approx.)", "VmRSS", "vs first checkpoint"], rss
            ),
            f"Peak RSS (VmHWM) of the worker: {mem['peak_rss_kib'] / 1024:.1f} MiB.",
        ]
    if sc is not None:
        c32 = results.get("service/predict/c32")
        per_core = [number(c32[k]["median"]) if c32 else "n/a" for k in (report.RPS, report.CORE)]
        workers = {r["target"]: f"service, {r['workers']} worker(s)" for r in sc.values()}
        base = min(sc.values(), key=lambda r: r["workers"])["target"]
        parts += [
            f"### Workers (nothing pinned: wrk shares the {data['machine']['cores']} cores)",
            report.comparison_table(sc, workers, base=base),
            f"Per core: one pinned worker served {per_core[0]} req/s at c=32 above "
            f"({per_core[1]} from its CPU time per request); here wrk shares the "
            "cores with the workers. A busiest worker's CPU share near 1.0 (worst round; 0.50 is "
            "an even split) caps the gain of a second worker.",
        ]
    quick = " (--quick: a smoke test, not a measurement)" if s["quick"] else ""
    return report.document(f"Load benchmark{quick}", data["machine"], data["command"], *parts)


def build_parser() -> argparse.ArgumentParser:
    p = servers.arguments(
        "bench.load",
        "Load-test the service with wrk against references "
        "measured in the same run; also worker memory and 1-vs-2-worker scaling.",
    )
    d, add = Settings(), p.add_argument
    add("--quick", action="store_true", help="1 s warm-up, 2 s runs, 1 round")
    add("--warmup", type=float, default=d.warmup_s, help="seconds before each run")
    add("--duration", type=float, default=d.duration_s, help="seconds per run")
    add("--batch-size", type=int, default=d.batch_size)
    add("--batch-concurrency", type=int, default=d.batch_concurrency)
    add("--container", metavar="IMAGE", help="also measure this image (needs podman)")
    add(
        "--scenario",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "PATH", "BODIES"),
        help="also POST to PATH (query allowed) on the service, cycling through the file "
        "BODIES (one JSON body a line), at the concurrencies of /predict; repeatable",
    )
    add(
        "--nice",
        type=int,
        default=0,
        help="nice value of servers and wrk (e.g. -10, as root) "
        "so other jobs on a shared machine disturb the measurement less",
    )
    add(
        "--without-interval",
        action="store_true",
        help="also serve the model without its "
        "bootstrap ensemble (/predict without the risk interval) beside the service",
    )
    add("--skip-memory", action="store_true")
    add("--skip-scale", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # --quick is a smoke test: short runs, one round, two memory checkpoints.
    quick = Settings(1.0, 2.0, 1, memory_checkpoints=(1_000, 5_000), quick=True)
    timing = quick if args.quick else Settings(args.warmup, args.duration, args.rounds)
    chosen = {"batch_size": args.batch_size, "batch_concurrency": args.batch_concurrency}
    settings = replace(timing, **chosen, nice=args.nice)
    extra = extra_scenarios(args.scenario)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make system-deps` (as root) installs it")
    built = servers.image_description(args.container) if args.container else None
    if args.container and built is None:
        report.progress(f"podman or the image {args.container} is missing: skipping the container")
    found, plan = targets(args.container if built else None, built), CpuPlan.for_this_machine()
    data: dict[str, Any] = {
        "benchmark": "load",
        "machine": report.describe(),
        "cpu_plan": plan.describe(),
        "settings": asdict(settings),
        "command": report.command_line("bench.load", argv),
        "container_image": built,
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        model = servers.model_path(args.artifact)
        if args.without_interval:  # issue 10: /predict's cost of the risk interval, same run
            plain = save_artifact({**read_payload(model), "ensemble": None}, Path(tmp) / "p.joblib")
            label = "the service without the risk interval"
            found.append(Target("no-interval", label, artifact=plain))
        scenarios = wrk.standard_scenarios(Path(tmp), settings.batch_size)
        runs = plan_runs(found, scenarios + extra, settings)
        data["comparison"] = measured(found, runs, model, settings, plan)
        if not args.skip_memory:
            data["memory"] = memory(model, scenarios, settings, plan)
        if not args.skip_scale:
            data["scale"] = scale(model, scenarios, settings)
    data["machine"]["load_average_end"] = report.load_average()
    markdown = to_markdown(data, {t.key: t.label for t in found})
    stem = "load-quick" if settings.quick else "load"
    runs_of = [*data["comparison"].values(), *data.get("scale", {}).values()]
    failed = sum(r["errors"] for r in runs_of)
    return report.publish(stem, markdown, data, args.output_dir, failed=failed)


if __name__ == "__main__":
    raise SystemExit(main())
