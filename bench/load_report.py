"""The load benchmark's report: medians over rounds, same-run ratios, Markdown tables.

Kept apart from the code that runs servers and wrk so that the arithmetic
behind every figure can be tested on made-up results, without a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.report import machine_markdown, milliseconds, number, ratio, summarize, table, times

RPS, CORE = "requests_per_s", "rows_per_busy_core_s"


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
        "busiest_worker_share": [r.get("busiest_worker_share", math.nan) for r in runs],
    }
    errors = sum(sum(r["errors"].values()) for r in runs)
    return {k: summarize(v) for k, v in figures.items()} | {"errors": errors, "runs": runs}


def med(results: Mapping[str, Any], key: str, figure: str) -> float:
    entry = results.get(key)
    return math.nan if entry is None else float(entry[figure]["median"])


def medians(entry: Mapping[str, Any]) -> dict[str, float]:
    """The median of every summarised figure of one scenario."""
    return {k: v["median"] for k, v in entry.items() if isinstance(v, dict) and "median" in v}


def comparison_table(
    results: Mapping[str, Any], labels: Mapping[str, str], base: str = "fastapi"
) -> str:
    """One row per scenario; the last column divides its req/s by ``base``'s in the same run."""
    rows = []
    for r in results.values():
        m, endpoint = medians(r), r["endpoint"]
        path = r.get("path", "/predict/batch" if endpoint == "batch" else "/predict")
        many = r.get("rows_per_request", 1000 if endpoint == "batch" else 1) > 1
        reference = med(results, f"{base}/{endpoint}/c{r['connections']}", RPS)
        rows.append([
            labels.get(r["target"], r["target"]),
            path if endpoint in ("predict", "batch") else f"{path} ({endpoint})",
            str(r["connections"]), number(m[RPS]), number(m["rows_per_s"]) * many,
            milliseconds(m["p50_us"]), milliseconds(m["p99_us"]),
            number(m["server_cpu_us_per_request"]), number(m[CORE]),
            f"{r[RPS]['spread'] * 100:.0f}%", f"{m['other_load_cores']:.2f}", str(r["errors"]),
            f"{r['busiest_worker_share']['max']:.2f}", times(ratio(m[RPS], reference)),
        ])  # fmt: skip
    headers = ["server", "endpoint", "c", "req/s", "rows/s", "p50", "p99", "server CPU us/req"]
    headers += ["rows/s per busy core", "req/s spread", "other load", "errors"]
    headers += ["busiest worker's CPU share", f"req/s vs {labels.get(base, base).split(':')[0]}"]
    return table(headers, rows)


def memory_table(mem: Mapping[str, Any]) -> str:
    base = mem["points"][1]["rss_kib"]
    rows = [
        # the first point, at start-up, is no checkpoint
        [
            p["label"],
            number(p["requests"]),
            f"{p['rss_kib'] / 1024:.1f} MiB",
            times(p["rss_kib"] / base) if i else "",
        ]
        for i, p in enumerate(mem["points"])
    ]
    return table(["after", "requests served (approx.)", "VmRSS", "vs first checkpoint"], rows)


def to_markdown(data: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The whole report: figures and same-run ratios; BENCHMARKS.md holds the targets."""
    s, mem, sc, results = (
        data["settings"],
        data.get("memory"),
        data.get("scale"),
        data["comparison"],
    )
    quick = " (--quick: a smoke test, not a measurement)" if s["quick"] else ""
    parts = [
        f"## Load benchmark{quick}\n\n{machine_markdown(data['machine'])}",
        f"- pinning: {data['cpu_plan']}",
        f"- method: wrk with bench/post.lua cycling through each scenario's bodies; "
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s measured per scenario, "
        f"{s['rounds']} interleaved round(s), medians; batches of {s['batch_size']} patients",
        f"- command: `{data['command']}`",
        "- columns: `server CPU us/req` is the worker's CPU time per request (/proc/PID/stat); "
        "`req/s spread` is (max - min) / median over the rounds; `other load` is how many "
        "cores other processes kept busy (median; 0 on a quiet machine). BENCHMARKS.md "
        "explains the method.\n",
        comparison_table(results, labels) + "\n",
    ]
    if mem is not None:
        parts += [
            f"### Memory of one worker (fresh process, /predict at c={s['memory_concurrency']})\n",
            memory_table(mem) + "\n",
            f"Peak RSS (VmHWM) of the worker: {mem['peak_rss_kib'] / 1024:.1f} MiB.\n",
        ]
    if sc is not None:
        c32 = results.get("service/predict/c32")
        per_core = [number(c32[k]["median"]) if c32 else "n/a" for k in (RPS, CORE)]
        workers = {r["target"]: f"service, {r['workers']} worker(s)" for r in sc.values()}
        parts += [
            f"### Workers (nothing pinned: wrk shares the {data['machine']['cores']} cores)\n",
            comparison_table(
                sc, workers, base=min(sc.values(), key=lambda r: r["workers"])["target"]
            )
            + "\n",
            f"Per core: one pinned worker served {per_core[0]} req/s at c=32 above "
            f"({per_core[1]} from its CPU time per request); here wrk shares the "
            "cores with the workers. A busiest worker's CPU share near 1.0 (worst round; 0.50 is "
            "an even split) caps the gain of a second worker.\n",
        ]
    return "\n".join(parts)
