"""heart-score throughput and peak memory, file to file, on one core (issue 13).

Each run is a fresh ``heart-score`` process pinned to one core (``--threads 1``),
timed from outside, with its peak RSS from ``wait4``. The reference, measured
in the same rounds, is a pyarrow copy of the same file (read the 13 features
and the key, write the key): the I/O floor no scorer can beat. A file ten
times larger shows whether memory stays flat. ``python -m bench.scoring``
(1M and 10M rows, 3 rounds; ``--rows 1000000 --rounds 1`` for a short run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench import report
from bench.report import in_rounds, number, ratio, summarize, times
from model.features import FEATURE_NAMES
from scoring.synthetic import KEY, registry
from training.report import markdown_table

TITLE = "heart-score throughput (one core)"
TARGETS = {"parquet": 1_000_000.0, "csv": 300_000.0}  # rows/s on one core (issue 13)
#: Share of rows with a gap in the third input, scored against the complete Parquet file.
GAPS = 0.35
#: Each input file and its format.
INPUTS = {"parquet": "parquet", "csv": "csv", "parquet-gaps": "parquet"}
#: The reference's command, run like the scorer.
COPY = (sys.executable, "-m", "bench.scoring", "--copy")


def write_inputs(directory: Path, rows: int) -> dict[str, Path]:
    """Parquet and CSV registries of ``rows`` complete rows, and a Parquet one in which
    :data:`GAPS` of the rows lack one of three feature sets; a million rows at a time."""
    paths = {name: directory / f"registry-{rows}-{name}.{fmt}" for name, fmt in INPUTS.items()}
    step = 1_000_000
    schema = pa.Schema.from_pandas(registry(1), preserve_index=False)
    with (
        pq.ParquetWriter(paths["parquet"], schema) as pw,
        pq.ParquetWriter(paths["parquet-gaps"], schema) as gw,
        pacsv.CSVWriter(paths["csv"], schema) as cw,
    ):
        for start in range(0, rows, step):
            n = min(step, rows - start)
            table = pa.Table.from_pandas(registry(n, seed=1, start=start), preserve_index=False)
            pw.write_table(table)
            cw.write_table(table)
            gapped = registry(n, seed=1, start=start, gaps=GAPS)
            gw.write_table(pa.Table.from_pandas(gapped, preserve_index=False))
    return paths


def copy_only(source: str, target: str) -> None:
    """The reference: read what heart-score reads, write the key column, nothing else."""
    writer: Any = None
    if source.endswith(".parquet"):
        columns = [KEY, *FEATURE_NAMES]
        batches = pq.ParquetFile(source).iter_batches(131_072, columns=columns, use_threads=False)
        for batch in batches:
            schema = pa.schema([batch.schema.field(KEY)])
            writer = writer or pq.ParquetWriter(target, schema, use_dictionary=False)
            writer.write_batch(batch.select([KEY]))
    else:
        read = pacsv.ReadOptions(block_size=8 << 20, use_threads=False)
        for batch in pacsv.open_csv(source, read_options=read):
            writer = writer or pacsv.CSVWriter(target, pa.schema([batch.schema.field(KEY)]))
            writer.write_batch(batch.select([KEY]))
    writer.close()


def run_pinned(command: list[str], core: int) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of ``command`` on one core."""
    start = time.perf_counter()
    # fork (preexec_fn), not taskset through vfork: a vfork child's peak RSS counts ours.
    child = subprocess.Popen(command, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} exited with {status}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def measure(rows_list: list[int], rounds: int, artifact: Path, core: int) -> list[dict[str, Any]]:
    """Every input scored and copied once per round, interleaved, so all see the same machine."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        for rows in rows_list:
            inputs, out = write_inputs(Path(tmp), rows), Path(tmp) / "out"
            commands: dict[tuple[str, str], tuple[str, ...]] = {}
            for name, source in inputs.items():
                target, fmt = f"{out}.{INPUTS[name]}", INPUTS[name]
                scorer = [sys.executable, "-m", "scoring", str(source), target, "--key", KEY]
                scorer += ["--model", str(artifact), "--threads", "1", "--quiet"]
                commands[name, "score"] = (*scorer, "--input-format", fmt)
                commands[name, "copy"] = (*COPY, str(source), target)
            argvs = list(commands.values())
            runs = in_rounds(rounds, argvs, lambda argv: run_pinned(list(argv), core))
            for name in inputs:
                row: dict[str, Any] = {"rows": rows, "format": INPUTS[name], "input": name}
                for kind in ("score", "copy"):
                    for key in ("wall", "cpu", "rss_mib"):
                        row[f"{kind}_{key}"] = summarize(s[key] for s in runs[commands[name, kind]])
                row["rows_per_s_wall"] = rows / row["score_wall"]["median"]
                row["rows_per_s_cpu"] = rows / row["score_cpu"]["median"]
                row["x_copy_wall"] = ratio(row["score_wall"]["median"], row["copy_wall"]["median"])
                row["score_cpu_samples"] = [s["cpu"] for s in runs[commands[name, "score"]]]
                results.append(row)
            complete, gapped = results[-3], results[-1]
            # Same rounds, same rows: what the gaps cost, as a CPU-time ratio of medians.
            gapped["x_complete_cpu"] = ratio(
                gapped["score_cpu"]["median"], complete["score_cpu"]["median"]
            )
            for path in inputs.values():
                path.unlink()
    return results


def render(results: list[dict[str, Any]]) -> list[str]:
    """The table and how to read it."""
    rows = [
        [
            f"{r['format']} -> {r['format']}"
            + (f" ({GAPS:.0%} of rows with gaps)" if r["input"] == "parquet-gaps" else ""),
            number(r["rows"]),
            number(r["rows_per_s_wall"]),
            number(r["rows_per_s_cpu"]),
            number(TARGETS[r["format"]]),
            times(r["x_copy_wall"]),
            times(r["x_complete_cpu"]) if "x_complete_cpu" in r else "",
            f"{r['score_rss_mib']['median']:.1f}",
        ]
        for r in results
    ]
    headers = ["path", "rows", "rows/s (wall)", "rows/s (CPU time)", "target", "x pyarrow copy"]
    headers += ["CPU x complete rows", "peak RSS MiB"]
    note = (
        "Medians of interleaved rounds; each run is a new process pinned to one core,"
        " start-up (Python, NumPy, joblib and pyarrow imports) included. CPU time is the"
        " figure a shared machine does not distort (wall time includes waiting for the core)."
        f" 'CPU x complete rows': the file with {GAPS:.0%} of rows lacking one of three"
        " feature sets against the complete Parquet file of the same size, same rounds."
    )
    return [markdown_table(headers, rows), note]


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["--copy"]:  # the reference run: it must not import more than it needs
        copy_only(*given[1:3])
        return 0
    from bench.servers import arguments  # imports the app (FastAPI), which the copy must not

    parser = arguments("bench.scoring", __doc__)
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated file sizes")
    parser.add_argument("--core", type=int, default=0, help="the core every run is pinned to")
    args = parser.parse_args(argv)
    command = report.command_line("bench.scoring", argv)
    data: dict[str, Any] = {"machine": report.describe(), "command": command}
    results = measure([int(r) for r in args.rows.split(",")], args.rounds, args.artifact, args.core)
    data["results"] = results
    return report.publish("scoring", TITLE, data, render(results), args.output_dir)


if __name__ == "__main__":
    raise SystemExit(main())
