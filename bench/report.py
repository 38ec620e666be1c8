"""Benchmark results: medians, ratios, Markdown, result files, and what they were measured on.

On a shared machine medians of interleaved rounds resist one disturbed round, ratios to a
reference measured in the same run cancel the machine, and a figure without the machine,
its load, the versions and the commit is comparable with nothing. Kept apart from the
code that runs servers, so the arithmetic is tested on made-up results.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from model.atomic import write_text_atomic
from training.report import markdown_table

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PACKAGES = "fastapi starlette pydantic pydantic-core uvicorn uvloop httptools numpy scikit-learn"
RPS, CORE = "requests_per_s", "rows_per_busy_core_s"
Case = TypeVar("Case", bound=Hashable)
Sample = TypeVar("Sample")


def summarize(values: Iterable[float]) -> dict[str, float]:
    """Median, min, max, count and spread ((max - min) / median) ignoring NaN."""
    clean = [float(v) for v in values if not math.isnan(float(v))]
    if not clean:
        return dict.fromkeys(("median", "min", "max", "spread"), math.nan) | {"n": 0}
    median, low, high = statistics.median(clean), min(clean), max(clean)
    spread = ratio(high - low, abs(median))
    return {"median": median, "min": low, "max": high, "n": len(clean), "spread": spread}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is missing (NaN) or the denominator is 0."""
    return numerator / denominator if denominator else math.nan


def number(value: float) -> str:
    """``12345.6`` -> ``'12,346'``; missing values as ``n/a``."""
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def milliseconds(us: float) -> str:
    """Microseconds as milliseconds with precision suited to the magnitude."""
    ms = us / 1000
    digits = 3 if ms < 1 else 2 if ms < 10 else 1
    return "n/a" if math.isnan(us) else f"{ms:.{digits}f} ms"


def times(value: float) -> str:
    """A ratio as ``0.74x``."""
    return "n/a" if math.isnan(value) else f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def duration(seconds: float) -> str:
    """A per-call time with a unit that keeps 3 significant digits."""
    if math.isnan(seconds):
        return "n/a"
    units = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))
    scale, unit = next(((s, u) for s, u in units if seconds >= s), units[-1])
    return f"{seconds / scale:.3g} {unit}"


def _clean(value: Any) -> Any:
    """JSON cannot hold NaN: store it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return [_clean(v) for v in value] if isinstance(value, list | tuple) else value


def write_results(stem: str, markdown: str, data: dict[str, Any], directory: Path) -> list[Path]:
    """``<stem>.md`` and ``<stem>.json`` in ``directory``."""
    text = json.dumps(_clean(data), indent=2, allow_nan=False)
    md = write_text_atomic(directory / f"{stem}.md", markdown.rstrip() + "\n")
    return [md, write_text_atomic(directory / f"{stem}.json", text + "\n")]


def publish(
    stem: str,
    title: str,
    data: dict[str, Any],
    parts: Sequence[str],
    directory: Path = RESULTS_DIR,
    failed: int = 0,
) -> int:
    """Close a run the same way for every benchmark: note the load average at its end (what
    else ran meanwhile), keep its Markdown (:func:`document` of ``parts``) and ``data`` in
    ``directory``, print the Markdown; the exit status is 1 when ``failed`` requests failed,
    as the figures would describe error replies."""
    data["machine"]["load_average_end"] = load_average()
    markdown = document(title, data["machine"], data["command"], *parts)
    for path in write_results(stem, markdown, data, directory):
        progress(f"wrote {path}")
    print(markdown)
    if failed:
        progress(f"{failed} requests failed during the runs: the figures are not valid")
    return 1 if failed else 0


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduced a run, as its results file quotes it: shell-quoted, so
    an argument with spaces (``--scenario-header x 'Accept-Encoding: gzip'``) pastes back."""
    return "python -m " + shlex.join([module, *(sys.argv[1:] if argv is None else argv)])


def document(title: str, info: Mapping[str, Any], command: str, *parts: str) -> str:
    """A result's Markdown: what it measured, on which machine, by which command, then
    its tables and notes (every benchmark's file reads the same way)."""
    return "\n\n".join([f"## {title}\n\n{machine_markdown(info)}\n- command: `{command}`", *parts])


def progress(message: str) -> None:
    """A benchmark's progress, on stderr so that stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_rounds(
    rounds: int, cases: Sequence[Case], measure: Callable[[Case], Sample]
) -> dict[Case, list[Sample]]:
    """Measure every case once per round, the order reversed every other round, so that
    medians compare figures taken in both orders, not one case's good minute with another's bad."""
    samples: dict[Case, list[Sample]] = {case: [] for case in cases}
    for round_no in range(rounds):
        for case in cases if round_no % 2 == 0 else reversed(cases):
            progress(f"round {round_no + 1}/{rounds}: {case}")
            samples[case].append(measure(case))
    return samples


# ---------------------------------------------------------------- what it was measured on


def cpu_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the machine since boot: busy is all but idle and iowait,
    steal what the hypervisor gave to others. Two readings tell what else ran meanwhile."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks, steal = os.sysconf("SC_CLK_TCK"), values[7] if len(values) > 7 else 0
    return (sum(values[:8]) - values[3] - values[4]) / ticks, steal / ticks


def load_average() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


def proc_field(text: str, key: str) -> str:
    """The value of ``key:`` in a ``/proc`` text such as cpuinfo or PID/status ("" if absent)."""
    lines = (line.partition(":") for line in text.splitlines())
    return next((value.strip() for name, _, value in lines if name.strip() == key), "")


def versions() -> dict[str, str]:
    # Not at the top: bench.scoring's copy reference imports this module and must stay light.
    from training.pipeline import library_versions

    found = library_versions([*PACKAGES.split(), "prometheus-client"])
    if wrk := shutil.which("wrk"):
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr or "unknown").splitlines()[0]
        found["wrk"] = first.split(" [")[0].removeprefix("wrk ")
    return found


def describe() -> dict[str, Any]:
    """Everything a reader needs to judge a result: one dict, stored in every result file."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "app", "model", "training")
    memory = proc_field(Path("/proc/meminfo").read_text(), "MemTotal").split()[0]
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": proc_field(Path("/proc/cpuinfo").read_text(), "model name") or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 2**20, 1),
        "kernel": platform.release(),
        "versions": versions(),
        "commit": commit + ("+uncommitted changes in app/model/training" if dirty else ""),
        "load_average_start": load_average(),
    }


def machine_markdown(info: Mapping[str, Any]) -> str:
    """The machine block as Markdown lines."""
    end = f", at end: {info['load_average_end']}" if info.get("load_average_end") else ""
    return "\n".join(
        [
            f"- date (UTC): {info['date_utc']}; commit {info['commit']}",
            f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
            f"Linux {info['kernel']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
            f"- load average (1/5/15 min) at start: {info['load_average_start']}{end}",
        ]
    )


# ---------------------------------------------------------------- wrk runs against a reference


def summarize_runs(runs: list[dict[str, Any]], rows_per_request: int = 1) -> dict[str, Any]:
    """Median, spread, min and max over the rounds of every figure the tables use."""
    figures = {
        RPS: [r[RPS] for r in runs],
        "rows_per_s": [r[RPS] * rows_per_request for r in runs],
        "p50_us": [r["latency_us"]["p50"] for r in runs],
        "p99_us": [r["latency_us"]["p99"] for r in runs],
        "server_cpu_us_per_request": [r["server_cpu_us_per_request"] for r in runs],
        # What one core doing nothing else would sustain: 1 / CPU time per request.
        # Meaningful where the worker is the bottleneck (c=32, batch), and far less
        # sensitive to other jobs on the machine than wall-clock throughput.
        CORE: [ratio(1e6 * rows_per_request, r["server_cpu_us_per_request"]) for r in runs],
        "other_load_cores": [r["other_load_cores"] for r in runs],
    }
    errors = sum(sum(r["errors"].values()) for r in runs)
    return {k: summarize(v) for k, v in figures.items()} | {"errors": errors, "runs": runs}


def comparison_table(
    results: Mapping[str, Any], labels: Mapping[str, str], base: str = "fastapi"
) -> str:
    """One row per scenario; the last column divides its req/s by ``base``'s in the same run."""
    rows = []
    for r in results.values():
        m = {k: v["median"] for k, v in r.items() if isinstance(v, dict) and "median" in v}
        endpoint = r["endpoint"]
        path = r.get("path", "/predict/batch" if endpoint == "batch" else "/predict")
        many = r.get("rows_per_request", 1000 if endpoint == "batch" else 1) > 1
        reference = results.get(f"{base}/{endpoint}/c{r['connections']}")
        reference_rps = math.nan if reference is None else float(reference[RPS]["median"])
        rows.append(
            [
                labels.get(r["target"], r["target"]),
                path if endpoint in ("predict", "batch") else f"{path} ({endpoint})",
                str(r["connections"]),
                number(m[RPS]),
                number(m["rows_per_s"]) * many,
                milliseconds(m["p50_us"]),
                milliseconds(m["p99_us"]),
                number(m["server_cpu_us_per_request"]),
                number(m[CORE]),
                f"{r[RPS]['spread'] * 100:.0f}%",
                f"{m['other_load_cores']:.2f}",
                str(r["errors"]),
                times(ratio(m[RPS], reference_rps)),
            ]
        )
    headers = ["server", "endpoint", "c", "req/s", "rows/s", "p50", "p99", "server CPU us/req"]
    headers += ["rows/s per busy core", "req/s spread", "other load", "errors"]
    headers += [f"req/s vs {labels.get(base, base).split(':')[0]}"]
    return markdown_table(headers, rows)
