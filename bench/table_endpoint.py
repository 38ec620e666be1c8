"""Rows/s of one worker: Arrow and CSV on /predict/table against the JSON batch, same run.

One ``heart-api`` worker pinned to one core, a two-thread keep-alive client
pinned to the other; rounds interleave the scenarios so each sees the same
machine. Besides wall-clock rows/s, the server's own CPU seconds (from
``/proc``) give rows per CPU-second of the worker: the figure that does not
depend on what else the shared machine runs.

    python -m bench.table_endpoint --rounds 3 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from app.testing import running_server
from bench import report, servers
from bench.report import ratio, summarize
from model.features import FEATURE_NAMES
from scoring.synthetic import registry

ARROW = "application/vnd.apache.arrow.stream"
TABLE_ROWS = 16_000  # 1.7 MB of Arrow: under the default 2 MiB HEART_MAX_BODY_BYTES
JSON_ROWS = 1_000  # the JSON batch's own limit (HEART_MAX_BATCH_SIZE)


def scenarios() -> dict[str, tuple[str, bytes, dict[str, str], int]]:
    table = pa.Table.from_pandas(registry(TABLE_ROWS, seed=3)[list(FEATURE_NAMES)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    patients = registry(JSON_ROWS, seed=3)[list(FEATURE_NAMES)].to_dict("records")
    coded = {f for f in FEATURE_NAMES if f != "st_depression"}
    patients = [{k: int(v) if k in coded else v for k, v in p.items()} for p in patients]
    csv = table.to_pandas().to_csv(index=False).encode()
    json_type, csv_type = {"Content-Type": "application/json"}, "text/csv"
    return {
        "json batch": (
            "/predict/batch", json.dumps({"patients": patients}).encode(), json_type, JSON_ROWS
        ),
        "arrow -> arrow": (
            "/predict/table", bytes(sink.getvalue()), {"Content-Type": ARROW, "Accept": ARROW},
            TABLE_ROWS,
        ),
        "csv -> csv": (
            "/predict/table", csv, {"Content-Type": csv_type, "Accept": csv_type}, TABLE_ROWS
        ),
    }  # fmt: skip


def worker_cpu(workers: list[int]) -> float:
    """CPU seconds of the serving worker(s) so far: the supervisor serves nothing."""
    return sum(servers.cpu_seconds(pid) for pid in workers)


def hammer(url: str, path: str, body: bytes, headers: dict[str, str], seconds: float) -> int:
    """Requests answered 200 by two keep-alive connections in ``seconds``."""
    done = [0, 0]
    stop = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.perf_counter() < stop:
                response = client.post(path, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                done[slot] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/model.joblib"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    info = report.describe()
    cases = scenarios()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    os.sched_setaffinity(0, {1})
    env = {"HEART_ACCESS_LOG": "false", "HEART_LOG_LEVEL": "warning"}
    with running_server(args.artifact, env=env) as server:
        # heart-api serve supervises its worker: pin and measure the process that serves.
        workers = servers.worker_pids(server.process.pid)
        for pid in {server.process.pid, *workers}:
            os.sched_setaffinity(pid, {0})
        for path, body, request_headers, _ in cases.values():  # first use imports pyarrow
            httpx.post(server.url + path, content=body, headers=request_headers, timeout=60)
        for _ in range(args.rounds):
            for name, (path, body, request_headers, rows) in cases.items():
                cpu0, t0 = worker_cpu(workers), time.perf_counter()
                n = hammer(server.url, path, body, request_headers, args.seconds)
                wall, cpu = time.perf_counter() - t0, worker_cpu(workers) - cpu0
                samples[name].append((n * rows / wall, n * rows / cpu))
    info["load_average_end"] = report.load_average()
    results: dict[str, Any] = {}
    for name, values in samples.items():
        results[name] = {
            "rows_per_s_wall": summarize(v[0] for v in values),
            "rows_per_cpu_s": summarize(v[1] for v in values),
        }
    json_wall = results["json batch"]["rows_per_s_wall"]["median"]
    json_cpu = results["json batch"]["rows_per_cpu_s"]["median"]
    table_rows = []
    for name, r in results.items():
        wall, cpu = r["rows_per_s_wall"]["median"], r["rows_per_cpu_s"]["median"]
        r["x_json_wall"], r["x_json_cpu"] = ratio(wall, json_wall), ratio(cpu, json_cpu)
        table_rows.append([name, report.number(wall), report.times(r["x_json_wall"]),
                     report.number(cpu), report.times(r["x_json_cpu"])])  # fmt: skip
    headers = ["scenario", "rows/s (wall)", "x JSON", "rows per worker CPU-second", "x JSON"]
    command = report.command_line("bench.table_endpoint", argv)
    markdown = "\n".join(
        ["# /predict/table against /predict/batch (one worker, one core)", "",
         f"Command: `{command}`", "", report.machine_markdown(info), "",
         report.table(headers, table_rows), "",
         f"Rows per request: {TABLE_ROWS:,} for the table endpoint, {JSON_ROWS:,} for the JSON "
         "batch; two keep-alive client connections; medians over rounds."]
    )  # fmt: skip
    report.publish("table_endpoint", markdown, {"machine": info, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
