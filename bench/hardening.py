"""What the issue-11 hardening costs, and what it buys under overload.

``python -m bench.hardening`` (``make bench-hardening``) measures, in one run:

1. **Cost** on ``/predict`` at concurrency 32, as :mod:`bench.load` measures
   (wrk medians over interleaved rounds, the worker's CPU time per request),
   in ratios to ``reference`` (``bench.references:fastapi_app``, issue 6's
   ceiling) measured in the same run: ``plain`` (``uvicorn --factory``, no
   limits), ``hardened-uvloop`` (plus ``app.protocol:HardenedHttpToolsProtocol``,
   isolating the protocol's cost), ``hardened-asyncio`` (and ``--loop asyncio``)
   and ``service`` (``heart-api serve`` as shipped).
2. **Overload**: 2,000 wrk connections post to ``/predict`` while a separate client
   opens a *new* connection to ``/health`` every 0.25 s (20 s timeout) and times it,
   as a Kubernetes liveness probe would, against ``plain``, ``hardened-uvloop`` and ``service``.

Our app runs without its access log everywhere, so only the hardening differs.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import load, report, servers, wrk
from bench.servers import CpuPlan, Target
from training.report import markdown_table

QUIET = (("HEART_ACCESS_LOG", "false"),)
HARDENED = ("--factory", "--http", "app.protocol:HardenedHttpToolsProtocol")


def targets() -> dict[str, Target]:
    """The reference, our app under plain uvicorn, with the protocol, and as shipped."""
    found = [
        Target("reference", "reference: bare FastAPI", "bench.references:fastapi_app", "/health"),
        Target("plain", "the app under plain uvicorn", "app.main:create_app",
               options=("--factory",), settings=QUIET),
        Target("hardened-uvloop", "the app with app.protocol (uvloop)", "app.main:create_app",
               options=HARDENED, settings=QUIET),
        Target("hardened-asyncio", "the app with app.protocol on asyncio", "app.main:create_app",
               options=(*HARDENED, "--loop", "asyncio"), settings=QUIET),
        Target("service", "heart-api serve as shipped", settings=QUIET),
    ]  # fmt: skip
    return {t.key: t for t in found}


def time_health(url: str, stop: threading.Event, samples: list[float]) -> None:
    """A liveness probe: a new connection, ``GET /health``, 20 s timeout, every 0.25 s."""
    host, port = url.removeprefix("http://").split(":")
    while not stop.is_set():
        start = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=20) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ok = sock.recv(64).startswith(b"HTTP/1.1 200")
            samples.append(time.monotonic() - start if ok else float("inf"))
        except OSError:
            samples.append(float("inf"))
        stop.wait(0.25)


def overload(
    artifact: Path, bodies: Path, connections: int, seconds: float, plan: CpuPlan, logs: Path
) -> dict[str, Any]:
    """Each target under ``connections`` wrk connections, timed by a liveness probe.

    Replies other than 200 are the point here (the service sheds load with 503),
    so they are counted, not refused; a probe that gets no 200 counts as failed.
    """
    found: dict[str, Any] = {}
    for key in ("plain", "hardened-uvloop", "service"):
        with servers.started(targets()[key], artifact, logs, plan.server) as server:
            stop, samples = threading.Event(), list[float]()
            prober = threading.Thread(target=time_health, args=(server.url(""), stop, samples))
            time.sleep(0.5)
            prober.start()
            result = wrk.run(
                server.url("/predict"), bodies, connections=connections,
                threads=2 if connections >= 2 else 1, duration_s=seconds, cpus=plan.client,
            )  # fmt: skip
            stop.set()
            prober.join(30)
        ordered = sorted(samples)
        found[key] = {
            "wrk": {k: getattr(result, k) for k in ("requests", "duration_s", "requests_per_s")}
            | {"errors": result.errors, "latency_us": result.latency_us},
            "non_2xx": result.errors.get("status", 0),
            "health_samples": len(samples),
            "health_failed": samples.count(float("inf")),
            "health_p50_ms": _ms(_quantile(ordered, 0.5)),
            "health_p99_ms": _ms(_quantile(ordered, 0.99)),
            "health_max_ms": _ms(ordered[-1]) if ordered else None,
        }
    return found


def _quantile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1000, 1)


def overload_table(found: dict[str, Any]) -> str:
    headers = ["target", "req/s answered", "non-2xx", "wrk timeouts", "/health probes"]
    headers += ["failed (> 20 s)", "p50 ms", "p99 ms", "max ms"]
    rows = [
        [key, report.number(r["wrk"]["requests_per_s"]), str(r["non_2xx"]),
         str(r["wrk"]["errors"].get("timeout", 0)), str(r["health_samples"]),
         str(r["health_failed"])]
        + [str(r[f"health_{q}_ms"]) for q in ("p50", "p99", "max")]
        for key, r in found.items()
    ]  # fmt: skip
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hardening", description=__doc__)
    parser.add_argument("--artifact", type=Path, default=servers.DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--overload-connections", type=int, default=2000)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--output-dir", type=Path, default=report.RESULTS_DIR)
    parser.add_argument("--skip-cost", action="store_true", help="only the overload part")
    args = parser.parse_args(argv)
    model, plan = servers.model_path(args.artifact), CpuPlan.for_this_machine()
    settings = load.Settings(warmup_s=2.0, duration_s=args.duration, rounds=args.rounds)
    data: dict[str, Any] = {"machine": report.describe(), "cpu_plan": plan.describe()}
    data["command"], parts = report.command_line("bench.hardening", argv), []
    load.LOG_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        predict = wrk.standard_scenarios(Path(tmp), batch_size=1)[0]
        if not args.skip_cost:
            found = list(targets().values())
            runs = [load.Run(t, predict, 32) for t in found]
            data["cost_c32"] = load.measured(found, runs, model, settings, plan)
            labels = {t.key: t.label for t in found}
            parts += ["### Cost on /predict at c=32"]
            parts += [report.comparison_table(data["cost_c32"], labels, base="reference")]
        data["overload"] = overload(
            model, predict.bodies, args.overload_connections, args.overload_seconds, plan,
            load.LOG_DIR,
        )  # fmt: skip
    data["machine"]["load_average_end"] = report.load_average()
    parts += [f"### /health under {args.overload_connections:,} connections"]
    parts += [overload_table(data["overload"])]
    markdown = report.document("Hardening", data["machine"], data["command"], *parts)
    failed = sum(r["errors"] for r in data.get("cost_c32", {}).values())
    return report.publish("hardening", markdown, data, args.output_dir, failed=failed)


if __name__ == "__main__":
    raise SystemExit(main())
