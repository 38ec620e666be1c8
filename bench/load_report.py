"""The load benchmark's report: medians over rounds, the issue's targets, Markdown tables.

Kept apart from the code that runs servers and wrk so that the arithmetic
behind every verdict can be tested on made-up results, without a server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from bench import machine
from bench.report import milliseconds, number, ratio, summarize, table, times

TARGET_C32_VS_FASTAPI = 0.7
TARGET_C1_P99_VS_FASTAPI = 1.5
TARGET_BATCH_ROWS_PER_S = 300_000.0
TARGET_MEMORY_GROWTH = 1.05
PER_CORE = ("requests_per_s", "rows_per_busy_core_s")
#: Issue 6's own reference 2 (FastAPI + Pydantic, constant reply): req/s at c=1 and c=32.
ISSUE_REFERENCE_2 = {1: 4100.0, 32: 6800.0}
#: Servers issue 6 quotes ("measured on this kind of machine"), NOT re-measured here:
#: req/s at c=1 and c=32, and the multiple of the c=32 figure /predict must reach.
QUOTED: dict[str, tuple[dict[int, float], float]] = {
    "MLServer 1.7 defaults": ({1: 610.0, 32: 590.0}, 8.0),
    "BentoML 1.4": ({1: 527.0, 32: 462.0}, 8.0),
    "MLServer parallel_workers=0": ({1: 980.0, 32: 1245.0}, 3.5),
}


def summarize_runs(runs: list[dict[str, Any]], rows_per_request: int = 1) -> dict[str, Any]:
    """Median, spread, min and max over the rounds of every figure the tables use."""

    def over(values: Iterable[float]) -> dict[str, float | int]:
        return summarize(values).as_dict()

    return {
        "requests_per_s": over(r["requests_per_s"] for r in runs),
        "rows_per_s": over(r["requests_per_s"] * rows_per_request for r in runs),
        "p50_us": over(r["latency_us"]["p50"] for r in runs),
        "p99_us": over(r["latency_us"]["p99"] for r in runs),
        "server_cpu_us_per_request": over(r["server_cpu_us_per_request"] for r in runs),
        # What one core doing nothing else would sustain: 1 / CPU time per request.
        # Meaningful where the worker is the bottleneck (c=32, batch), and far less
        # sensitive to other jobs on the machine than wall-clock throughput.
        "rows_per_busy_core_s": over(
            ratio(1e6 * rows_per_request, r["server_cpu_us_per_request"]) for r in runs
        ),
        "other_load_cores": over(r["other_load_cores"] for r in runs),
        "busiest_worker_share": over(r.get("busiest_worker_share", math.nan) for r in runs),
        "errors": sum(sum(r["errors"].values()) for r in runs),
        "runs": runs,
    }


def med(results: Mapping[str, Any], key: str, figure: str) -> float:
    entry = results.get(key)
    return math.nan if entry is None else float(entry[figure]["median"])


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def comparison_table(results: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    rows = []
    for r in results.values():
        m = medians(r)
        path = r.get("path", "/predict/batch" if r["endpoint"] == "batch" else "/predict")
        own = r["endpoint"] not in ("predict", "batch")
        many = r.get("rows_per_request", 1000 if r["endpoint"] == "batch" else 1) > 1
        rows.append([
            labels.get(r["target"], r["target"]), f"{path} ({r['endpoint']})" if own else path,
            str(r["connections"]), number(m["requests_per_s"]), number(m["rows_per_s"]) * many,
            milliseconds(m["p50_us"]), milliseconds(m["p99_us"]),
            number(m["server_cpu_us_per_request"]), number(m["rows_per_busy_core_s"]),
            f"{r['requests_per_s']['spread'] * 100:.0f}%", f"{m['other_load_cores']:.2f}",
            str(r["errors"]),
        ])  # fmt: skip
    headers = ["server", "endpoint", "c", "req/s", "rows/s", "p50", "p99", "server CPU us/req"]
    return table([*headers, "rows/s per busy core", "req/s spread", "other load", "errors"], rows)


def medians(entry: Mapping[str, Any]) -> dict[str, float]:
    """The median of every summarised figure of one scenario."""
    return {k: v["median"] for k, v in entry.items() if isinstance(v, dict) and "median" in v}


def targets_table(
    results: Mapping[str, Any], mem: Mapping[str, Any] | None
) -> tuple[str, list[str]]:
    """The issue's targets with the measured value; also the list of missed ones.

    The verdict uses wall-clock figures, as the issue defines the targets. The
    "per busy core" column gives the same comparison from CPU time per request,
    which other jobs on a shared machine distort far less; on a quiet machine
    the two agree wherever the worker is the bottleneck.
    """
    rows: list[list[str]] = []
    missed: list[str] = []

    def add(
        name: str, wanted: str, measured: str, ok: bool, core: str = "", counts: bool = True
    ) -> None:
        rows.append([name, wanted, measured, verdict(ok), core])
        missed.extend([name] if counts and not ok else [])

    def vs(reference: str, figure: str, key: str = "predict/c32") -> float:
        return ratio(
            med(results, f"service/{key}", figure), med(results, f"{reference}/{key}", figure)
        )

    def times_cell(value: float, at_least: float) -> str:
        return f"{times(value)} ({verdict(value >= at_least)})"

    core, want = "rows_per_busy_core_s", TARGET_C32_VS_FASTAPI
    c32 = vs("fastapi", "requests_per_s")
    add("/predict c=32 req/s vs reference 2 (FastAPI)", f">= {want}x", times(c32), c32 >= want,
        times_cell(vs("fastapi", core), want))  # fmt: skip
    c32_bytes = vs("fastapi-bytes", "requests_per_s")
    if not math.isnan(c32_bytes):
        # The issue's reference 2 says "constant reply", not how it is encoded; a
        # pre-encoded reply raises FastAPI's ceiling, so say how we do against that
        # stricter reading too, without counting it as a missed target.
        name = "(informational) /predict c=32 req/s vs reference 2b (bytes reply)"
        add(name, f">= {want}x", times(c32_bytes), c32_bytes >= want,
            times_cell(vs("fastapi-bytes", core), want), counts=False)  # fmt: skip
    c1_p99, most = vs("fastapi", "p99_us", "predict/c1"), TARGET_C1_P99_VS_FASTAPI
    add("/predict c=1 p99 vs reference 2 (FastAPI)", f"<= {most}x", times(c1_p99), c1_p99 <= most)
    batch = [k for k, r in results.items() if r["target"] == "service" and r["endpoint"] == "batch"]
    rows_s, rows_core = (med(results, batch[0] if batch else "", f) for f in ("rows_per_s", core))
    least = TARGET_BATCH_ROWS_PER_S
    add("/predict/batch (1000 patients) rows/s, one worker", f">= {number(least)}", number(rows_s),
        rows_s >= least, f"{number(rows_core)} ({verdict(rows_core >= least)})")  # fmt: skip
    if mem is not None:
        name = f"RSS after {mem['last_checkpoint']:,} vs after {mem['first_checkpoint']:,} requests"
        growth = mem["growth"]
        add(name, f"<= {TARGET_MEMORY_GROWTH}x", f"{growth:.3f}x", growth <= TARGET_MEMORY_GROWTH)
    headers = ["target (issue 6)", "wanted", "measured", "verdict", "per busy core (CPU time)"]
    return table(headers, rows), missed


def quoted_table(results: Mapping[str, Any]) -> str:
    """Our service against the issue's MLServer/BentoML figures (quoted, not re-measured).

    Two views: the plain ratio of our figure to the quoted one (different machines and
    days), and a ratio normalised by our reference 2 against the issue's FastAPI
    reference, which removes most of the difference between the two machines.
    """
    ours = {c: med(results, f"service/predict/c{c}", "requests_per_s") for c in (1, 32)}
    ref2 = {c: med(results, f"fastapi/predict/c{c}", "requests_per_s") for c in (1, 32)}
    normalised = {c: ratio(ours[c], ref2[c]) * ISSUE_REFERENCE_2[c] for c in (1, 32)}
    rows = []
    for name, (quoted, wanted) in QUOTED.items():
        cells = [name + " (issue's figure)"]
        for c in (1, 32):
            cells += [
                number(quoted[c]),
                times(ratio(ours[c], quoted[c])),
                times(normalised[c] / quoted[c]),
            ]
        rows.append([*cells, f">= {wanted}x: {verdict(normalised[32] / quoted[32] >= wanted)}"])
    headers = ["quoted server", "c=1 req/s (quoted)", "ours / quoted", "normalised"]
    headers += ["c=32 req/s (quoted)", "ours / quoted", "normalised", "target at c=32 (normalised)"]
    return table(headers, rows)


def memory_table(mem: Mapping[str, Any]) -> str:
    base = mem["points"][1]["rss_kib"]
    rows = [
        [
            p["label"],
            number(p["requests"]),
            f"{p['rss_kib'] / 1024:.1f} MiB",
            times(p["rss_kib"] / base),
        ]
        for p in mem["points"]
    ]
    rows[0][3] = ""  # after start-up: the baseline is the first checkpoint
    return table(["after", "requests served (approx.)", "VmRSS", "vs first checkpoint"], rows)


def scale_table(sc: Mapping[str, Any]) -> str:
    base = sc[min(sc, key=int)]["requests_per_s"]["median"]
    rows = []
    for r in sc.values():
        m = medians(r)
        rows.append([
            str(r["workers"]), str(r["connections"]), number(m["requests_per_s"]),
            milliseconds(m["p50_us"]), milliseconds(m["p99_us"]),
            number(m["server_cpu_us_per_request"]), times(ratio(m["requests_per_s"], base)),
            f"{r['busiest_worker_share']['max']:.2f}", f"{m['other_load_cores']:.2f}",
            prometheus_cell(r["prometheus"]),
        ])  # fmt: skip
    headers = ["workers", "c", "req/s", "p50", "p99", "CPU us/req (all workers)", "vs 1 worker"]
    headers += ["busiest worker's CPU share", "other load", "/predict in Prometheus vs wrk"]
    return table(headers, rows)


def prometheus_cell(check: Mapping[str, Any]) -> str:
    counted = ", ".join(number(v) for v in sorted(set(check["scrapes"])))
    verdict_text = "consistent" if check["consistent"] else "**inconsistent**"
    return f"{counted} vs {number(check['wrk_completed'])} completed: {verdict_text}"


def to_markdown(data: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[str, list[str]]:
    """The whole report, and the targets it missed (the run fails on none of them)."""
    s, mem, sc, results = (
        data["settings"],
        data.get("memory"),
        data.get("scale"),
        data["comparison"],
    )
    targets, missed = targets_table(results, mem)
    quick = " (--quick: a smoke test, not a measurement)" if s["quick"] else ""
    parts = [
        f"## Load benchmark{quick}\n\n{machine.markdown(data['machine'])}",
        f"- pinning: {data['cpu_plan']}",
        f"- method: wrk with bench/post.lua cycling through each scenario's bodies; "
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s measured per scenario, "
        f"{s['rounds']} interleaved round(s), medians; batches of {s['batch_size']} patients",
        f"- command: `{data['command']}`",
        "- columns: `server CPU us/req` is the worker's CPU time per request (/proc/PID/stat); "
        "`req/s spread` is (max - min) / median over the rounds; `other load` is how many "
        "cores other processes kept busy (median; 0 on a quiet machine). BENCHMARKS.md "
        "explains the method.\n",
        comparison_table(results, labels),
        f"\n### Targets\n\n{targets}\n",
        "### Against the issue's MLServer and BentoML figures (quoted, not re-measured)\n",
        "`ours / quoted` divides our median by the figure quoted in issue 6 (measured on "
        "another machine of the same kind); `normalised` first divides ours by reference 2 "
        "measured in this run and multiplies by the issue's reference-2 figure, which removes "
        "most of the machine difference.\n",
        quoted_table(results) + "\n",
    ]
    if mem is not None:
        parts += [
            f"### Memory of one worker (fresh process, /predict at c={s['memory_concurrency']})\n",
            memory_table(mem) + "\n",
            f"Peak RSS (VmHWM) of the worker: {mem['peak_rss_kib'] / 1024:.1f} MiB.\n",
        ]
    if sc is not None:
        c32 = results.get("service/predict/c32")
        per_core = [number(c32[k]["median"]) if c32 else "n/a" for k in PER_CORE]
        parts += [
            f"### Workers (nothing pinned: wrk shares the {data['machine']['cores']} cores)\n",
            scale_table(sc) + "\n",
            f"Per core: one pinned worker served {per_core[0]} req/s at c=32 above "
            f"({per_core[1]} from its CPU time per request); here wrk shares the "
            "cores with the workers. The Prometheus column compares the service's own "
            '`heart_http_requests_total{route="/predict"}` (several scrapes, each answered by '
            "whichever worker) with the responses wrk received; a busiest worker's CPU share "
            "near 1.0 (worst round; 0.50 is an even split) caps the gain of a second worker.\n",
        ]
        bad = [w for w, r in sc.items() if not r["prometheus"]["consistent"]]
        missed += [f"Prometheus counts with {w} workers" for w in bad]
    return "\n".join(parts), missed
