"""heart-score from two source trees in the same rounds: a change's before and after.

``python -m bench.scoring`` measures the checked-out code; a speed-up measured in
two such runs mixes the change with whatever else the shared machine did in
between. This runs ``heart-score`` from each tree (``--before`` and ``--after``,
e.g. ``git archive main | tar -x -C /tmp/before``) on the same inputs, in the same
interleaved rounds, with :func:`bench.scoring.run_pinned` (a fresh process pinned to
one core, CPU time and peak RSS from ``wait4``), and checks every output: no
refused row, the same probabilities and classes, and the largest difference of
the interval's ends between the trees.

    python -m bench.scoring_ab --before /tmp/before --after . --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.report import in_rounds, number, ratio, summarize, times
from bench.scoring import INPUTS, run_pinned, write_inputs
from scoring.synthetic import KEY
from training.report import markdown_table

TREES = ("before", "after")


def scorer(tree: Path, source: Path, target: Path, artifact: Path) -> list[str]:
    """heart-score from ``tree``: ``-P`` keeps the working directory off ``sys.path``,
    so ``PYTHONPATH`` alone decides which code runs."""
    argv = ["env", f"PYTHONPATH={tree}", sys.executable, "-P", "-m", "scoring", str(source)]
    argv += [str(target), "--key", KEY, "--model", str(artifact), "--threads", "1", "--quiet"]
    return argv


def check(outputs: dict[str, Path], rows: int) -> dict[str, float]:
    """Every row scored by both trees, the same point estimates, and how far the ends moved."""
    before, after = (pq.read_table(outputs[t]).to_pandas() for t in TREES)
    for frame in (before, after):
        if len(frame) != rows or frame["probability"].isna().any():
            raise RuntimeError(f"refused or missing rows in {outputs}")
    found: dict[str, float] = {}
    for column in ("probability", "prediction", "probability_low", "probability_high"):
        diff = np.abs(before[column].to_numpy(float) - after[column].to_numpy(float))
        found[column] = float(diff.max())
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("bench.scoring_ab", description=__doc__)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path.cwd())
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/model.joblib"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--inputs", default="parquet,parquet-gaps", help=", ".join(INPUTS))
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    names = args.inputs.split(",")
    table, checks = [], []
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-scoring-ab-") as tmp:
        inputs = write_inputs(Path(tmp), args.rows)
        cases: dict[tuple[str, str], tuple[str, ...]] = {}
        targets: dict[tuple[str, str], Path] = {}
        for name in names:
            for tree, path in trees.items():
                targets[name, tree] = Path(tmp) / f"{name}-{tree}.{INPUTS[name]}"
                argv_ = scorer(path, inputs[name], targets[name, tree], args.artifact.resolve())
                cases[name, tree] = tuple(argv_)
        core = args.core
        runs = in_rounds(args.rounds, list(cases.values()), lambda a: run_pinned(list(a), core))
        for name in names:
            if INPUTS[name] == "parquet":
                found = check({t: targets[name, t] for t in TREES}, args.rows)
                checks.append(f"{name}: largest |before - after| {found}")
            cpu = {t: summarize(s["cpu"] for s in runs[cases[name, t]]) for t in TREES}
            rss = {t: summarize(s["rss_mib"] for s in runs[cases[name, t]]) for t in TREES}
            row: list[Any] = [name, number(args.rows)]
            for t in TREES:
                samples = ", ".join(f"{s['cpu']:.2f}" for s in runs[cases[name, t]])
                row += [f"{cpu[t]['median']:.2f} ({samples})", number(args.rows / cpu[t]["median"])]
                row.append(f"{rss[t]['median']:.0f}")
            row.append(times(ratio(cpu["before"]["median"], cpu["after"]["median"])))
            table.append(row)
    headers = ["input", "rows"]
    for t in TREES:
        headers += [f"{t}: CPU s, median (runs)", f"{t}: rows per CPU-s", f"{t}: peak RSS MiB"]
    headers.append("speed-up (CPU)")
    print(markdown_table(headers, table))
    print("\n".join(checks))
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
