"""``python -m bench.interval_latency ARTIFACT``: /predict p50 with and without the risk interval.

Side by side: the service twice, on the same artifact with and without its
bootstrap ensemble (the latter is today's /predict), pinned to core 0 with
this client on core 1; sequential keep-alive requests over the 270 real
patients, rounds alternating between the two; medians of every round trip.
Issue 10's budget: with the interval at most 1.5x the p50 without it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.testing import running_server
from bench import payloads
from model.artifact import read_payload, save_artifact


def sequential_round(port: int, bodies: Sequence[bytes], n: int) -> list[float]:
    """``n`` POST /predict on one keep-alive connection; each round trip in microseconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    try:
        for i in range(n):
            start = time.perf_counter_ns()
            connection.request(
                "POST",
                "/predict",
                body=bodies[i % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"/predict answered {response.status}: {data[:200]!r}")
            latencies.append((time.perf_counter_ns() - start) / 1000.0)
    finally:
        connection.close()
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("artifact", type=Path, help="a model artifact with an ensemble")
    parser.add_argument("--requests", type=int, default=2000, help="per server and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="heart-interval-latency-"))
    payload = read_payload(args.artifact)
    if payload.get("ensemble") is None:
        raise SystemExit(f"{args.artifact} has no ensemble: nothing to compare")
    payload.pop("ensemble")
    plain = save_artifact(payload, workdir / "without-ensemble.joblib")
    bodies = [json.dumps(p).encode() for p in payloads.patients(270)]
    two_cores = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if two_cores:
        os.sched_setaffinity(0, {1})
    prefix = ["taskset", "-c", "0"] if two_cores else []
    samples: dict[str, list[float]] = {"without interval": [], "with interval": []}
    with contextlib.ExitStack() as stack:
        started = [
            (name, stack.enter_context(running_server(a, log_dir=workdir, prefix=prefix)))
            for name, a in (("without interval", plain), ("with interval", args.artifact))
        ]
        for _ in range(args.rounds):
            for name, server in started:
                sequential_round(server.port, bodies, 200)  # warm-up
                samples[name] += sequential_round(server.port, bodies, args.requests)
    p50 = {name: float(np.median(v)) for name, v in samples.items()}
    for name, value in p50.items():
        print(f"{name}: p50 {value:.0f} us over {len(samples[name])} requests")
    ratio = p50["with interval"] / p50["without interval"]
    print(f"ratio with/without: {ratio:.2f}x (budget 1.5x; load average {os.getloadavg()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
