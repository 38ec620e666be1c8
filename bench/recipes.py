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
  the run (how far one point's figure moves with the shuffle alone). That bar is
  taken over the points of the run, so ``--question`` alone can move it: the
  committed report asks every question.

Per-site ROC AUCs of the out-of-fold probabilities are reported to say *where*
a recipe gains or loses; they are not part of the rule. So are, on the same
folds, ``bench.sites``' two references (HistGradientBoosting with its native
missing values, LogisticRegression with median imputation), tuned on each
fold's training rows as there: context, never candidates. In the pooled CV a
site's missingness pattern is seen in training, so a model that reads gaps
(the trees do) can gain here what it could not at a held-out site; the same
trees under the network's rules for gaps (:class:`training.missing.MarginalTrees`) say how much.

The served grid is the baseline of every question; each question is one group
of challengers (:data:`QUESTIONS`), judged on its own:

* ``outcome draws``: ``draws="outcome"`` (:class:`training.missing.MarginalMLPClassifier`),
  imputed training values drawn from rows with the same outcome, meant to remove
  the pull of a rarely measured test's learned effect towards zero;
* ``beyond the corner``: inner CV picks the grid's corner (``alpha=3``,
  ``mask_rate=0.2``), so are the points past it better?
* ``more capacity``: 16 hidden units per network, or four averaged networks;
* ``distilled from the trees``: ``distill`` 0.5 or 1, each imputed copy labelled
  (partly or wholly) by the boosted trees fitted on the same rows, cross-fitted.

docs/sites.md says what each verdict means for the served model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from bench.report import command_line, describe, progress, publish
from model.arrays import FloatArray, IntArray
from training.missing import MarginalMLPClassifier
from training.pipeline import library_versions
from training.report import markdown_table
from training.sites import UCI_SITES, load_sites
from training.validation import MODELS, TREES_UNDER_OUR_RULES, ModelSpec, tune

REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"
BASELINE = "served grid"
#: The network's grid in ``python -m bench.sites``, and the point the service is trained at.
GRID: dict[str, list[Any]] = {
    k: list(v) for k, v in next(m for m in MODELS if m.name == "network").grid.items()
}
SERVED_POINT: dict[str, Any] = {k: MarginalMLPClassifier().get_params()[k] for k in GRID}
#: Each question's challengers: MarginalMLPClassifier parameters.
QUESTIONS: dict[str, list[dict[str, Any]]] = {
    "outcome draws": [
        {"draws": "outcome", "alpha": a, "mask_rate": m}
        for a in GRID["alpha"]
        for m in GRID["mask_rate"]
    ],
    "beyond the corner": [
        {"alpha": 1.0, "mask_rate": 0.0},
        {"alpha": 1.0, "mask_rate": 0.1},
        {"alpha": 1.0, "mask_rate": 0.2},
        {"alpha": 3.0, "mask_rate": 0.0},
        {"alpha": 3.0, "mask_rate": 0.1},
    ],
    "distilled from the trees": [
        {"distill": d, "alpha": a, "mask_rate": m}
        for d in (0.5, 1.0)
        for a in GRID["alpha"]
        for m in GRID["mask_rate"]
    ],
    "more capacity": [
        SERVED_POINT | {"hidden_units": 16},
        SERVED_POINT | {"n_networks": 4},
    ],
}


#: Scored on the same folds to put the network's figures in context; never candidates, and
#: outside the rule's noise bar (which is the network points' own).
REFERENCE = "reference"
REFERENCES: list[dict[str, Any]] = [
    {"model": "hgb"},
    {"model": "hgb-marginal"},
    {"model": "logistic"},
]


def points(questions: Sequence[str] = tuple(QUESTIONS)) -> list[tuple[str, dict[str, Any]]]:
    """The served grid, every challenger of the asked questions, then the references."""
    served = [
        (BASELINE, {"alpha": a, "mask_rate": m}) for a in GRID["alpha"] for m in GRID["mask_rate"]
    ]
    asked = [(q, params) for q in questions for params in QUESTIONS[q]]
    return served + asked + [(REFERENCE, params) for params in REFERENCES]


#: How each reference is built and tuned: bench.sites' own two, and the trees under the
#: network's rules for gaps.
_REFERENCE_MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (*MODELS, TREES_UNDER_OUR_RULES) if spec.name != "network"
}


def _fold(
    params: dict[str, Any], x: FloatArray, y: IntArray, train: IntArray, test: IntArray
) -> FloatArray:
    model: BaseEstimator
    if "model" in params:  # a reference, tuned on the fold's training rows as bench.sites does
        model, _ = tune(_REFERENCE_MODELS[params["model"]], x[train], y[train])
    else:
        model = MarginalMLPClassifier(**params).fit(x[train], y[train])
    return np.asarray(model.predict_proba(x[test])[:, 1])


def score(
    x: FloatArray,
    y: IntArray,
    site: np.ndarray,
    candidates: list[tuple[str, dict[str, Any]]],
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
        for i, (_, params) in enumerate(candidates)
        for r in range(repeats)
        for train, test in splits[r]
    ]
    out = Parallel(n_jobs=jobs)(delayed(_fold)(p, x, y, tr, te) for _, _, te, p, tr in tasks)
    oof = np.full((len(candidates), repeats, y.size), np.nan)
    for (i, r, test, _, _), p in zip(tasks, out, strict=True):
        oof[i, r, test] = p
    rows = []
    for i, (group, params) in enumerate(candidates):
        losses = [float(log_loss(y, oof[i, r])) for r in range(repeats)]
        rows.append(
            {
                "group": group,
                "params": params,
                "log_loss_repeats": losses,
                "log_loss": float(np.mean(losses)),
                "repeat_spread": float(max(losses) - min(losses)),
                "roc_auc": _mean_auc(y, oof[i]),
                "roc_auc_by_site": {
                    s: _mean_auc(y[site == s], oof[i][:, site == s]) for s in UCI_SITES
                },
            }
        )
    return rows


def _mean_auc(y: IntArray, repeats: FloatArray) -> float:
    """ROC AUC of each repeat's out-of-fold probabilities (one row each), averaged."""
    return float(np.mean([roc_auc_score(y, p) for p in repeats]))


def _noise(rows: list[dict[str, Any]]) -> float:
    """The rule's bar: the largest repeat-to-repeat spread of any network point."""
    return max(float(r["repeat_spread"]) for r in rows if r["group"] != REFERENCE)


def decide(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pre-set rule, per question: adopt only what beats the served grid by more than noise."""
    noise = _noise(rows)
    rows = [r for r in rows if r["group"] != REFERENCE]

    def best(group: str) -> dict[str, Any]:
        return min((r for r in rows if r["group"] == group), key=lambda r: r["log_loss"])

    baseline = best(BASELINE)
    verdicts = {}
    for group in dict.fromkeys(r["group"] for r in rows if r["group"] != BASELINE):
        challenger = best(group)
        gain = baseline["log_loss"] - challenger["log_loss"]
        verdicts[group] = {
            "baseline": baseline["params"],
            "challenger": challenger["params"],
            "log_loss_gain": gain,
            "noise": noise,
            "adopt": bool(gain > noise),
        }
    return verdicts


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def markdown(rows: list[dict[str, Any]], verdicts: dict[str, dict[str, Any]]) -> str:
    """The table of every point and each question's verdict."""
    table = markdown_table(
        ["group", "parameters", "log loss (repeats)", "mean", "ROC AUC", *UCI_SITES],
        [
            [
                r["group"],
                _shown(r["params"]),
                " / ".join(f"{v:.4f}" for v in r["log_loss_repeats"]),
                f"{r['log_loss']:.4f}",
                f"{r['roc_auc']:.3f}",
                *(f"{r['roc_auc_by_site'][s]:.3f}" for s in UCI_SITES),
            ]
            for r in rows
        ],
    )
    noise = _noise(rows)
    lines = [
        f"- **{group}**: best {_shown(v['challenger'])}, log loss "
        f"{'lower' if v['log_loss_gain'] > 0 else 'higher'} by {abs(v['log_loss_gain']):.4f} "
        f"than the served grid's best ({_shown(v['baseline'])}): "
        f"**{'adopted' if v['adopt'] else 'not adopted'}**"
        for group, v in verdicts.items()
    ]
    return "\n\n".join(
        [
            "Pooled out-of-fold figures on the three UCI sites (720 patients), 5-fold x 2, "
            "folds stratified by site and outcome. ROC AUC per site: of the out-of-fold "
            "probabilities of that site's patients, mean of the two repeats.",
            table,
            "Rule: a question's best point is adopted only if its log loss is lower than the "
            "served grid's best by more than the largest repeat-to-repeat difference of any "
            f"point ({noise:.4f}).",
            "\n".join(lines),
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
    p.add_argument(
        "--question", action="append", choices=list(QUESTIONS), help="ask only these (repeatable)"
    )
    p.add_argument("--output", type=Path, default=REPO_RESULTS / "recipes")
    args = p.parse_args(argv)
    data: dict[str, Any] = {"machine": describe(), "command": command_line("bench.recipes", argv)}
    pooled = load_sites(UCI_SITES)
    candidates = points(args.question or tuple(QUESTIONS))
    progress(f"{len(candidates)} points x {args.repeats} x 5 folds on {pooled.y.size} patients")
    started = time.perf_counter()
    rows = score(pooled.x, pooled.y, pooled.site, candidates, repeats=args.repeats, jobs=args.jobs)
    seconds = time.perf_counter() - started
    verdicts = decide(rows)
    data |= {"versions": library_versions(), "rows": rows, "verdicts": verdicts}
    data["seconds"] = seconds
    args.output.parent.mkdir(parents=True, exist_ok=True)
    title = "Training recipes, judged on the pooled sites"
    publish(
        args.output.stem,
        title,
        data,
        [f"- took {seconds:.0f} s with --jobs {args.jobs}", markdown(rows, verdicts)],
        args.output.parent,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
