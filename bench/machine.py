"""What a benchmark result was measured on: machine, load, versions, commit, date.

Figures without these are not comparable with anything, so every result file
carries them, including the load average before and after, because the
machine is shared with other work.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "uvicorn",
    "uvloop",
    "httptools",
    "numpy",
    "scikit-learn",
    "prometheus-client",
)


def cpu_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, summed over cores.

    Busy is everything but idle and iowait; steal is time the hypervisor gave
    our virtual CPUs to someone else. Differences between two readings tell how
    much else ran on the machine during a measurement.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            steal = values[7] if len(values) > 7 else 0
            # guest time is already included in user time
            busy = sum(values[:8]) - idle
            return busy / ticks, steal / ticks
    return float("nan"), float("nan")


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def cpu_model() -> str:
    lscpu = shutil.which("lscpu")
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                return value.strip()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def memory_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return float("nan")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    wrk = shutil.which("wrk")
    if wrk:
        proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (proc.stdout or proc.stderr).splitlines()
        found["wrk"] = first[0].split(" [")[0].removeprefix("wrk ") if first else "unknown"
    return found


def git_commit() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=False
        )
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "app", "model", "training")
    return commit + ("+uncommitted changes in app/model/training" if dirty else "")


def describe() -> dict[str, Any]:
    """Everything a reader needs to judge a result: one dict, stored in every result file."""
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_total_gib(),
        "kernel": platform.release(),
        "versions": versions(),
        "commit": git_commit(),
        "load_average_start": load_average(),
    }


def markdown(info: dict[str, Any]) -> str:
    """The machine block as Markdown lines."""
    v = info["versions"]
    lines = [
        f"- date (UTC): {info['date_utc']}; commit {info['commit']}",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load average (1/5/15 min) at start: {info['load_average_start']}"
        + (f", at end: {info['load_average_end']}" if "load_average_end" in info else ""),
    ]
    return "\n".join(lines)
