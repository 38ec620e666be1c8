"""Rows/s of one worker: Arrow and CSV on /predict/table against the JSON batch, same run.

The load benchmark's method (:func:`bench.load.measured`) with two wrk connections;
rows per CPU-second of the worker is the figure a shared machine does not distort.
``python -m bench.table_endpoint --rounds 3 --seconds 4``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench import load, report, servers
from bench.report import CORE, number, ratio, times
from bench.servers import CpuPlan, Target
from bench.wrk import Scenario, write_bodies
from model.features import FEATURE_NAMES
from scoring.synthetic import registry
from training.report import markdown_table

ARROW = "application/vnd.apache.arrow.stream"
TABLE_ROWS = 16_000  # 1.7 MB of Arrow: under the default 2 MiB HEART_MAX_BODY_BYTES
JSON_ROWS = 1_000  # the JSON batch's own limit (HEART_MAX_BATCH_SIZE)


def scenarios(directory: Path) -> list[Scenario]:
    """The same synthetic registry as a JSON batch, an Arrow stream and a CSV file."""
    table = pa.Table.from_pandas(registry(TABLE_ROWS, seed=3)[list(FEATURE_NAMES)])
    with pa.ipc.new_stream(arrow := directory / "table.arrow", table.schema) as writer:
        writer.write_table(table)
    table.to_pandas().to_csv(csv := directory / "table.csv", index=False)
    patients = table.slice(0, JSON_ROWS).to_pandas().to_dict("records")
    coded = {f for f in FEATURE_NAMES if f != "st_depression"}
    patients = [{k: int(v) if k in coded else v for k, v in p.items()} for p in patients]
    batch = write_bodies(directory / "batch.jsonl", [{"patients": patients}])
    return [
        Scenario("json batch", "/predict/batch", batch, JSON_ROWS),
        Scenario("arrow -> arrow", "/predict/table", arrow, TABLE_ROWS, media_type=ARROW),
        Scenario("csv -> csv", "/predict/table", csv, TABLE_ROWS, media_type="text/csv"),
    ]


def to_markdown(results: dict[str, Any], info: dict[str, Any], command: str) -> str:
    """Rows/s and rows per worker CPU-second, each as a ratio to the JSON batch's."""
    base = next(iter(results.values()))
    rows = [
        [r["endpoint"]]
        + [
            cell
            for k in ("rows_per_s", CORE)
            for cell in (number(r[k]["median"]), times(ratio(r[k]["median"], base[k]["median"])))
        ]
        + [str(r["errors"])]
        for r in results.values()
    ]
    headers = ["scenario", "rows/s (wall)", "x JSON", "rows per worker CPU-second", "x JSON"]
    note = (
        f"Rows per request: {TABLE_ROWS:,} for the table endpoint, {JSON_ROWS:,} for the JSON "
        "batch; wrk with two keep-alive connections; medians over rounds."
    )
    title = "/predict/table against /predict/batch (one worker, one core)"
    return report.document(title, info, command, markdown_table([*headers, "errors"], rows), note)


def main(argv: list[str] | None = None) -> int:
    parser = servers.arguments("bench.table_endpoint", __doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per run")
    args = parser.parse_args(argv)
    info, plan = report.describe(), CpuPlan.for_this_machine()
    settings = load.Settings(warmup_s=1.0, duration_s=args.seconds, rounds=args.rounds)
    service = Target("service", "heart-api serve", settings=(("HEART_ACCESS_LOG", "false"),))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        runs = [load.Run(service, scenario, 2) for scenario in scenarios(Path(tmp))]
        model = servers.model_path(args.artifact)
        results = load.measured([service], runs, model, settings, plan)
    info["load_average_end"] = report.load_average()
    command = report.command_line("bench.table_endpoint", argv)
    markdown = to_markdown(results, info, command)
    failed = sum(r["errors"] for r in results.values())
    data = {"machine": info, "results": results}
    return report.publish("table_endpoint", markdown, data, args.output_dir, failed=failed)


if __name__ == "__main__":
    raise SystemExit(main())
