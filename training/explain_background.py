"""``python -m training.explain_background``: how many background rows the explanations need.

The exact Shapley values of ``model/explain.py`` average over the artifact's
background rows (the same rows that marginalise a value not measured). This
study explains the same 30 patients of the four sites with backgrounds of
K = 16 ... 256 rows (``training.missing.marginal_background`` on the training
patients, three column-shuffling seeds each) and compares them with K = 1024.
The rule: the smallest K whose *largest* error stays below what a reader can
see in a bar chart of contributions (0.01), within the cost budget
(``bench/predictor_micro.py``). The served 64 rows miss it (largest 0.0135,
mean 0.0016) because 128 would break the 10 ms budget; docs/explanations.md
weighs the two. Writes ``results/explain-background.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.arrays import FloatArray
from model.explain import explain
from model.predictor import Predictor
from training.missing import marginal_background
from training.pipeline import DEFAULT_SITES, TrainingConfig, train
from training.report import markdown_table, write_json_atomic, write_text_atomic
from training.sites import load_sites

COMMAND = "python -m training.explain_background"
SIZES = (16, 32, 64, 128, 256)
REFERENCE_SIZE = 1024


def convergence(predictor: Predictor, x: FloatArray, patients: FloatArray) -> list[dict[str, Any]]:
    """Largest and mean |phi_K - phi_1024| over patients and features, per K (3 seeds)."""

    def values(k: int, seed: int) -> FloatArray:
        bg = marginal_background(x, k, np.random.default_rng(seed))
        p = dataclasses.replace(predictor, background=bg)
        return np.array([explain(p, row).contributions for row in patients])

    reference = values(REFERENCE_SIZE, 0)
    out = []
    for k in SIZES:
        errors = [np.abs(values(k, seed) - reference) for seed in (1, 2, 3)]
        worst, mean = (
            max(float(e.max()) for e in errors),
            float(np.mean([e.mean() for e in errors])),
        )
        out.append({"k": k, "max_abs_error": worst, "mean_abs_error": mean})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    result = train(TrainingConfig(cv_folds=0, cv_repeats=0, ensemble_size=0))
    predictor, x = result.pipeline.predictor_, load_sites(DEFAULT_SITES).x
    patients = x[np.random.default_rng(0).choice(len(x), 30, replace=False)]
    served, conv = len(np.asarray(predictor.background)), convergence(predictor, x, patients)
    data = {"command": COMMAND, "served_background_rows": served, "convergence": conv}
    lines = [
        "# Exact Shapley values: how many background rows",
        "",
        f"Reproduce with `{COMMAND}`. {len(patients)} patients of the four sites (some with "
        f"values not measured); error against K = {REFERENCE_SIZE}; three shuffling seeds per K. "
        f"Served background: {served} rows.",
        "",
        markdown_table(
            ["K", "largest abs. error", "mean abs. error"],
            (
                [str(c["k"]), f"{c['max_abs_error']:.4f}", f"{c['mean_abs_error']:.5f}"]
                for c in conv
            ),
        ),
    ]
    write_json_atomic(data, args.output_dir / "explain-background.json")
    write_text_atomic(args.output_dir / "explain-background.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
