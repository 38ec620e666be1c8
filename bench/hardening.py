"""What the issue-11 hardening costs, and what it buys under overload.

``python -m bench.hardening`` (``make bench-hardening``) measures in one run the
**cost** on ``/predict`` at c=32, as :mod:`bench.load` does, of our app under plain
uvicorn, with ``app.protocol`` (on uvloop and on asyncio) and as shipped, against
the bare FastAPI reference; and under **overload** (2,000 wrk connections) how
long a liveness probe's new connection waits for ``/health``. Our app's access
log is off everywhere, so only the hardening differs. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import probe
from bench import load, report, servers, wrk
from bench.servers import CpuPlan, Target
from training.report import markdown_table

QUIET = (("HEART_ACCESS_LOG", "false"),)
APP = "app.main:create_app"
HARDENED = ("--factory", "--http", "app.protocol:HardenedHttpToolsProtocol")
ON_ASYNCIO = (*HARDENED, "--loop", "asyncio")


def targets() -> dict[str, Target]:
    """The reference, our app under plain uvicorn, with the protocol, and as shipped."""
    ours = {
        "plain": ("the app under plain uvicorn", ("--factory",)),
        "hardened-uvloop": ("the app with app.protocol (uvloop)", HARDENED),
        "hardened-asyncio": ("the app with app.protocol on asyncio", ON_ASYNCIO),
    }
    found = [
        Target("reference", "reference: bare FastAPI", "bench.references:fastapi_app", "/health"),
        *(Target(k, label, APP, options=o, settings=QUIET) for k, (label, o) in ours.items()),
        Target("service", "heart-api serve as shipped", settings=QUIET),
    ]
    return {t.key: t for t in found}


def overload(
    artifact: Path, bodies: Path, connections: int, seconds: float, plan: CpuPlan
) -> dict[str, Any]:
    """Each target under ``connections`` wrk connections, timed by a liveness probe. Replies
    but 200 are the point (the service sheds load with 503): counted, not refused."""
    found: dict[str, Any] = {}
    for key in ("plain", "hardened-uvloop", "service"):
        with servers.started(targets()[key], artifact, load.LOG_DIR, plan.server) as server:
            samples: list[float] = []
            target, stop = probe.Target("127.0.0.1", server.running.port), time.monotonic() + 0.5
            live = probe.time_health(target, stop + seconds, samples, every=0.25)
            prober = threading.Thread(target=asyncio.run, args=(live,))
            time.sleep(0.5)
            prober.start()
            result = wrk.run(
                server.url("/predict"),
                bodies,
                connections=connections,
                threads=2 if connections >= 2 else 1,
                duration_s=seconds,
                cpus=plan.client,
            )
            prober.join(30)
        wrk_figures = {k: getattr(result, k) for k in ("requests", "duration_s", "requests_per_s")}
        found[key] = {
            "wrk": wrk_figures | {"errors": result.errors, "latency_us": result.latency_us},
            "non_2xx": result.errors.get("status", 0),
        } | probe.health_summary(samples)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = servers.arguments("bench.hardening", __doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cost run")
    parser.add_argument("--overload-connections", type=int, default=2000)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--skip-cost", action="store_true", help="only the overload part")
    args = parser.parse_args(argv)
    model, plan = args.artifact, CpuPlan.for_this_machine()
    settings = load.Settings(warmup_s=2.0, duration_s=args.duration, rounds=args.rounds)
    data: dict[str, Any] = {"machine": report.describe(), "cpu_plan": plan.describe()}
    data["command"], parts = report.command_line("bench.hardening", argv), []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        predict = wrk.standard_scenarios(Path(tmp), batch_size=1)[0]
        if not args.skip_cost:
            found = list(targets().values())
            runs = [load.Run(t, predict, 32) for t in found]
            data["cost_c32"] = load.measured(runs, model, settings, plan)
            labels = {t.key: t.label for t in found}
            parts += ["### Cost on /predict at c=32"]
            parts += [report.comparison_table(data["cost_c32"], labels, base="reference")]
        data["overload"] = overload(
            model, predict.bodies, args.overload_connections, args.overload_seconds, plan
        )
    health = ("health_samples", "health_failed", "health_p50_ms", "health_p99_ms", "health_max_ms")
    rows = [
        [
            key,
            report.number(r["wrk"]["requests_per_s"]),
            str(r["non_2xx"]),
            str(r["wrk"]["errors"].get("timeout", 0)),
            *(str(r[k]) for k in health),
        ]
        for key, r in data["overload"].items()
    ]
    headers = ["target", "req/s answered", "non-2xx", "wrk timeouts", "/health probes"]
    headers += ["failed (> 20 s)", "p50 ms", "p99 ms", "max ms"]
    parts += [f"### /health under {args.overload_connections:,} connections"]
    parts += [markdown_table(headers, rows)]
    failed = sum(r["errors"] for r in data.get("cost_c32", {}).values())
    return report.publish("hardening", "Hardening", data, parts, args.output_dir, failed)


if __name__ == "__main__":
    raise SystemExit(main())
