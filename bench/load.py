"""Load benchmark: the service against reference servers measured in the same run.

``python -m bench.load`` (``--quick`` for a smoke test) compares the references
(bench/references.py) and the service as shipped, one pinned worker each, every
scenario in interleaved rounds (``--scenario`` adds requests of your own, ``--only``
keeps some), and follows each worker's memory from round to round. Results go to
``bench/results/load.{md,json}``, wrk output and server logs to
``bench/results/logs/``; BENCHMARKS.md explains the method and the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from app.columnar import TABLE_PATH
from bench import report, servers, wrk
from bench.report import CORE, number, ratio, times
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


def targets() -> list[Target]:
    """The references and the service as shipped."""
    return [
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


def extra_scenarios(
    specs: Sequence[Sequence[str]], headers: Sequence[Sequence[str]] = ()
) -> list[Scenario]:
    """``--scenario NAME PATH BODIES`` and ``--scenario-header NAME HEADER`` options, checked
    before any server starts."""
    sent: dict[str, list[str]] = {}
    for name, header in headers:
        if ":" not in header:
            raise SystemExit(f"--scenario-header {name}: wants 'Name: value', got {header!r}")
        sent.setdefault(name, []).append(header)
    found = [
        Scenario(n, path, Path(file).resolve(), service_only=True, headers=tuple(sent.pop(n, ())))
        for n, path, file in specs
    ]
    for s in found:
        if s.name in ("predict", "batch") or not s.path.startswith("/") or not s.bodies.is_file():
            raise SystemExit(f"--scenario {s.name}: wants a new name, a path from /, a body file")
    if sent:
        raise SystemExit(f"--scenario-header {', '.join(sent)}: no --scenario of that name")
    return found


def plan_runs(found: list[Target], scenarios: list[Scenario], settings: Settings) -> list[Run]:
    """Every scenario a target can answer, at its concurrencies, target by target."""
    runs: list[Run] = []
    for target in found:
        for scenario in scenarios:
            if scenario.name == "batch":
                if target.has_batch and target.key != "asgi":  # a constant reply, no batch
                    runs.append(Run(target, scenario, settings.batch_concurrency))
            elif scenario.rows_per_request > 1:  # oip, tables: batches in other formats
                if target.is_service:
                    runs.append(Run(target, scenario, settings.batch_concurrency))
            elif target.is_service or not scenario.service_only:
                runs.extend(Run(target, scenario, c) for c in settings.concurrencies)
    return runs


def preflight(server: Server, scenarios: Sequence[Scenario]) -> None:
    """One request per scenario before measuring (a benchmark of error replies is worthless):
    any reply but 200 fails, and the service's must score every patient sent."""
    for s in scenarios:
        reply = servers.post(server.url(s.path), s.first_body(), s.media_type, s.headers)
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
        headers=run.scenario.headers,
    )


def measured(runs: list[Run], artifact: Path, settings: Settings, plan: CpuPlan) -> dict[str, Any]:
    """Start every target once, check each answers, then measure every run once per round."""
    with contextlib.ExitStack() as stack:
        up: dict[str, Server] = {}
        for t in dict.fromkeys(r.target for r in runs):
            server = servers.started(t, artifact, LOG_DIR, plan.server, settings.nice)
            up[t.key] = stack.enter_context(server)
            preflight(up[t.key], list(dict.fromkeys(r.scenario for r in runs if r.target == t)))
        samples = report.in_rounds(
            settings.rounds, runs, lambda r: measure(up[r.target.key], r, settings, plan.client)
        )
    return {
        r.key: {
            "target": r.target.key,
            "endpoint": r.scenario.name,
            "path": r.scenario.path,
            "connections": r.connections,
            "rows_per_request": r.scenario.rows_per_request,
        }
        | report.summarize_runs(samples[r], r.scenario.rows_per_request)
        for r in runs
    }


def tables(results: Mapping[str, Any]) -> list[str]:
    """Each table upload's rows/s and rows per worker CPU-second as ratios to the service's
    JSON batch of the same run: issue 13's figure, which a shared machine does not distort."""
    ours = [r for r in results.values() if r["target"] == "service"]
    batch = next((r for r in ours if r["endpoint"] == "batch"), None)
    uploads = [r for r in ours if r["path"] == TABLE_PATH]
    if batch is None or not uploads:
        return []
    rows = [
        [r["endpoint"]]
        + [
            cell
            for k in ("rows_per_s", CORE)
            for cell in (number(r[k]["median"]), times(ratio(r[k]["median"], batch[k]["median"])))
        ]
        for r in [batch, *uploads]
    ]
    headers = ["scenario", "rows/s (wall)", "x JSON", "rows per worker CPU-second", "x JSON"]
    return [
        f"### {TABLE_PATH} against the JSON batch (the service, c={batch['connections']}; "
        f"{uploads[0]['rows_per_request']:,} rows per upload, {batch['rows_per_request']:,} "
        "per JSON batch)",
        markdown_table(headers, rows),
    ]


def memory(results: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """Each worker's VmRSS after each round of its runs, with the requests it had served by
    then: every round sends the same traffic, so growth from round to round is state kept per
    request (the references, which keep none, are the control)."""
    rows, rounds = [], len(next(iter(results.values()))["runs"])
    for target in dict.fromkeys(r["target"] for r in results.values()):
        runs = [r["runs"] for r in results.values() if r["target"] == target]
        served, rss = 0, []
        for k in range(rounds):
            served += sum(rs[k]["requests"] + rs[k]["warmup_requests"] for rs in runs)
            rss.append((max(rs[k]["rss_kib"] for rs in runs), served))
        cells = [f"{kib / 1024:.1f} MiB ({n:,} requests)" for kib, n in rss]
        rows.append([labels.get(target, target), *cells, times(rss[-1][0] / rss[0][0])])
    headers = ["server", *(f"after round {k + 1}" for k in range(rounds)), "last / first"]
    return ["### Memory of each worker (VmRSS after each round)", markdown_table(headers, rows)]


def sections(data: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """The report's sections: figures and same-run ratios; BENCHMARKS.md holds the targets."""
    s, results = data["settings"], data["comparison"]
    return [
        f"- pinning: {data['cpu_plan']}\n"
        f"- method: wrk with bench/post.lua cycling through each scenario's bodies; "
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s measured per scenario, "
        f"{s['rounds']} interleaved round(s), medians; batches of {s['batch_size']} patients\n"
        "- columns: `server CPU us/req` is the worker's CPU time per request (/proc/PID/stat); "
        "`req/s spread` is (max - min) / median over the rounds; `other load` is how many "
        "cores other processes kept busy (median; 0 on a quiet machine). BENCHMARKS.md "
        "explains the method.",
        report.comparison_table(results, labels),
        *tables(results),
        *memory(results, labels),
    ]


def build_parser() -> argparse.ArgumentParser:
    p = servers.arguments(
        "bench.load",
        "Load-test the service with wrk against references measured in the same run; "
        "also the memory of one worker.",
    )
    d, add = Settings(), p.add_argument
    add("--quick", action="store_true", help="1 s warm-up, 2 s runs, 1 round")
    add("--warmup", type=float, default=d.warmup_s, help="seconds before each run")
    add("--duration", type=float, default=d.duration_s, help="seconds per run")
    add("--batch-size", type=int, default=d.batch_size)
    add("--batch-concurrency", type=int, default=d.batch_concurrency)
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
        "--scenario-header",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "HEADER"),
        help="send HEADER ('Accept-Encoding: gzip, deflate', as httpx and browsers do) with "
        "every request of the --scenario NAME; repeatable",
    )
    add(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="measure only this scenario (predict, batch, oip, table-arrow, table-csv or a "
        "--scenario's NAME) on every target that answers it; repeatable",
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
    add("--name", help="results file name (default: load, or load-quick with --quick)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # --quick is a smoke test: short runs, one round.
    quick = Settings(1.0, 2.0, 1, quick=True)
    timing = quick if args.quick else Settings(args.warmup, args.duration, args.rounds)
    chosen = {"batch_size": args.batch_size, "batch_concurrency": args.batch_concurrency}
    settings = replace(timing, **chosen, nice=args.nice)
    extra = extra_scenarios(args.scenario, args.scenario_header)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make system-deps` (as root) installs it")
    found, plan = targets(), CpuPlan.for_this_machine()
    data: dict[str, Any] = {
        "benchmark": "load",
        "machine": report.describe(),
        "cpu_plan": plan.describe(),
        "settings": asdict(settings),
        "command": report.command_line("bench.load", argv),
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if args.without_interval:  # issue 10: /predict's cost of the risk interval, same run
            payload = {**read_payload(args.artifact), "ensemble": None}
            plain = save_artifact(payload, Path(tmp) / "p.joblib")
            label = "the service without the risk interval"
            found.append(Target("no-interval", label, artifact=plain))
        scenarios = wrk.standard_scenarios(Path(tmp), settings.batch_size)
        every = scenarios + wrk.table_scenarios(Path(tmp)) + extra
        if unknown := set(args.only) - {s.name for s in every}:
            raise SystemExit(f"--only {', '.join(sorted(unknown))}: no such scenario")
        runs = plan_runs(found, [s for s in every if s.name in (args.only or [s.name])], settings)
        data["comparison"] = measured(runs, args.artifact, settings, plan)
    parts = sections(data, {t.key: t.label for t in found})
    smoke = " (--quick: a smoke test, not a measurement)" if settings.quick else ""
    stem = args.name or ("load-quick" if settings.quick else "load")
    failed = sum(r["errors"] for r in data["comparison"].values())
    return report.publish(stem, f"Load benchmark{smoke}", data, parts, args.output_dir, failed)


if __name__ == "__main__":
    raise SystemExit(main())
