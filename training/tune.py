"""``python -m training.tune``: the search behind the default hyperparameters.

Grid search by repeated stratified cross-validation on the *training* split
only (the tutorial's 80 %), scored by ROC AUC with log loss as the tie-break:
both judge the probabilities the service returns, not one threshold. The test
split is never seen, so its figures in the report stay an honest estimate.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold

from model.arrays import FloatArray, IntArray
from model.cli_support import HelpFormatter, add_version
from training.data import load_dataset, split
from training.pipeline import TrainingConfig, make_pipeline

#: The tuning protocol, shared with the comparison's tuned MLPClassifier
#: (training.compare_models) so both searches are judged the same way.
TUNING_FOLDS: Final[int] = 5
TUNING_REPEATS: Final[int] = 3
TUNING_SEED: Final[int] = 0
#: The scorers :func:`ranking` reads.
TUNING_SCORERS: Final[dict[str, str]] = {
    "roc_auc": "roc_auc",
    "neg_log_loss": "neg_log_loss",
    "accuracy": "accuracy",
}

GRID: dict[str, list[Any]] = {
    "network__hidden_units": [4, 8, 16],
    "network__alpha": [0.0, 1.0, 3.0, 10.0, 30.0],
    "network__learning_rate": [0.003, 0.01],
    "network__max_iter": [100, 300],
}


def grid_search(
    estimator: BaseEstimator, grid: dict[str, list[Any]], x: FloatArray, y: IntArray
) -> GridSearchCV:
    """Score every point of ``grid`` by the tuning protocol; rank the result with :func:`ranking`.

    One worker (``n_jobs=1``): the machine is shared with other work.
    """
    cv = RepeatedStratifiedKFold(
        n_splits=TUNING_FOLDS, n_repeats=TUNING_REPEATS, random_state=TUNING_SEED
    )
    search = GridSearchCV(estimator, grid, cv=cv, scoring=TUNING_SCORERS, refit=False, n_jobs=1)
    return search.fit(x, y)


def search() -> GridSearchCV:
    """The search behind our network's defaults, on the training split only."""
    x, y = load_dataset()
    x_train, _, y_train, _ = split(x, y)
    return grid_search(make_pipeline(TrainingConfig()), GRID, x_train, y_train)


def ranking(grid: GridSearchCV, top: int) -> list[dict[str, Any]]:
    res = grid.cv_results_
    order = np.lexsort((-res["mean_test_neg_log_loss"], -res["mean_test_roc_auc"]))
    return [
        {
            "params": {k.split("__", 1)[1]: v for k, v in res["params"][i].items()},
            "roc_auc": float(res["mean_test_roc_auc"][i]),
            "log_loss": float(-res["mean_test_neg_log_loss"][i]),
            "accuracy": float(res["mean_test_accuracy"][i]),
        }
        for i in order[:top]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.tune", description=__doc__, formatter_class=HelpFormatter
    )
    add_version(p)
    p.add_argument("--top", type=int, default=10, help="how many configurations to print")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    best = ranking(search(), args.top)
    if args.json:
        print(json.dumps(best, indent=2))
        return 0
    print("rank  roc_auc  log_loss  accuracy  params")
    for i, row in enumerate(best, start=1):
        print(
            f"{i:>4}  {row['roc_auc']:.4f}   {row['log_loss']:.4f}    {row['accuracy']:.4f}"
            f"    {row['params']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
