"""CPU time per /predict request with the ASGI app called in-process: no HTTP, no kernel.

Load runs through the network are the real thing, but on a shared two-core
machine their noise (+-10 us per request) hides parts that cost 3-15 us. Here
each app (the service, a ``bench.variants`` variant of it, or a reference app)
is built in a fresh process, its lifespan started, and ``/predict`` called
directly through the ASGI interface with real patients' bodies, many
thousands of times; the process's CPU time per request is the figure. What
this leaves out (uvicorn's HTTP parsing, sockets) is the same for every app,
so differences between apps are what the app-level parts cost.

Run: ``python -m bench.inprocess`` (the default set of targets), or
``python -m bench.inprocess --targets service:none service:fast-predict app:bench.ref_fastapi:app``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.testing import clean_environment
from bench import load, machine, payloads, report, servers
from bench.stats import summarize

DEFAULT_TARGETS = (
    "service:none",
    "service:no-access-log",
    "service:coalesced-log",
    "service:no-metrics",
    "service:no-middleware",
    "service:no-telemetry",
    "service:no-model",
    "service:fast-predict",
    "service:coalesced-log,no-telemetry,fast-predict",
    "app:bench.ref_fastapi:app",
    "app:bench.experiments:param_bytes",
    "app:bench.experiments:raw_body",
    "app:bench.experiments:raw_body_dep",
    "app:bench.experiments:param_no_telemetry",
    "app:bench.ref_asgi:app",
)


def build(target: str) -> Any:
    """The ASGI app for ``service:VARIANTS`` or ``app:MODULE:ATTRIBUTE``."""
    kind, _, rest = target.partition(":")
    if kind == "service":
        from bench import variants

        names = variants.parse(rest)
        if "no-access-log" in names:
            os.environ["HEART_ACCESS_LOG"] = "false"
        variants.patch_classes(names)
        from app.main import create_app

        return variants.apply(create_app(), names)
    if kind == "app":
        module, _, attribute = rest.partition(":")
        return getattr(importlib.import_module(module), attribute)
    raise SystemExit(f"unknown target {target!r}: use service:VARIANTS or app:MODULE:ATTR")


async def _lifespan(app: Any) -> tuple[asyncio.Queue[Any], asyncio.Task[None]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise SystemExit(f"start-up failed: {message}")
    return inbox, task


def _scope(body: bytes, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _measure(
    app: Any, bodies: list[bytes], path: str, requests: int, repeat: int
) -> list[float]:
    inbox, lifespan = await _lifespan(app)
    scopes = [_scope(b, path) for b in bodies]
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(i: int) -> None:
        body = bodies[i % len(bodies)]
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        await app(dict(scopes[i % len(scopes)]), receive, send)

    for i in range(min(2000, max(requests // 5, 20))):  # warm-up: caches, lazily built objects
        await one(i)
    per_request: list[float] = []
    for _ in range(repeat):
        statuses.clear()
        start = time.process_time()
        for i in range(requests):
            await one(i)
        per_request.append((time.process_time() - start) / requests * 1e6)
        if statuses.count(200) != requests:
            raise SystemExit(f"not every request succeeded: {sorted(set(statuses))}")
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return per_request


def run_one(target: str, endpoint: str, requests: int, repeat: int) -> dict[str, Any]:
    app = build(target)
    path = "/predict" if endpoint == "predict" else "/predict/batch"
    per_request = asyncio.run(_measure(app, _bodies(endpoint), path, requests, repeat))
    return {"target": target, "cpu_us_per_request": per_request}


def _bodies(endpoint: str) -> list[bytes]:
    if endpoint == "predict":
        return [json.dumps(p, separators=(",", ":")).encode() for p in payloads.patients(270)]
    return [
        json.dumps(
            {"patients": payloads.patients(1000, offset=k * 67)}, separators=(",", ":")
        ).encode()
        for k in range(4)
    ]


def orchestrate(
    targets: Sequence[str],
    endpoint: str,
    rounds: int,
    requests: int,
    repeat: int,
    artifact: Path,
) -> dict[str, Any]:
    started = machine.describe()  # load average before the run
    plan = load.CpuPlan.for_this_machine()
    results: dict[str, list[float]] = {t: [] for t in targets}
    env = clean_environment(load.service_env(artifact))
    for round_no in range(rounds):
        order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
        for target in order:
            load.progress(f"in-process round {round_no + 1}/{rounds}: {target}")
            argv = [
                load.PYTHON,
                "-m",
                "bench.inprocess",
                "--one",
                target,
                "--endpoint",
                endpoint,
                "--requests",
                str(requests),
                "--repeat",
                str(repeat),
            ]
            # The access log goes to a real file, as a server's stderr would.
            with tempfile.TemporaryFile() as log:
                proc = subprocess.run(
                    servers.pinned(argv, plan.server),
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    cwd=load.REPO_ROOT,
                    check=False,
                )
            if proc.returncode != 0:
                raise SystemExit(f"{target} failed (exit {proc.returncode})")
            results[target].extend(json.loads(proc.stdout)["cpu_us_per_request"])
    return {
        "benchmark": "inprocess",
        "machine": started,
        "settings": {
            "endpoint": endpoint,
            "rounds": rounds,
            "requests": requests,
            "repeat": repeat,
        },
        "cpu_plan": plan.describe(),
        "results": {t: summarize(v).as_dict() for t, v in results.items()},
    }


def to_markdown(data: dict[str, Any]) -> str:
    results = data["results"]
    base = results.get("service:none", {}).get("median", float("nan"))
    ref = results.get("app:bench.ref_fastapi:app", {}).get("median", float("nan"))
    rows = []
    for target, r in results.items():
        rows.append(
            [
                f"`{target}`",
                f"{r['median']:.1f}",
                f"{r['min']:.1f}",
                "" if target == "service:none" else f"{base - r['median']:+.1f}",
                report.times(ref / r["median"]) if r["median"] else "n/a",
            ]
        )
    s = data["settings"]
    cores = re.search(r"server on core \(([\d, ]+?),?\)", data["cpu_plan"])
    pinning = f"pinned to core {cores.group(1)}" if cores else "not pinned"
    endpoint = s.get("endpoint", "predict")
    title = "/predict" if endpoint == "predict" else "/predict/batch (1000 patients)"
    return "\n".join(
        [
            f"## {title} in-process: CPU time per request by part (no HTTP, no sockets)",
            "",
            machine.markdown(data["machine"]),
            f"- each target in a fresh process per round, {pinning}; no load generator",
            f"- method: {s['rounds']} interleaved rounds x {s['repeat']} repeats of "
            f"{s['requests']:,} requests cycling through real patients, after a warm-up; "
            "process CPU time per request, median (and min) over all "
            "repeats; `saved` = service as shipped minus this target; `vs reference 2` = "
            "reference 2's CPU per request / this target's (what throughput on one busy "
            "core would be relative to bare FastAPI, HTTP costs aside)",
            "",
            report.table(
                ["target", "CPU us/request", "min", "saved us", "vs reference 2"],
                rows,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    p.add_argument("--endpoint", choices=["predict", "batch"], default="predict")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 round, 500 requests")
    p.add_argument("--artifact", type=Path, default=None)
    p.add_argument("--output-dir", type=Path, default=report.RESULTS_DIR)
    p.add_argument("--one", metavar="TARGET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.endpoint, args.requests, args.repeat)))
        return 0
    rounds, requests, repeat = (
        (1, 500, 1) if args.quick else (args.rounds, args.requests, args.repeat)
    )
    with load.artifact_path(args.artifact) as artifact:
        data = orchestrate(args.targets, args.endpoint, rounds, requests, repeat, artifact)
    data["machine"]["load_average_end"] = machine.load_average()
    markdown = to_markdown(data)
    stem = "inprocess" + ("-batch" if args.endpoint == "batch" else "")
    stem += "-quick" if args.quick else ""
    for path in report.write_results(stem, markdown, data, args.output_dir):
        load.progress(f"wrote {path}")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
