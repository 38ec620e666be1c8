"""Driving ``wrk``: the bodies it sends, its command line, its result, one measured run.

``wrk`` (C, one thread on its own core) outpaces every server measured here, so
it does not limit the figures as a Python client would; ``post.lua`` reports each
run as one ``WRK_JSON`` line with exact percentiles. The bodies cycle through the
270 real Statlog patients, so nothing can be cached and drift sees a real stream.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.columnar import ARROW, CSV, TABLE_PATH
from bench.report import cpu_busy_seconds, load_average, ratio
from bench.servers import Server, cpu_seconds, pinned
from model.features import FEATURE_NAMES, FEATURES
from training.data import load_dataset

OIP_INFER = "/v2/models/heart/infer"
#: Rows per table upload: 1.7 MB of Arrow, under the default 2 MiB ``HEART_MAX_BODY_BYTES``.
TABLE_ROWS = 16_000


@dataclass(frozen=True)
class Scenario:
    """A kind of request: a path (query allowed) and a file of bodies, one JSON body a line."""

    name: str
    path: str
    bodies: Path
    rows_per_request: int = 1
    #: Only the service answers it, e.g. a query parameter of ours.
    service_only: bool = False
    #: ``bodies`` is one body of this type (Arrow, CSV), not JSON lines.
    media_type: str | None = None
    #: Request headers beyond Content-Type (``"Accept-Encoding: gzip"``), as a client sends
    #: them by default: what the service does with them is part of what it costs.
    headers: tuple[str, ...] = ()

    def first_body(self) -> bytes:
        """The first body, for the pre-flight check of each server."""
        if self.media_type:
            return self.bodies.read_bytes()
        with self.bodies.open("rb") as fh:
            return fh.readline().rstrip(b"\n")


def patients(n: int, *, offset: int = 0) -> list[dict[str, int | float]]:
    """``n`` real patients from row ``offset`` on, wrapping around, as a client sends them."""
    x, _ = load_dataset()
    found = []
    for i in range(n):
        pairs = zip(FEATURES, (float(v) for v in x[(offset + i) % len(x)]), strict=True)
        found.append({f.name: int(v) if f.is_coded or v.is_integer() else v for f, v in pairs})
    return found


def write_bodies(path: Path, bodies: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


def write_single_bodies(path: Path) -> Path:
    """Every patient of the data set as a one-patient body, one per line."""
    return write_bodies(path, patients(len(load_dataset()[0])))


def write_batch_bodies(path: Path, *, batch_size: int, n_bodies: int = 4) -> Path:
    """``n_bodies`` different ``{"patients": [...]}`` bodies of ``batch_size`` patients each."""
    bodies = ({"patients": patients(batch_size, offset=k * 67)} for k in range(n_bodies))
    return write_bodies(path, bodies)


def standard_scenarios(directory: Path, batch_size: int) -> list[Scenario]:
    """``/predict`` with every real patient, ``/predict/batch`` with four large batches, and the
    same rows as Open Inference Protocol ``features`` matrices (the service only)."""
    batches = write_batch_bodies(directory / "batch.jsonl", batch_size=batch_size)
    tensor = {"name": "features", "shape": [batch_size, len(FEATURES)], "datatype": "FP64"}
    rows = (
        [[p[f.name] for f in FEATURES] for p in json.loads(body)["patients"]]
        for body in batches.read_text().splitlines()
    )
    oip = ({"inputs": [{**tensor, "data": data}]} for data in rows)
    return [
        Scenario("predict", "/predict", write_single_bodies(directory / "predict.jsonl")),
        Scenario("batch", "/predict/batch", batches, batch_size),
        Scenario("oip", OIP_INFER, write_bodies(directory / "oip.jsonl", oip), batch_size, True),
    ]


def table_scenarios(directory: Path, rows: int = TABLE_ROWS) -> list[Scenario]:
    """A synthetic registry of ``rows`` complete rows uploaded to ``/predict/table`` as one
    Arrow stream and as one CSV file (issue 13), each answered in its own format."""
    import pyarrow as pa  # the dev and bulk extras' (pyarrow, pandas): only these bodies need it

    from scoring.synthetic import registry

    table = pa.Table.from_pandas(registry(rows, seed=3)[list(FEATURE_NAMES)])
    with pa.ipc.new_stream(arrow := directory / "table.arrow", table.schema) as writer:
        writer.write_table(table)
    table.to_pandas().to_csv(csv := directory / "table.csv", index=False)
    return [
        Scenario("table-arrow", TABLE_PATH, arrow, rows, service_only=True, media_type=ARROW),
        Scenario("table-csv", TABLE_PATH, csv, rows, service_only=True, media_type=CSV),
    ]


LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
JSON_MARKER = "WRK_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed requests, their duration, errors and latency (microseconds)."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    raw: str = field(default="", repr=False, compare=False)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_output(text: str) -> WrkResult:
    """The run as ``post.lua`` reports it on its ``WRK_JSON`` line."""
    line = next((ln for ln in text.splitlines() if ln.startswith(JSON_MARKER)), None)
    if line is None:
        raise WrkError("wrk printed no WRK_JSON line (was bench/post.lua used?):\n" + text)
    data = json.loads(line.removeprefix(JSON_MARKER))
    errors = {kind: int(n) for kind, n in data["errors"].items()}
    latency = {key: float(value) for key, value in data["latency_us"].items()}
    return WrkResult(int(data["requests"]), data["duration_us"] / 1e6, errors, latency, text)


def build_command(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    cpus: Sequence[int] | None = None,
    stop_after: int | None = None,
    nice: int = 0,
    media_type: str | None = None,
    headers: Sequence[str] = (),
) -> list[str]:
    """The wrk command line, pinned to ``cpus`` and reniced when asked; with ``media_type``
    the body file is one body of that type, else JSON bodies one a line (bench/post.lua)."""
    threads = min(threads, connections)  # wrk refuses fewer connections than threads
    argv = [shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}"]
    argv += [f"-d{max(1, round(duration_s))}s", "--timeout=10s", "--latency", "-s", str(LUA_SCRIPT)]
    for header in headers:  # post.lua adds wrk's -H headers to every request it formats
        argv += ["-H", header]
    extra = [str(stop_after or 0), media_type] if media_type else [str(stop_after or "")]
    argv += [url, "--", str(body_file), *filter(None, extra)]
    return pinned(argv, cpus, nice)


def run(url: str, body_file: Path, **options: Any) -> WrkResult:
    """Run wrk once (options as for :func:`build_command`); raises :class:`WrkError` on failure."""
    if shutil.which("wrk") is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    argv = build_command(url, body_file, **options)
    timeout = float(options["duration_s"]) + 60
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return parse_output(proc.stdout)


def measure(
    server: Server, path: str, body_file: Path, *, warmup_s: float, log: Path, **options: Any
) -> dict[str, Any]:
    """Warm up, then one measured wrk run (``options`` as for :func:`build_command`).

    Beside wrk's figures: the workers' CPU time per request (far less sensitive to
    other jobs than wall clock) and the cores other processes kept busy, so a reader
    can tell a disturbed figure.
    """
    url = server.url(path)
    warmup = run(url, body_file, **options | {"duration_s": warmup_s}).requests if warmup_s else 0
    server.check_alive()
    pids = server.workers()
    before = cpu_seconds(*pids), cpu_busy_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run(url, body_file, **options)
    cpu_used, seconds = cpu_seconds(*pids) - before[0], result.duration_s
    (busy, steal), after = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    server.check_alive()
    wrk_cpu = after.ru_utime - children.ru_utime + after.ru_stime - children.ru_stime
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"==== {server.target.key} {path} {options} load {load_average()}\n{result.raw}\n")
    # A stalled server must not pass as a slow one.
    errors = result.errors | ({"no_request_completed": 1} if result.requests == 0 else {})
    return {
        "requests": result.requests,
        "duration_s": seconds,
        "requests_per_s": result.requests_per_s,
        "errors": errors,
        "latency_us": result.latency_us,
        "warmup_requests": warmup,
        "server_cpu_s": cpu_used,
        "wrk_cpu_s": wrk_cpu,
        "load_average": load_average(),
        # In cores: 0 on a quiet machine, 1.0 means one whole core was taken by others.
        "other_load_cores": max(0.0, busy - before[1][0] - cpu_used - wrk_cpu) / seconds,
        "steal_cores": (steal - before[1][1]) / seconds,
        "server_cpu_us_per_request": ratio(cpu_used * 1e6, result.requests),
        "rss_kib": server.rss_kib(),  # after the run: growth from round to round is a leak
    }
