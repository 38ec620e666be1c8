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
PACKAGES = "fastapi starlette pydantic pydantic-core uvicorn uvloop httptools numpy scikit-learn"
PACKAGES += " prometheus-client"


def cpu_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, summed over cores.

    Busy is everything but idle and iowait (guest time is already in user time);
    steal is time the hypervisor gave our virtual CPUs to someone else.
    Differences between two readings tell how much else ran during a measurement.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    steal = values[7] if len(values) > 7 else 0
    return (sum(values[:8]) - values[3] - values[4]) / ticks, steal / ticks


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def proc_field(path: str, key: str) -> str:
    """The value of ``key:`` in a ``/proc`` text file such as cpuinfo or meminfo ("" if absent)."""
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES.split():
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    if wrk := shutil.which("wrk"):
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).splitlines() or ["unknown"]
        found["wrk"] = first[0].split(" [")[0].removeprefix("wrk ")
    return found


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "app", "model", "training")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (
        "+uncommitted changes in app/model/training" if dirty else ""
    )


def describe() -> dict[str, Any]:
    """Everything a reader needs to judge a result: one dict, stored in every result file."""
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(proc_field("/proc/meminfo", "MemTotal").split()[0]) / 2**20, 1),
        "kernel": platform.release(),
        "versions": versions(),
        "commit": git_commit(),
        "load_average_start": load_average(),
    }


def markdown(info: dict[str, Any]) -> str:
    """The machine block as Markdown lines."""
    end = info.get("load_average_end")
    return "\n".join([
        f"- date (UTC): {info['date_utc']}; commit {info['commit']}",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- load average (1/5/15 min) at start: {info['load_average_start']}"
        + (f", at end: {end}" if end else ""),
    ])  # fmt: skip
