"""``python -m bench.recipes``: should the served network be trained another way?

Judges a change to how the network is *trained* (not a hyperparameter of the
leave-one-site-out grid) by a rule fixed before the run, on the three UCI sites
pooled, so that no held-out site is ever used to choose:

* every candidate point is scored by repeated stratified 5-fold cross-validation
  on the 720 pooled patients (folds stratified by site and outcome, so every
  fold holds every site), twice with different shuffles, by the log loss of the
  out-of-fold probabilities: the tuning criterion of ``python -m bench.sites``;
* the served recipe's best point is the baseline, the candidate's best point
  the challenger; the challenger is adopted only if its mean log loss is lower
  by more than the largest difference between the two repeats of any point in
  the run (how far one point's figure moves with the shuffle alone).

Per-site ROC AUCs of the out-of-fold probabilities are reported to say *where*
a recipe gains or loses; they are not part of the rule.

The candidate here is ``draws="outcome"`` (:class:`training.missing.MarginalMLPClassifier`):
imputed training values drawn from rows with the same outcome, which removes the
pull of a rarely measured test's learned effect towards zero (docs/sites.md).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from bench.report import command_line, describe, progress, publish
from model.arrays import FloatArray, IntArray
from training.missing import MarginalMLPClassifier
from training.pipeline import library_versions
from training.report import markdown_table
from training.sites import UCI_SITES, load_sites

REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"
BASELINE, CANDIDATE = "marginal", "outcome"
GRID: dict[str, list[Any]] = {"alpha": [3.0, 10.0, 30.0], "mask_rate": [0.2, 0.5]}


def points(grid: dict[str, list[Any]] = GRID) -> list[dict[str, Any]]:
    """Every grid point under each recipe: the served grid, trained both ways."""
    keys = list(grid)
    return [
        {"draws": draws, **dict(zip(keys, values, strict=True))}
        for draws in (BASELINE, CANDIDATE)
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def _fold(
    params: dict[str, Any], x: FloatArray, y: IntArray, train: IntArray, test: IntArray
) -> FloatArray:
    model = MarginalMLPClassifier(**params).fit(x[train], y[train])
    return np.asarray(model.predict_proba(x[test])[:, 1])


def score(
    x: FloatArray,
    y: IntArray,
    site: np.ndarray,
    candidates: list[dict[str, Any]],
    *,
    repeats: int = 2,
    folds: int = 5,
    jobs: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Out-of-fold log loss per repeat, and per-site ROC AUC, of every candidate point."""
    strata = np.array([f"{s}-{o}" for s, o in zip(site, y, strict=True)])
    splits = [
        list(StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(x, strata))
        for r in range(repeats)
    ]
    tasks = [
        (i, r, test, params, train)
        for i, params in enumerate(candidates)
        for r in range(repeats)
        for train, test in splits[r]
    ]
    out = Parallel(n_jobs=jobs)(delayed(_fold)(p, x, y, tr, te) for _, _, te, p, tr in tasks)
    oof = np.full((len(candidates), repeats, y.size), np.nan)
    for (i, r, test, _, _), p in zip(tasks, out, strict=True):
        oof[i, r, test] = p
    rows = []
    for i, params in enumerate(candidates):
        losses = [float(log_loss(y, oof[i, r])) for r in range(repeats)]
        rows.append(
            {
                "params": params,
                "log_loss_repeats": losses,
                "log_loss": float(np.mean(losses)),
                "repeat_spread": float(max(losses) - min(losses)),
                "roc_auc": float(np.mean([roc_auc_score(y, oof[i, r]) for r in range(repeats)])),
                "roc_auc_by_site": {
                    s: float(
                        np.mean(
                            [
                                roc_auc_score(y[site == s], oof[i, r][site == s])
                                for r in range(repeats)
                            ]
                        )
                    )
                    for s in UCI_SITES
                },
            }
        )
    return rows


def decide(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pre-set rule: adopt the candidate only if it beats the baseline by more than noise."""
    best = {
        recipe: min(
            (r for r in rows if r["params"]["draws"] == recipe), key=lambda r: r["log_loss"]
        )
        for recipe in (BASELINE, CANDIDATE)
    }
    gain = best[BASELINE]["log_loss"] - best[CANDIDATE]["log_loss"]
    noise = max(r["repeat_spread"] for r in rows)
    return {
        "baseline": best[BASELINE]["params"],
        "challenger": best[CANDIDATE]["params"],
        "log_loss_gain": gain,
        "noise": noise,
        "adopt": bool(gain > noise),
    }


def markdown(rows: list[dict[str, Any]], decision: dict[str, Any]) -> str:
    """The table of every point and the rule's verdict."""
    table = markdown_table(
        ["draws", "alpha", "mask_rate", "log loss (repeats)", "mean", "ROC AUC", *UCI_SITES],
        [
            [
                r["params"]["draws"],
                f"{r['params']['alpha']:g}",
                f"{r['params']['mask_rate']:g}",
                " / ".join(f"{v:.4f}" for v in r["log_loss_repeats"]),
                f"{r['log_loss']:.4f}",
                f"{r['roc_auc']:.3f}",
                *(f"{r['roc_auc_by_site'][s]:.3f}" for s in UCI_SITES),
            ]
            for r in rows
        ],
    )
    verdict = "adopted" if decision["adopt"] else "not adopted"
    return "\n\n".join(
        [
            "Pooled out-of-fold figures on the three UCI sites (720 patients), 5-fold x 2, "
            "folds stratified by site and outcome. ROC AUC per site: of the out-of-fold "
            "probabilities of that site's patients, mean of the two repeats.",
            table,
            f"Rule: the best `{CANDIDATE}` point must have a log loss lower than the best "
            f"`{BASELINE}` point by more than the largest repeat-to-repeat difference of any "
            f"point ({decision['noise']:.4f}). Best `{BASELINE}`: {decision['baseline']}; best "
            f"`{CANDIDATE}`: {decision['challenger']}; gain {decision['log_loss_gain']:+.4f}: "
            f"**{verdict}**.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.recipes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jobs", type=int, default=1, help="fits run in parallel (same figures)")
    p.add_argument("--repeats", type=int, default=2, help="shuffles of the 5-fold CV")
    p.add_argument("--output", type=Path, default=REPO_RESULTS / "recipes")
    args = p.parse_args(argv)
    pooled = load_sites(UCI_SITES)
    candidates = points()
    progress(f"{len(candidates)} points x {args.repeats} x 5 folds on {pooled.y.size} patients")
    rows = score(pooled.x, pooled.y, pooled.site, candidates, repeats=args.repeats, jobs=args.jobs)
    decision = decide(rows)
    data: dict[str, Any] = {"machine": describe(), "command": command_line("bench.recipes", argv)}
    data |= {"versions": library_versions(), "rows": rows, "decision": decision}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    title = "Training recipes, judged on the pooled sites"
    publish(args.output.stem, title, data, [markdown(rows, decision)], args.output.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
