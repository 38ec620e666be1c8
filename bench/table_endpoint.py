"""Rows/s of one worker: Arrow and CSV on /predict/table against the JSON batch, same run.

One ``heart-api`` worker pinned to one core, a two-thread keep-alive client
pinned to the other (wrk sends only JSON lines); rounds interleave the
scenarios so each sees the same machine. Besides wall-clock rows/s, the
worker's own CPU seconds (from ``/proc``) give rows per CPU-second: the figure
that does not depend on what else the shared machine runs.

    python -m bench.table_endpoint --rounds 3 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from bench import report, servers
from bench.report import number, ratio, summarize, times
from bench.servers import CpuPlan, Server, Target
from model.features import FEATURE_NAMES
from scoring.synthetic import registry

ARROW = "application/vnd.apache.arrow.stream"
TABLE_ROWS = 16_000  # 1.7 MB of Arrow: under the default 2 MiB HEART_MAX_BODY_BYTES
JSON_ROWS = 1_000  # the JSON batch's own limit (HEART_MAX_BATCH_SIZE)
QUIET = (("HEART_ACCESS_LOG", "false"), ("HEART_LOG_LEVEL", "warning"))


def scenarios() -> dict[str, tuple[str, bytes, dict[str, str], int]]:
    table = pa.Table.from_pandas(registry(TABLE_ROWS, seed=3)[list(FEATURE_NAMES)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    patients = registry(JSON_ROWS, seed=3)[list(FEATURE_NAMES)].to_dict("records")
    coded = {f for f in FEATURE_NAMES if f != "st_depression"}
    patients = [{k: int(v) if k in coded else v for k, v in p.items()} for p in patients]
    csv = table.to_pandas().to_csv(index=False).encode()
    return {
        "json batch": ("/predict/batch", json.dumps({"patients": patients}).encode(),
                       {"Content-Type": "application/json"}, JSON_ROWS),
        "arrow -> arrow": ("/predict/table", bytes(sink.getvalue()),
                           {"Content-Type": ARROW, "Accept": ARROW}, TABLE_ROWS),
        "csv -> csv": ("/predict/table", csv,
                       {"Content-Type": "text/csv", "Accept": "text/csv"}, TABLE_ROWS),
    }  # fmt: skip


def hammer(url: str, path: str, body: bytes, headers: dict[str, str], seconds: float) -> int:
    """Requests answered 200 by two keep-alive connections in ``seconds``; any other fails."""
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


def rates(server: Server, case: tuple[str, bytes, dict[str, str], int], seconds: float) -> Any:
    """(rows/s wall, rows per CPU-second of the worker) of one run of ``case``."""
    path, body, headers, rows = case
    cpu0, t0 = servers.cpu_seconds(*server.workers()), time.perf_counter()
    n = hammer(server.running.url, path, body, headers, seconds)
    wall, cpu = time.perf_counter() - t0, servers.cpu_seconds(*server.workers()) - cpu0
    return n * rows / wall, n * rows / cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--artifact", type=Path, default=servers.DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    info, cases, plan = report.describe(), scenarios(), CpuPlan.for_this_machine()
    service = Target("service", "heart-api serve", settings=QUIET)
    if plan.client:
        os.sched_setaffinity(0, plan.client)
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as logs,
        servers.started(service, servers.model_path(args.artifact), Path(logs), plan.server) as s,
    ):
        for path, body, sent, _ in cases.values():  # first use imports pyarrow
            httpx.post(s.url(path), content=body, headers=sent, timeout=60).raise_for_status()
        samples = servers.in_rounds(
            args.rounds, list(cases), lambda c: rates(s, cases[c], args.seconds)
        )
    info["load_average_end"] = report.load_average()
    results: dict[str, Any] = {}
    for name, values in samples.items():
        wall, cpu = summarize(v[0] for v in values), summarize(v[1] for v in values)
        results[name] = {"rows_per_s_wall": wall, "rows_per_cpu_s": cpu}
    json_wall, json_cpu = (
        results["json batch"][k]["median"] for k in ("rows_per_s_wall", "rows_per_cpu_s")
    )
    rows = []
    for name, r in results.items():
        wall, cpu = r["rows_per_s_wall"]["median"], r["rows_per_cpu_s"]["median"]
        r["x_json_wall"], r["x_json_cpu"] = ratio(wall, json_wall), ratio(cpu, json_cpu)
        rows.append(
            [name, number(wall), times(r["x_json_wall"]), number(cpu), times(r["x_json_cpu"])]
        )
    headers = ["scenario", "rows/s (wall)", "x JSON", "rows per worker CPU-second", "x JSON"]
    note = (
        f"Rows per request: {TABLE_ROWS:,} for the table endpoint, {JSON_ROWS:,} for the JSON "
        f"batch; two keep-alive client connections; medians over rounds; {plan.describe()}."
    )
    title = "/predict/table against /predict/batch (one worker, one core)"
    command = report.command_line("bench.table_endpoint", argv)
    markdown = report.document(title, info, command, report.table(headers, rows), note)
    report.publish("table_endpoint", markdown, {"machine": info, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
