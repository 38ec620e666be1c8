"""``python -m bench.interval_latency ARTIFACT``: /predict p50 with and without the risk interval.

Side by side: the service twice, on the same artifact with and without its
bootstrap ensemble (the latter is today's /predict), pinned to core 0 with
this client on core 1; sequential keep-alive requests over the 270 real
patients, rounds alternating between the two; medians of every round trip.
Issue 10's budget: with the interval at most 1.5x the p50 without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import payloads, servers
from bench.sequential_latency import percentile, sequential_round
from model.artifact import read_payload, save_artifact


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
    two_cores = (os.cpu_count() or 1) >= 2
    if two_cores:
        os.sched_setaffinity(0, {1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEART_")}
    samples: dict[str, list[float]] = {"without interval": [], "with interval": []}
    started = []
    try:
        for name, artifact in (("without interval", plain), ("with interval", args.artifact)):
            port = servers.free_port()
            argv_ = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
            started.append(
                (
                    name,
                    servers.start(
                        name.replace(" ", "-"),
                        argv_,
                        port=port,
                        log_dir=workdir,
                        cpus=(0,) if two_cores else None,
                        ready_path="/ready",
                        env={**env, "HEART_MODEL_PATH": str(artifact)},
                    ),
                )
            )
        for _ in range(args.rounds):
            for name, server in started:
                sequential_round(server.port, bodies, 200)  # warm-up
                samples[name] += sequential_round(server.port, bodies, args.requests)
    finally:
        for _, server in started:
            server.stop()
    p50 = {name: percentile(v, 50) for name, v in samples.items()}
    ratio = p50["with interval"] / p50["without interval"]
    for name, value in p50.items():
        print(f"{name}: p50 {value:.0f} us over {len(samples[name])} requests")
    print(f"ratio with/without: {ratio:.2f}x (budget 1.5x; load average {os.getloadavg()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
