"""Driving ``wrk``: its command line, reading its results, and one measured run of a server.

``wrk`` is a C load generator: one thread on its own core sustains far more
requests per second than any server measured here, so it does not limit the
figures the way a Python client would. ``post.lua`` prints the run as one
``WRK_JSON`` line with exact percentiles (microseconds); the human-readable
report wrk prints with ``--latency`` is parsed as a fallback and kept in the
raw logs.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine
from bench.report import ratio
from bench.servers import Server, cpu_seconds, pinned

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
JSON_MARKER = "WRK_JSON "

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something we cannot read."""


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

    def as_dict(self) -> dict[str, Any]:
        figures = {"requests": self.requests, "duration_s": self.duration_s}
        rate = {"requests_per_s": self.requests_per_s}
        return figures | rate | {"errors": dict(self.errors), "latency_us": dict(self.latency_us)}


def parse_output(text: str) -> WrkResult:
    """Read a wrk run from its stdout: the ``WRK_JSON`` line if present, else the text report."""
    for line in text.splitlines():
        if line.startswith(JSON_MARKER):
            data = json.loads(line[len(JSON_MARKER) :])
            errors = {kind: int(data["errors"].get(kind, 0)) for kind in ERROR_KINDS}
            latency = {key: float(value) for key, value in data["latency_us"].items()}
            duration_s = float(data["duration_us"]) / 1e6
            return WrkResult(int(data["requests"]), duration_s, errors, latency, raw=text)
    return parse_text_report(text)


def to_microseconds(value: str) -> float:
    """``'1.23ms'`` -> 1230.0; wrk prints durations with us, ms, s, m or h suffixes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", value)
    if match is None:
        raise WrkError(f"not a wrk duration: {value!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_text_report(text: str) -> WrkResult:
    """Parse wrk's own report (needs ``--latency`` for the percentiles)."""
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+(?:us|ms|s|m|h))", text, re.M)
    if total is None:
        raise WrkError("wrk output has no 'N requests in T' line:\n" + text)
    found = re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
    latency = {f"p{pct}": to_microseconds(value) for pct, value in found}
    if stats := re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M):
        latency |= {"mean": to_microseconds(stats[1]), "max": to_microseconds(stats[3])}
    errors = dict.fromkeys(ERROR_KINDS, 0)
    sockets = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if socket := re.search(sockets, text):
        counts = map(int, socket.groups())
        errors |= dict(zip(("connect", "read", "write", "timeout"), counts, strict=True))
    if status := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors["status"] = int(status[1])
    duration_s = to_microseconds(total[2]) / 1e6
    return WrkResult(int(total[1]), duration_s, errors, latency, raw=text)


def wrk_path() -> str | None:
    return shutil.which("wrk")


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
) -> list[str]:
    """The wrk command line (optionally pinned to ``cpus`` with taskset, and reniced)."""
    threads = min(threads, connections)  # wrk refuses fewer connections than threads
    argv = [
        wrk_path() or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
    ]
    argv += ["--timeout=10s", "--latency", "-s", str(LUA_SCRIPT), url, "--", str(body_file)]
    return pinned(argv + ([str(stop_after)] if stop_after else []), cpus, nice)


def run(url: str, body_file: Path, **options: Any) -> WrkResult:
    """Run wrk once (options as for :func:`build_command`); raises :class:`WrkError` on failure."""
    if wrk_path() is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    argv = build_command(url, body_file, **options)
    timeout = float(options["duration_s"]) + 60
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return parse_output(proc.stdout)


def measure(
    server: Server,
    path: str,
    body_file: Path,
    *,
    connections: int,
    warmup_s: float,
    duration_s: float,
    cpus: Sequence[int] | None = None,
    nice: int = 0,
    log: Path | None = None,
) -> dict[str, Any]:
    """Warm up, then one measured wrk run; also the server's CPU time per request.

    Beside wrk's figures: the serving workers' CPU time (what one core doing
    nothing else would sustain, far less sensitive to other jobs than wall
    clock), the busiest worker's share of it, and the cores other processes
    kept busy during the run, so a reader can tell a disturbed figure.
    """
    url, options = server.url(path), {"connections": connections, "cpus": cpus, "nice": nice}
    warmup = run(url, body_file, duration_s=warmup_s, **options).requests if warmup_s > 0 else 0
    server.check_alive()
    pids = server.workers()
    per_worker_before = [cpu_seconds(pid) for pid in pids]
    machine_before = machine.cpu_busy_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run(url, body_file, duration_s=duration_s, **options)
    per_worker = [cpu_seconds(pid) - b for pid, b in zip(pids, per_worker_before, strict=True)]
    machine_after = machine.cpu_busy_seconds()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.check_alive()
    wrk_cpu = children_after.ru_utime - children_before.ru_utime
    wrk_cpu += children_after.ru_stime - children_before.ru_stime
    cpu_used = sum(per_worker)
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"==== {server.target.key} {path} c{connections} load {os.getloadavg()}\n")
            fh.write(result.raw + "\n")
    out = result.as_dict()
    if result.requests == 0:  # a stalled server must not pass as a slow one
        out["errors"]["no_request_completed"] = 1
    busy = machine_after[0] - machine_before[0]
    return out | {
        "warmup_requests": warmup,
        "server_cpu_s": cpu_used,
        # 1/workers when the kernel spread the keep-alive connections evenly, 1.0 when
        # one worker got them all.
        "busiest_worker_share": ratio(max(per_worker, default=0.0), cpu_used),
        "wrk_cpu_s": wrk_cpu,
        # In cores: 0 on a quiet machine, 1.0 means one whole core was taken by others.
        "other_load_cores": max(0.0, busy - cpu_used - wrk_cpu) / result.duration_s,
        "steal_cores": (machine_after[1] - machine_before[1]) / result.duration_s,
        "server_cpu_us_per_request": ratio(cpu_used * 1e6, result.requests),
        "load_average": machine.load_average(),
    }


def ensure_installed(install: bool) -> None:
    """Use wrk if present; otherwise install Debian's package when we are allowed to."""
    apt = shutil.which("apt-get")
    if not wrk_path() and install and apt and os.geteuid() == 0:
        print("wrk is missing: apt-get update && apt-get install -y wrk", file=sys.stderr)
        subprocess.run([apt, "update", "-q"], check=True)
        lock = ["-o", "DPkg::Lock::Timeout=300"]  # other developers may be installing too
        subprocess.run([apt, *lock, "install", "-y", "-q", "wrk"], check=True)
    if not wrk_path():
        raise SystemExit(
            "wrk is not installed; install Debian's package (apt-get install wrk) "
            "or rerun as root without --no-install"
        )
