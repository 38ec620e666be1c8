"""Driving ``wrk`` and reading its results.

``wrk`` is a C load generator: one thread on its own core sustains far more
requests per second than any server measured here, so it does not limit the
figures the way a Python client would. ``post.lua`` prints the run as one
``WRK_JSON`` line with exact percentiles (microseconds); the human-readable
report wrk prints with ``--latency`` is parsed as a fallback and kept in the
raw logs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        return {
            "requests": self.requests,
            "duration_s": self.duration_s,
            "requests_per_s": self.requests_per_s,
            "errors": dict(self.errors),
            "latency_us": dict(self.latency_us),
        }


def parse_output(text: str) -> WrkResult:
    """Read a wrk run from its stdout: the ``WRK_JSON`` line if present, else the text report."""
    for line in text.splitlines():
        if line.startswith(JSON_MARKER):
            return _from_json(json.loads(line[len(JSON_MARKER) :]), text)
    return parse_text_report(text)


def _from_json(data: dict[str, Any], raw: str) -> WrkResult:
    errors = {kind: int(data["errors"].get(kind, 0)) for kind in ERROR_KINDS}
    latency = {key: float(value) for key, value in data["latency_us"].items()}
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        errors=errors,
        latency_us=latency,
        raw=raw,
    )


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
    latency: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", text, re.M):
        latency[f"p{pct}"] = to_microseconds(value)
    stats = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if stats is not None:
        latency["mean"] = to_microseconds(stats.group(1))
        latency["max"] = to_microseconds(stats.group(3))
    errors = dict.fromkeys(ERROR_KINDS, 0)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket is not None:
        for kind, value in zip(
            ("connect", "read", "write", "timeout"), socket.groups(), strict=True
        ):
            errors[kind] = int(value)
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if status is not None:
        errors["status"] = int(status.group(1))
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=to_microseconds(total.group(2)) / 1e6,
        errors=errors,
        latency_us=latency,
        raw=text,
    )


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
    timeout_s: float = 10.0,
    nice: int = 0,
) -> list[str]:
    """The wrk command line (optionally pinned to ``cpus`` with taskset, and reniced)."""
    if connections < threads:
        threads = connections  # wrk refuses fewer connections than threads
    argv = [
        wrk_path() or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_file),
    ]
    if stop_after:
        argv.append(str(stop_after))
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    if cpus:
        argv = ["taskset", "-c", ",".join(str(c) for c in cpus), *argv]
    return argv


def run(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    cpus: Sequence[int] | None = None,
    stop_after: int | None = None,
    nice: int = 0,
) -> WrkResult:
    """Run wrk once and return its parsed result; raises :class:`WrkError` on failure."""
    if wrk_path() is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    argv = build_command(
        url,
        body_file,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        cpus=cpus,
        stop_after=stop_after,
        nice=nice,
    )
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if proc.returncode != 0:
        raise WrkError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return parse_output(proc.stdout)
