"""Subgroup figures: the right patients in each group, and no figure where none exists."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.features import FEATURE_NAMES, N_FEATURES
from training.evaluate import bootstrap_auc_interval
from training.site_report import subgroup_section
from training.subgroups import subgroup_aucs, subgroup_figures

AGE, SEX = FEATURE_NAMES.index("age"), FEATURE_NAMES.index("sex")


def rows(ages: list[float], sexes: list[int]) -> np.ndarray:  # type: ignore[type-arg]
    x = np.full((len(ages), N_FEATURES), 1.0)
    x[:, AGE], x[:, SEX] = ages, sexes
    return x


def test_each_group_holds_its_patients_and_a_one_outcome_group_has_no_auc() -> None:
    # Women all diseased (as in the Swiss file): a ranking within them is undefined.
    x = rows([40, 60, 50, 70, 45, 54, 55, 80], [0, 0, 1, 1, 1, 1, 1, 1])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.6, 0.4, 0.3, 0.95])
    ref = 1.0 - p
    groups = subgroup_figures(x, y, {"network": p, "hgb": ref}, n_boot=200)
    assert list(groups) == ["women", "men", "under 55", "55 and over"]
    women, men = groups["women"], groups["men"]
    assert (women["n"], women["diseased"], women["observed"]) == (2, 2, 1.0)
    assert women["models"]["network"]["roc_auc"] is None
    assert women["models"]["network"]["roc_auc_95ci"] is None
    assert women["models"]["network"]["mean_predicted"] == pytest.approx(0.85)
    # Men: rows 2-7; 54 is under 55 and 55 is not.
    men_rows = slice(2, 8)
    assert (men["n"], men["diseased"]) == (6, 3)
    assert men["models"]["network"]["roc_auc"] == roc_auc_score(y[men_rows], p[men_rows])
    assert men["models"]["hgb"]["roc_auc"] == roc_auc_score(y[men_rows], ref[men_rows])
    # The interval resamples the group's patients, not the site's.
    assert men["models"]["network"]["roc_auc_95ci"] == bootstrap_auc_interval(
        y[men_rows], p[men_rows], n_boot=200
    )
    assert groups["under 55"]["n"] == 4 and groups["55 and over"]["n"] == 4
    young = np.array([40, 60, 50, 70, 45, 54, 55, 80]) < 55
    assert groups["under 55"]["diseased"] == int(y[young].sum())


def test_the_report_table_says_n_a_rather_than_inventing_a_figure() -> None:
    x = rows([40, 60, 50, 70], [0, 0, 1, 1])
    y = np.array([1, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.2, 0.7])
    probabilities = {"network": p, "logistic": p, "hgb": p}
    groups = subgroup_figures(x, y, probabilities, n_boot=50)
    table = [r for r in subgroup_section({"site": {"subgroups": groups}}) if r.startswith("| site")]
    assert table[0] == "| site | women | 2 (2) | n/a | n/a | n/a | n/a | 0.85 vs 1.00 |"
    assert table[1].startswith("| site | men | 2 (1) | 1.000 (")
    assert subgroup_section({"site": {}}) == []  # a report from before subgroups: no section


def test_the_seed_column_gives_each_groups_median_and_range_over_the_refits() -> None:
    x = rows([40, 60, 50, 70, 45, 66], [0, 0, 1, 1, 1, 0])
    y = np.array([1, 0, 0, 1, 1, 1])
    p = np.array([0.9, 0.2, 0.3, 0.7, 0.6, 0.8])
    groups = subgroup_figures(x, y, {"network": p, "logistic": p, "hgb": p}, n_boot=20)
    refits = [p, 1.0 - p, np.array([0.9, 0.2, 0.5, 0.7, 0.3, 0.3])]
    per_seed = [subgroup_aucs(x, y, q) for q in refits]
    assert per_seed[0] == {g: groups[g]["models"]["network"]["roc_auc"] for g in groups}
    spread = {"subgroup_roc_auc": {g: [s[g] for s in per_seed] for g in per_seed[0]}}
    block = {"subgroups": groups, "models": {"network": {"seed_spread": spread}}}
    table = {
        r.split(" | ")[1]: r for r in subgroup_section({"site": block}) if r.startswith("| site")
    }
    men = [s["men"] for s in per_seed]  # rows 2-4: 1.0, 0.0 and 0.5
    assert sorted(men) == [0.0, 0.5, 1.0]
    assert " | 0.500 (0.000-1.000) | " in table["men"]
    women = [s["women"] for s in per_seed]
    assert " | " + f"{np.median(women):.3f} ({min(women):.3f}-{max(women):.3f})" in table["women"]
