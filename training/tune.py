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
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold

from training.data import load_dataset, split
from training.pipeline import TrainingConfig, make_pipeline

GRID: dict[str, list[Any]] = {
    "network__hidden_units": [4, 8, 16],
    "network__alpha": [0.0, 1.0, 3.0, 10.0, 30.0],
    "network__learning_rate": [0.003, 0.01],
    "network__max_iter": [100, 300],
}


def search(n_splits: int = 5, n_repeats: int = 3, random_state: int = 0) -> GridSearchCV:
    x, y = load_dataset()
    x_train, _, y_train, _ = split(x, y)
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=random_state)
    grid = GridSearchCV(
        make_pipeline(TrainingConfig()),
        GRID,
        cv=cv,
        scoring={"roc_auc": "roc_auc", "neg_log_loss": "neg_log_loss", "accuracy": "accuracy"},
        refit=False,
        n_jobs=1,
    )
    return grid.fit(x_train, y_train)


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
    p = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__)
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
