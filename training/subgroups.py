"""Does the model rank and calibrate as well for women as for men, for younger as for older?

A risk model that works on average can still fail a group: heart-disease
models have a history of doing worse for women, whose disease presents
differently and who were fewer in the cohorts the models learned from (97 of
303 patients in Cleveland, 81 of 294 in Hungary, 10 of 123 in Switzerland). So
the leave-one-site-out report gives every held-out site's figures per sex and
per age group, for every model. The groups were fixed before any figure was
seen: sex as coded, and age split at 55, a conventional cut near the three
sites' median age (53). Nothing is chosen from these figures; a group where
every patient has the same outcome has no ROC AUC, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from model.arrays import FloatArray, IntArray
from model.features import FEATURE_NAMES
from training.evaluate import bootstrap_auc_interval

AGE_SPLIT: Final[int] = 55
_AGE, _SEX = FEATURE_NAMES.index("age"), FEATURE_NAMES.index("sex")

Group = tuple[str, Callable[[FloatArray], npt.NDArray[np.bool_]]]
#: (name, which rows belong to it); age and sex are never missing in the data.
SEX_GROUPS: Final[tuple[Group, ...]] = (
    ("women", lambda x: x[:, _SEX] == 0),
    ("men", lambda x: x[:, _SEX] == 1),
)
SUBGROUPS: Final[tuple[Group, ...]] = (
    *SEX_GROUPS,
    (f"under {AGE_SPLIT}", lambda x: x[:, _AGE] < AGE_SPLIT),
    (f"{AGE_SPLIT} and over", lambda x: x[:, _AGE] >= AGE_SPLIT),
)


def group_auc(y: IntArray, p: FloatArray) -> float | None:
    """ROC AUC of one group, or None where every patient has the same outcome (no ranking)."""
    return float(roc_auc_score(y, p)) if np.unique(y).size == 2 else None


def subgroup_aucs(x: FloatArray, y: IntArray, p: FloatArray) -> dict[str, float | None]:
    """Per group, the ROC AUC of ``p``: what the seed spread tracks for every refit."""
    return {name: group_auc(y[select(x)], p[select(x)]) for name, select in SUBGROUPS}


def subgroup_figures(
    x: FloatArray,
    y: IntArray,
    probabilities: Mapping[str, FloatArray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per group: size, cases and, per model, ROC AUC (95% bootstrap CI) and mean risk."""
    out: dict[str, Any] = {}
    for name, select in SUBGROUPS:
        rows = select(x)
        yg = y[rows]
        if not yg.size:
            out[name] = {"n": 0, "diseased": 0, "observed": None, "models": {}}
            continue
        models: dict[str, Any] = {}
        both = np.unique(yg).size == 2
        for model, p in probabilities.items():
            pg = p[rows]
            models[model] = {
                "roc_auc": group_auc(yg, pg),
                "roc_auc_95ci": bootstrap_auc_interval(yg, pg, n_boot=n_boot, seed=seed)
                if both
                else None,
                "mean_predicted": float(pg.mean()),
            }
        out[name] = {
            "n": int(rows.sum()),
            "diseased": int(yg.sum()),
            "observed": float(yg.mean()),
            "models": models,
        }
    return out
