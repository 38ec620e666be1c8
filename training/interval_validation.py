"""``python -m training.interval_validation``: does the risk interval mean what it says?

The leave-one-site-out companion of ``results/sites.md`` for the interval of
``model/uncertainty.py``. For each UCI site: train the served model and its
bootstrap ensemble (default recipe and size) on the other two sites, then on
the held-out site:

* **grouped by predicted risk** (quintiles of the served probability): the
  observed event rate, the mean probability, the mean interval, and whether
  the observed rate falls inside the mean interval. The interval describes how
  much the training data could move the *risk estimate*, so a well-behaved
  one should hold the observed rate about as often as it claims; transport
  to a new hospital (a shifted prevalence) is exactly where it will not;
* **width** on complete and incomplete records, and on the complete records
  again with the two fluoroscopy/thallium tests (``num_major_vessels``,
  ``thal``) hidden: the same patients, so the difference is the gap's effect.

Writes ``results/intervals.{md,json}``; about 35 training runs (minutes).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.features import EXPENSIVE_TESTS
from model.uncertainty import DEFAULT_COVERAGE
from training.ensemble import ensemble_of, fit_ensemble
from training.missing import MarginalMLPClassifier, withhold
from training.pipeline import TrainingConfig, make_model
from training.report import markdown_table, write_json_atomic, write_text_atomic
from training.sites import UCI_SITES, load_sites

COMMAND = "python -m training.interval_validation"


def _groups(y: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[dict[str, Any]]:
    edges = np.quantile(p, [0.2, 0.4, 0.6, 0.8])
    which = np.digitize(p, edges)
    out = []
    for g in range(5):
        sel = which == g
        if not sel.any():
            continue
        observed, low, high = float(y[sel].mean()), float(lo[sel].mean()), float(hi[sel].mean())
        out.append(
            {
                "n": int(sel.sum()),
                "observed": observed,
                "mean_probability": float(p[sel].mean()),
                "mean_lower": low,
                "mean_upper": high,
                "inside": low <= observed <= high,
            }
        )
    return out


def validate_site(held: str, config: TrainingConfig) -> dict[str, Any]:
    """Train on the other sites, measure the interval on ``held``."""
    pooled = load_sites(UCI_SITES)
    train, test = pooled.site != held, pooled.site == held
    model = make_model(config).fit(pooled.x[train], pooled.y[train])
    assert isinstance(model, MarginalMLPClassifier)
    strata = np.char.add(pooled.site[train], pooled.y[train].astype(str))
    arrays = fit_ensemble(
        lambda seed: MarginalMLPClassifier(
            **{**model.get_params(), "random_state": seed, "n_networks": 1}
        ),
        pooled.x[train],
        pooled.y[train],
        strata,
        config.ensemble_size,
        config.seed,
    )
    ensemble = ensemble_of(arrays, model.background_)
    x, y = pooled.x[test], pooled.y[test]
    p = model.predict_proba(x)[:, 1]
    lo, hi = ensemble.interval(x)
    complete = ~np.isnan(x).any(axis=1)
    masked = withhold(x[complete])
    mlo, mhi = ensemble.interval(masked)
    width = hi - lo
    return {
        "n": int(y.size),
        "groups": _groups(y, p, lo, hi),
        "point_inside_interval": float(np.mean((lo <= p) & (p <= hi))),
        "width_complete": float(width[complete].mean()) if complete.any() else None,
        "n_complete": int(complete.sum()),
        "width_incomplete": float(width[~complete].mean()) if (~complete).any() else None,
        "n_incomplete": int((~complete).sum()),
        "width_complete_with_tests_hidden": float((mhi - mlo).mean()) if complete.any() else None,
    }


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Risk interval on held-out sites",
        "",
        f"Reproduce with `{COMMAND}`. Leave one UCI site out; served recipe and a "
        f"{result['ensemble_size']}-member bootstrap ensemble trained on the other two; "
        f"{round(result['coverage'] * 100)} % band (model/uncertainty.py). Patients of the "
        "held-out site grouped by quintile of predicted risk.",
        "",
    ]
    groups = [
        [site, str(i), str(g["n"]), f"{g['observed']:.3f}", f"{g['mean_probability']:.3f}",
         f"{g['mean_lower']:.3f}-{g['mean_upper']:.3f}", "yes" if g["inside"] else "no"]
        for site, r in result["sites"].items()
        for i, g in enumerate(r["groups"], start=1)
    ]  # fmt: skip
    headers = ["held-out site", "group", "n", "observed rate", "mean probability"]
    lines.append(markdown_table([*headers, "mean interval", "observed inside"], groups))
    inside = [g["inside"] for r in result["sites"].values() for g in r["groups"]]
    lines += [
        "",
        f"Observed rate inside the group's mean interval: {sum(inside)} of {len(inside)} groups.",
        "",
    ]
    widths = [
        [site, f"{_f(r['width_complete'])} ({r['n_complete']})",
         f"{_f(r['width_incomplete'])} ({r['n_incomplete']})",
         _f(r["width_complete_with_tests_hidden"]), f"{r['point_inside_interval']:.2f}"]
        for site, r in result["sites"].items()
    ]  # fmt: skip
    hidden = f"width, complete with {' and '.join(EXPENSIVE_TESTS)} hidden"
    headers = ["held-out site", "width, complete (n)", "width, incomplete (n)", hidden]
    lines.append(markdown_table([*headers, "point estimate inside"], widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--ensemble-size", type=int, default=TrainingConfig().ensemble_size)
    args = parser.parse_args(argv)
    config = TrainingConfig(ensemble_size=args.ensemble_size)
    result = {
        "command": COMMAND,
        "ensemble_size": config.ensemble_size,
        "coverage": DEFAULT_COVERAGE,
        "sites": {site: validate_site(site, config) for site in UCI_SITES},
    }
    write_json_atomic(result, args.output_dir / "intervals.json")
    text = markdown(result)
    write_text_atomic(args.output_dir / "intervals.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
