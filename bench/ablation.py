"""What each part of the /predict path costs: the service with one part off, under load.

Runs the unmodified service, each variant of ``bench.variants`` and reference
2 (bare FastAPI) side by side, one worker pinned to core 0 and wrk on core 1,
in interleaved rounds, and reports per variant the median throughput, p99,
the worker's CPU time per request, and the difference in CPU time per request
against the unmodified service: that difference is what the switched-off part
costs.

Run: ``python -m bench.ablation`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import load, machine, payloads, report, servers, variants
from bench.stats import ratio

DEFAULT_VARIANTS = (
    "none",
    "no-access-log",
    "no-metrics",
    "no-middleware",
    "no-telemetry",
    "no-model",
    "fast-predict",
    "no-access-log,no-metrics,no-telemetry,fast-predict",
)


def variant_target(spec: str, port: int, artifact: Path) -> load.Target:
    argv = (
        load.PYTHON,
        "-m",
        "bench.variants",
        spec,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    return load.Target(
        f"variant:{spec}",
        "service as shipped" if spec == "none" else f"service, {spec}",
        argv,
        env=load.service_env(artifact),
        ready_path="/ready",
    )


def run(
    specs: Sequence[str],
    settings: load.Settings,
    connections: int,
    artifact: Path,
    apps: Sequence[str] = (),
) -> dict[str, Any]:
    machine_info = machine.describe()  # load average before the run
    plan = load.CpuPlan.for_this_machine()
    for spec in specs:
        variants.parse(spec)
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        body_file = payloads.write_single_bodies(Path(tmp) / "predict.jsonl")
        bodies = {"predict": body_file, "batch": body_file}
        found: list[load.Target] = []
        for spec in specs:
            found.append(variant_target(spec, servers.free_port(), artifact))
        for app_path in apps:
            found.append(
                load.Target(
                    f"app:{app_path}",
                    app_path,
                    load.uvicorn_argv(app_path, servers.free_port()),
                    ready_path="/health",
                    has_batch=False,
                )
            )
        ref_port = servers.free_port()
        found.append(
            load.Target(
                "fastapi",
                "reference 2: bare FastAPI, constant reply",
                load.uvicorn_argv("bench.ref_fastapi:app", ref_port),
                ready_path="/health",
                has_batch=False,
            )
        )
        started: dict[str, servers.Server] = {}
        runs: dict[str, list[dict[str, Any]]] = {t.key: [] for t in found}
        try:
            for target in found:
                port = int(target.argv[target.argv.index("--port") + 1])
                started[target.key] = load.start_target(
                    target, port, plan.server, load.LOG_DIR, None, settings.nice
                )
                single = load.Target(target.key, target.label, (), has_batch=False)
                load.preflight(started[target.key], single, bodies, 1)
            for round_no in range(settings.rounds):
                order = found if round_no % 2 == 0 else list(reversed(found))
                for target in order:
                    load.progress(f"ablation round {round_no + 1}/{settings.rounds}: {target.key}")
                    runs[target.key].append(
                        load.measure(
                            started[target.key],
                            target,
                            load.Scenario(target.key, "predict", connections),
                            body_file,
                            settings,
                            plan,
                            load.LOG_DIR / "wrk.log",
                        )
                    )
        finally:
            for server in started.values():
                server.stop()
    return {
        "benchmark": "ablation",
        "machine": machine_info,
        "cpu_plan": plan.describe(),
        "connections": connections,
        "settings": dict(settings.__dict__),
        "results": {
            t.key: {"label": t.label, **load.summarize_runs(runs[t.key], 1, "predict")}
            for t in found
        },
    }


def to_markdown(data: dict[str, Any]) -> str:
    results = data["results"]
    base = results["variant:none"]
    base_cpu = base["server_cpu_us_per_request"]["median"]
    base_rps = base["requests_per_s"]["median"]
    ref_rps = results["fastapi"]["requests_per_s"]["median"]
    rows = []
    for key, r in results.items():
        cpu = r["server_cpu_us_per_request"]["median"]
        rps = r["requests_per_s"]["median"]
        rows.append(
            [
                r["label"],
                report.number(rps),
                report.times(ratio(rps, base_rps)),
                report.times(ratio(rps, ref_rps)),
                report.milliseconds(r["p99_us"]["median"]),
                report.number(cpu),
                "" if key == "variant:none" else report.number(base_cpu - cpu, 1),
                f"{r['requests_per_s']['spread'] * 100:.0f}%",
                f"{r['other_load_cores']['median']:.2f}",
                str(r["errors"]),
            ]
        )
    s = data["settings"]
    return "\n".join(
        [
            f"## What each part of /predict costs (c={data['connections']})",
            "",
            machine.markdown(data["machine"]),
            f"- pinning: {data['cpu_plan']}",
            f"- method: {s['warmup_s']:g} s warm-up + {s['duration_s']:g} s per run, "
            f"{s['rounds']} interleaved rounds, medians; `service minus this` = worker CPU per "
            "request of the unmodified service minus this variant's",
            "",
            report.table(
                [
                    "server",
                    "req/s",
                    "vs service",
                    "vs reference 2",
                    "p99",
                    "CPU us/req",
                    "service minus this, us/req",
                    "spread",
                    "other load",
                    "errors",
                ],
                rows,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__)
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        help=f"variant specs (comma-joined names from: {', '.join(variants.VARIANTS)})",
    )
    p.add_argument(
        "--apps",
        nargs="*",
        default=[],
        metavar="MODULE:APP",
        help="extra ASGI apps to measure beside them, e.g. bench.experiments:raw_body",
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--nice", type=int, default=0, help="nice value of servers and wrk")
    p.add_argument("--artifact", type=Path, default=None)
    p.add_argument("--output-dir", type=Path, default=report.RESULTS_DIR)
    args = p.parse_args(argv)
    specs = list(args.variants)
    if "none" not in specs:
        specs.insert(0, "none")
    settings = (
        load.Settings(warmup_s=0.5, duration_s=1.0, rounds=1, nice=args.nice)
        if args.quick
        else load.Settings(
            warmup_s=args.warmup, duration_s=args.duration, rounds=args.rounds, nice=args.nice
        )
    )
    load.ensure_wrk(install=True)
    load.LOG_DIR.mkdir(parents=True, exist_ok=True)
    with load.artifact_path(args.artifact) as artifact:
        data = run(specs, settings, args.concurrency, artifact, args.apps)
    data["machine"]["load_average_end"] = machine.load_average()
    markdown = to_markdown(data)
    stem = f"ablation-c{args.concurrency}" + ("-apps" if args.apps else "")
    stem += "-quick" if args.quick else ""
    for path in report.write_results(stem, markdown, data, args.output_dir):
        load.progress(f"wrote {path}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
