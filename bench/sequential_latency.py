"""Single-request latency of /predict, one request at a time, and the predictor alone.

``python -m bench.sequential_latency`` starts the service as shipped
(``python -m app``, defaults unchanged) and the bare-FastAPI reference
(``bench/ref_fastapi.py``) on loopback, pinned to core 0 with this client on
core 1 when there are two cores, and sends each of them thousands of
``POST /predict`` requests *sequentially* over one keep-alive connection,
cycling through the 270 real patients. Rounds alternate between the two
servers, so both see the same machine; the report gives the median, p90 and
p99 of every request's round trip as seen by the client, and the service's
figures as ratios to the reference's.

It then times the predictor alone (``Predictor.probability`` on one row), and
the service's whole prediction step (``PredictionService.parse_one`` +
``predict_one``: validation from bytes, forward pass, response bytes),
in-process, as medians over repeats.

Options: ``--requests N`` per server and round (default 2000), ``--rounds R``
(default 3), ``--artifact PATH`` (default: train the default model into a
temporary directory), ``--json PATH`` to keep the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import payloads, servers
from model.artifact import load_artifact

SERVER_CPUS = (0,)
CLIENT_CPU = 1


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def sequential_round(port: int, bodies: Sequence[bytes], n: int) -> list[float]:
    """``n`` POST /predict on one keep-alive connection; each round trip in microseconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    try:
        for i in range(n):
            body = bodies[i % len(bodies)]
            start = time.perf_counter_ns()
            connection.request("POST", "/predict", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            elapsed = time.perf_counter_ns() - start
            if response.status != 200:
                raise RuntimeError(f"/predict answered {response.status}: {data[:200]!r}")
            latencies.append(elapsed / 1000.0)
    finally:
        connection.close()
    return latencies


def summary(latencies: Sequence[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "max_us": max(latencies),
    }


def in_process(artifact: Path, bodies: Sequence[bytes]) -> dict[str, float]:
    """Median time per call of the predictor alone and of the service's prediction step."""
    from app.service import PredictionService

    predictor = load_artifact(artifact)
    service = PredictionService(predictor)
    rows = [service.parse_one(b) for b in bodies[:50]]
    row = rows[0]

    def per_call_us(fn: Any, number: int = 20000) -> float:
        runs = timeit.repeat(fn, number=number, repeat=7)
        return statistics.median(runs) / number * 1e6

    body = bodies[0]
    return {
        "predictor_probability_one_row_us": per_call_us(lambda: predictor.probability(row)),
        "service_parse_and_predict_us": per_call_us(
            lambda: service.predict_one(service.parse_one(body))
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300, help="per server and round")
    parser.add_argument("--artifact", type=Path, help="model artifact (default: train one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="heart-seq-latency-"))
    artifact = args.artifact
    if artifact is None:
        from model.artifact import save_artifact
        from training.pipeline import TrainingConfig, train

        artifact = save_artifact(train(TrainingConfig()).payload, workdir / "model.joblib")
    bodies = [json.dumps(p).encode() for p in payloads.patients(270)]

    two_cores = (os.cpu_count() or 1) >= 2
    cpus = SERVER_CPUS if two_cores else None
    if two_cores:
        os.sched_setaffinity(0, {CLIENT_CPU})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEART_")}
    service_env = {**env, "HEART_MODEL_PATH": str(artifact)}
    python = sys.executable
    latencies: dict[str, list[float]] = {"service": [], "reference": []}
    p99_by_round: dict[str, list[float]] = {"service": [], "reference": []}
    service_port, reference_port = servers.free_port(), servers.free_port()
    with (
        servers.running(
            "service",
            [python, "-m", "app", "--host", "127.0.0.1", "--port", str(service_port)],
            port=service_port,
            log_dir=workdir,
            cpus=cpus,
            env=service_env,
            ready_path="/ready",
        ),
        servers.running(
            "reference",
            [
                python,
                "-m",
                "uvicorn",
                "bench.ref_fastapi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(reference_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            port=reference_port,
            log_dir=workdir,
            cpus=cpus,
            env=env,
            ready_path="/docs",
        ),
    ):
        ports = {"service": service_port, "reference": reference_port}
        for round_index in range(args.rounds):
            order = ["service", "reference"][:: 1 if round_index % 2 == 0 else -1]
            for name in order:
                sequential_round(ports[name], bodies, args.warmup)
                sample = sequential_round(ports[name], bodies, args.requests)
                latencies[name] += sample
                p99_by_round[name].append(percentile(sample, 99))

    results: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pinning": f"servers on cores {SERVER_CPUS}, client on core {CLIENT_CPU}"
        if two_cores
        else "none (one core)",
        "rounds": args.rounds,
        "service": summary(latencies["service"]),
        "reference": summary(latencies["reference"]),
        "p99_us_by_round": p99_by_round,
        **in_process(artifact, bodies),
    }
    s, r = results["service"], results["reference"]
    print("## /predict, one request at a time (keep-alive, client-side round trip)\n")
    print(
        f"- {results['date_utc']}, load average {results['load_average']}, "
        f"{results['pinning']}, {args.rounds} interleaved rounds x {args.requests} requests\n"
    )
    print("| server | requests | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for name, label in (("service", "service as shipped"), ("reference", "bare FastAPI")):
        x = results[name]
        print(
            f"| {label} | {x['requests']} | {x['p50_us']:.0f} us | {x['p90_us']:.0f} us "
            f"| {x['p99_us']:.0f} us | {x['max_us']:.0f} us |"
        )
    print(
        f"| service / bare FastAPI | | {s['p50_us'] / r['p50_us']:.2f}x | "
        f"{s['p90_us'] / r['p90_us']:.2f}x | {s['p99_us'] / r['p99_us']:.2f}x | |\n"
    )
    print(
        f"- predictor alone, one row: "
        f"{results['predictor_probability_one_row_us']:.2f} us per call (median of 7 x 20000)"
    )
    print(
        f"- validation from bytes + prediction + response bytes: "
        f"{results['service_parse_and_predict_us']:.2f} us per call"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
