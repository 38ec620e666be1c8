"""The bootstrap ensemble behind the risk interval (``model/uncertainty.py``).

Each member is the served recipe (:func:`training.pipeline.make_model`) fitted
on a bootstrap resample of the training patients, drawn within each site and
outcome stratum so that every member sees each site's share. Only the
member's network and scaler are kept: at prediction time every member uses
the served model's background rows and recalibration, so the members differ
only in the data they were trained on, which is the variation the interval
describes.

``python -m training.ensemble`` is the evidence behind the ensemble size and
the interval's form: it trains 20 members and compares, for subsets of B of
them, the interval's endpoints and width with those of all 20.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model.arrays import FloatArray
from model.uncertainty import ARRAY_NAMES, DEFAULT_COVERAGE, RiskEnsemble
from training.missing import MarginalMLPClassifier


def bootstrap_indices(strata: npt.NDArray[Any], rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """A resample with replacement of the same size, drawn within each stratum."""
    parts = [
        rng.choice(np.flatnonzero(strata == s), size=int(np.sum(strata == s)), replace=True)
        for s in np.unique(strata)
    ]
    return np.sort(np.concatenate(parts))


def fit_ensemble(
    make: Callable[[int], MarginalMLPClassifier],
    x: FloatArray,
    y: npt.NDArray[Any],
    strata: npt.NDArray[Any],
    size: int,
    seed: int,
) -> dict[str, FloatArray]:
    """Fit ``size`` members (``make(seed)`` builds one) and stack their arrays for the artifact."""
    rng = np.random.default_rng(seed)
    stacked: dict[str, list[FloatArray]] = {name: [] for name in ARRAY_NAMES}
    for _ in range(size):
        rows = bootstrap_indices(strata, rng)
        member = make(int(rng.integers(2**31))).fit(x[rows], y[rows])
        net = member.network_
        for name, value in zip(
            ARRAY_NAMES,
            (
                net.coefs_[0],
                net.intercepts_[0],
                net.coefs_[1],
                net.intercepts_[1],
                member.mean_,
                member.scale_,
            ),
            strict=True,
        ):
            stacked[name].append(np.asarray(value, dtype=np.float64))
    return {name: np.stack(values) for name, values in stacked.items()}


def ensemble_of(arrays: dict[str, FloatArray], background: FloatArray, **kw: Any) -> RiskEnsemble:
    """The serving-side ensemble of freshly fitted arrays (as the artifact will load it)."""
    return RiskEnsemble.from_arrays(arrays, background, **kw)


def _bands(p: FloatArray, kind: str) -> tuple[FloatArray, FloatArray]:
    """90 % band of each row of member probabilities: empirical percentiles or normal fit."""
    if kind == "percentile":
        lo, hi = np.percentile(p, (5.0, 95.0), axis=1)
        return np.asarray(lo), np.asarray(hi)
    logit = np.log(p) - np.log1p(-p)
    centre, spread = logit.mean(axis=1), 1.6448536 * logit.std(axis=1, ddof=1)
    return 1.0 / (1.0 + np.exp(-(centre - spread))), 1.0 / (1.0 + np.exp(-(centre + spread)))


def size_study(p: FloatArray, sizes: Sequence[int], draws: int = 20) -> list[dict[str, Any]]:
    """Per subset size and band kind: mean width, and mean endpoint distance to all members."""
    rng = np.random.default_rng(0)
    out = []
    for kind in ("percentile", "normal"):
        lo_all, hi_all = _bands(p, kind)
        for b in sizes:
            gaps, widths = [], []
            for _ in range(draws):
                lo, hi = _bands(p[:, rng.choice(p.shape[1], b, replace=False)], kind)
                gaps.append(np.mean(np.abs(lo - lo_all) + np.abs(hi - hi_all)) / 2)
                widths.append(np.mean(hi - lo))
            out.append(
                {
                    "band": kind,
                    "members": b,
                    "width": float(np.mean(widths)),
                    "endpoint_gap": float(np.mean(gaps)),
                    "width_all": float(np.mean(hi_all - lo_all)),
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Train 20 members with the default recipe and print the size study (a few minutes)."""
    from training.pipeline import DEFAULT_SITES, TrainingConfig, train
    from training.sites import load_sites

    parser = argparse.ArgumentParser(description="ensemble size and interval form study")
    parser.add_argument("--members", type=int, default=20)
    args = parser.parse_args(argv)
    payload = train(TrainingConfig(cv_folds=0, cv_repeats=0, ensemble_size=args.members)).payload
    ensemble = ensemble_of(payload["ensemble"], payload["background"])
    p = np.clip(ensemble.member_probabilities(load_sites(DEFAULT_SITES).x), 1e-12, 1 - 1e-12)
    print(f"{args.members} members, coverage {DEFAULT_COVERAGE}, patients of every site")
    print("| band | members | mean width | width, all members | mean endpoint gap |")
    print("|---|---|---|---|---|")
    for r in size_study(p, [b for b in (4, 6, 8, 10, 12, 16) if b < args.members]):
        print(
            f"| {r['band']} | {r['members']} | {r['width']:.3f} | {r['width_all']:.3f} "
            f"| {r['endpoint_gap']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
