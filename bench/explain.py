"""``python -m bench.explain``: cost and background-size convergence of model/explain.py.

* **Convergence**: the exact Shapley values of the same patients with
  backgrounds of K = 16 ... 256 rows (``training.missing.marginal_background``
  on the training patients, three shuffling seeds each), against K = 1024. The
  served K is the smallest whose largest error stays well below what a reader
  can see in a bar chart of contributions (0.01).
* **Cost**: seconds per patient of ``explain`` on complete records (8,192
  coalitions), one BLAS thread, median of repeats, with the served background;
  the reference measured in the same run is the issue's prototype, one
  ``(8192 x 13) @ (13 x K*hidden)`` float32 product, so the ratio travels.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench import machine, report
from bench.stats import summarize
from model.explain import explain
from model.predictor import Predictor
from training.missing import marginal_background
from training.pipeline import DEFAULT_SITES, TrainingConfig, train
from training.sites import load_sites

SIZES = (16, 32, 64, 128, 256)
REFERENCE_SIZE = 1024
TARGET_MS = 10.0


def _fit() -> tuple[Predictor, np.ndarray]:
    """The default model without cross-validation or ensemble, and the sites' patients."""
    result = train(TrainingConfig(cv_folds=0, cv_repeats=0, ensemble_size=0))
    return result.pipeline.predictor_, load_sites(DEFAULT_SITES).x


def convergence(predictor: Predictor, x: np.ndarray, patients: np.ndarray) -> list[dict[str, Any]]:
    """Largest and mean |phi_K - phi_1024| over patients and features, per K and seed."""

    def values(k: int, seed: int) -> np.ndarray:
        bg = marginal_background(x, k, np.random.default_rng(seed))
        p = dataclasses.replace(predictor, background=bg)
        return np.array([explain(p, row).contributions for row in patients])

    reference = values(REFERENCE_SIZE, 0)
    out = []
    for k in SIZES:
        errors = [np.abs(values(k, seed) - reference) for seed in (1, 2, 3)]
        out.append(
            {
                "k": k,
                "max_abs_error": max(float(e.max()) for e in errors),
                "mean_abs_error": float(np.mean([e.mean() for e in errors])),
            }
        )
    return out


def per_call(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few patients and repeats")
    parser.add_argument("--output-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    info = machine.describe()
    predictor, x = _fit()
    complete = x[~np.isnan(x).any(axis=1)]
    rng = np.random.default_rng(0)
    patients = x[rng.choice(len(x), 4 if args.quick else 30, replace=False)]
    conv = convergence(predictor, x, patients)
    bg = np.asarray(predictor.background)
    bits = rng.random((8192, 13)).astype(np.float32)
    delta = rng.random((13, bg.shape[0] * predictor.n_hidden)).astype(np.float32)
    repeat = 5 if args.quick else 60
    with threadpool_limits(1):
        rows = complete[: repeat + 1]
        it = iter(np.resize(rows, (repeat + 1, 13)))
        cost = summarize(per_call(lambda: explain(predictor, next(it)), repeat))
        ref = summarize(per_call(lambda: bits @ delta, repeat))
    info["load_average_end"] = machine.load_average()
    data = {"machine": info, "background_rows": int(bg.shape[0]), "convergence": conv}
    data |= {"explain_s": cost.as_dict(), "reference_s": ref.as_dict(), "quick": args.quick}
    rows_md = [
        [str(c["k"]), f"{c['max_abs_error']:.4f}", f"{c['mean_abs_error']:.5f}"] for c in conv
    ]
    md = [
        "# Exact Shapley values: background convergence and cost" + " (--quick)" * args.quick,
        "",
        f"Reproduce with `python -m bench.explain`. {len(patients)} patients of the four "
        f"sites; reference K = {REFERENCE_SIZE}; three shuffling seeds per K.",
        "",
        report.table(["K", "largest abs. error", "mean abs. error"], rows_md),
        "",
        f"Served background: {bg.shape[0]} rows. One patient, 13 measured features, one "
        f"thread: median **{report.duration(cost.median)}** (target {TARGET_MS:g} ms; "
        f"spread {cost.spread:.2f}); the issue's prototype product in the same run: "
        f"{report.duration(ref.median)}, ratio "
        f"{report.times(cost.median / ref.median)}.",
        "",
        machine.markdown(info),
    ]
    for path in report.write_results("explain", "\n".join(md), data, args.output_dir):
        print(path)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
