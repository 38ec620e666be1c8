"""What the issue-11 hardening costs, and what it buys under overload.

``python -m bench.hardening`` (``make bench-hardening``) measures, in one run:

1. **Cost** on ``/predict`` at concurrency 32 (wrk medians, targets interleaved
   in every round) as ratios to ``reference`` (``bench.references:fastapi_app``,
   issue 6's ceiling) measured in the same run: ``plain`` (``uvicorn --factory``,
   httptools, no limits), ``hardened-uvloop`` (plus ``app.protocol:HardenedHttpToolsProtocol``,
   isolating the protocol's cost), ``hardened-asyncio`` (and ``--loop asyncio``) and
   ``service`` (``heart-api serve`` as shipped).
2. **Overload**: 2,000 wrk connections post to ``/predict`` while a separate client
   opens a *new* connection to ``/health`` every 0.25 s (20 s timeout) and times it,
   as a Kubernetes liveness probe would, against ``plain``, ``hardened-uvloop`` and ``service``.

Server and wrk on separate cores (taskset) when there are two; the machine is
shared, so read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.schemas import PATIENT_EXAMPLE
from app.testing import REPO_ROOT, free_port, running, service_environment
from bench import servers, wrk

RESULTS = REPO_ROOT / "bench" / "results"
WRK_FIGURES = ("requests", "duration_s", "requests_per_s", "errors", "latency_us")


@dataclass(frozen=True)
class Target:
    key: str
    argv: tuple[str, ...]
    ready_path: str = "/ready"


def targets(port: int) -> dict[str, Target]:
    py = sys.executable
    common = ("--host", "127.0.0.1", "--port", str(port))
    quiet = (*common, "--no-access-log")
    plain = (py, "-m", "uvicorn", "--factory", "app.main:create_app", *quiet)
    hardened = (*plain, "--http", "app.protocol:HardenedHttpToolsProtocol")
    argvs = {
        "reference": (py, "-m", "uvicorn", "bench.references:fastapi_app", *quiet),
        "plain": plain,
        "hardened-uvloop": hardened,
        "hardened-asyncio": (*hardened, "--loop", "asyncio"),
        "service": (py, "-m", "app", "serve", *common, "--workers", "1"),
    }
    ready = {"reference": "/health"}
    return {key: Target(key, argv, ready.get(key, "/ready")) for key, argv in argvs.items()}


@contextlib.contextmanager
def started(
    target: Target, port: int, artifact: Path, core: int | None
) -> Iterator[tuple[str, int]]:
    """Run ``target`` (on ``core``) until the block ends; yield its URL and pid once ready."""
    pin = ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []
    with (
        tempfile.TemporaryDirectory() as logs,
        running(
            [*pin, *target.argv],
            port=port,
            env=service_environment(artifact, {"HEART_ACCESS_LOG": "false"}),
            log_path=Path(logs) / f"{target.key}.log",
            ready_path=target.ready_path,
            timeout=60,
        ) as server,
    ):
        yield server.url, server.process.pid


def cost(
    artifact: Path, bodies: Path, rounds: int, duration: float, cores: tuple[int | None, ...]
) -> dict[str, Any]:
    server_core, client_core = cores
    per_target: dict[str, list[float]] = {}
    cpu_us: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    for _ in range(rounds):
        for key, target in targets(port := free_port()).items():
            with started(target, port, artifact, server_core) as (url, pid):
                url += "/predict"
                cpus = _cores(client_core)
                wrk.run(url, bodies, connections=32, duration_s=2, cpus=cpus)  # warm-up
                tree = process_tree(pid)
                before = cpu_seconds(tree)
                result = wrk.run(url, bodies, connections=32, duration_s=duration, cpus=cpus)
                used = cpu_seconds(tree) - before
            per_target.setdefault(key, []).append(result.requests_per_s)
            cpu_us.setdefault(key, []).append(used / max(1, result.requests) * 1e6)
            errors[key] = errors.get(key, 0) + result.error_count
    reference = statistics.median(per_target["reference"])
    reference_cpu = statistics.median(cpu_us["reference"])
    return {
        key: {
            "requests_per_s_median": round(statistics.median(values), 1),
            "requests_per_s_runs": [round(v, 1) for v in values],
            "ratio_to_reference": round(statistics.median(values) / reference, 3),
            "cpu_us_per_request_median": round(statistics.median(cpu_us[key]), 1),
            "cpu_ratio_to_reference": round(statistics.median(cpu_us[key]) / reference_cpu, 3),
            "errors": errors[key],
        }
        for key, values in per_target.items()
    }


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor's workers), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of ``pids``: unlike requests per second, it does not
    depend on the CPU share a shared machine's scheduler gives the server."""
    return sum(servers.cpu_seconds(pid) for pid in pids)


def _cores(core: int | None) -> list[int] | None:
    return None if core is None else [core]


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
    artifact: Path, bodies: Path, connections: int, seconds: float, cores: tuple[int | None, ...]
) -> dict[str, Any]:
    server_core, client_core = cores
    report: dict[str, Any] = {}
    for key in ("plain", "hardened-uvloop", "service"):
        with started(targets(port := free_port())[key], port, artifact, server_core) as (url, _):
            stop = threading.Event()
            samples: list[float] = []
            prober = threading.Thread(target=time_health, args=(url, stop, samples))
            time.sleep(0.5)
            prober.start()
            result = wrk.run(
                url + "/predict",
                bodies,
                connections=connections,
                threads=2 if connections >= 2 else 1,
                duration_s=seconds,
                cpus=_cores(client_core),
            )
            stop.set()
            prober.join(30)
        ordered = sorted(samples)
        report[key] = {
            "wrk": {k: getattr(result, k) for k in WRK_FIGURES},
            "non_2xx": result.errors.get("status", 0),
            "health_samples": len(samples),
            "health_failed": samples.count(float("inf")),
            "health_p50_ms": _ms(_quantile(ordered, 0.5)),
            "health_p99_ms": _ms(_quantile(ordered, 0.99)),
            "health_max_ms": _ms(ordered[-1]) if ordered else None,
        }
    return report


def _quantile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1000, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hardening", description=__doc__)
    parser.add_argument("--artifact", type=Path, default=REPO_ROOT / "artifacts/model.joblib")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--overload-connections", type=int, default=2000)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "hardening.json")
    parser.add_argument("--skip-cost", action="store_true", help="only the overload part")
    args = parser.parse_args(argv)
    cores: tuple[int | None, ...] = (1, 0) if (os.cpu_count() or 1) >= 2 else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "predict.jsonl"
        bodies.write_text(json.dumps(PATIENT_EXAMPLE) + "\n", encoding="utf-8")
        data = {
            "command": "python -m bench.hardening " + " ".join(argv or sys.argv[1:]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
            "python": platform.python_version(),
            "cost_c32": None
            if args.skip_cost
            else cost(args.artifact, bodies, args.rounds, args.duration, cores),
            "overload": overload(
                args.artifact, bodies, args.overload_connections, args.overload_seconds, cores
            ),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
