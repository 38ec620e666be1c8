"""Calibration figures, net benefit, and the leave-one-site-out command (quick protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.calibration import (
    calibration_intercept_slope,
    logit,
    net_benefit,
    recalibrate,
    reliability_bins,
)
from training.missing import withhold
from training.site_report import main as sites_main
from training.site_report import (
    markdown,
    paired_section,
    quality_bar,
    recalibration_by_sex_section,
    seed_spread_section,
    seeds_meeting,
    trees_section,
    withheld_section,
)
from training.sites import UCI_SITES, load_sites
from training.validation import paired_auc_difference, site_figures


def synthetic(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    return (rng.random(n) < p).astype(np.int64), p


def test_calibration_of_calibrated_and_distorted_predictions() -> None:
    y, p = synthetic()
    a, b = calibration_intercept_slope(y, p)
    assert abs(a) < 0.08 and abs(b - 1.0) < 0.05
    too_extreme = 1.0 / (1.0 + np.exp(-2.0 * logit(p)))
    assert calibration_intercept_slope(y, too_extreme)[1] == pytest.approx(0.5, abs=0.03)
    too_low = recalibrate(p, -1.0, 1.0)
    a_low, b_low = calibration_intercept_slope(y, too_low)
    assert a_low == pytest.approx(1.0, abs=0.08) and b_low == pytest.approx(1.0, abs=0.05)


def test_reliability_bins_average_within_each_bin() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.08, 0.55, 0.52, 0.99])
    bins = reliability_bins(y, p)
    assert [b["n"] for b in bins] == [2, 2, 1]
    assert bins[0]["observed"] == 0.5 and bins[0]["mean_predicted"] == pytest.approx(0.065)
    assert bins[2]["low"] == pytest.approx(0.9) and bins[2]["observed"] == 1.0


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    nb = net_benefit(y, p, [0.25, 0.5])
    # t = 0.25: treated 0.9, 0.4, 0.6 -> TP 2, FP 1 -> 2/5 - 1/5 * (1/3)
    assert nb["model"][0] == pytest.approx(0.4 - 0.2 / 3)
    # t = 0.5: treated 0.9, 0.6 -> TP 1, FP 1 -> 1/5 - 1/5 * 1
    assert nb["model"][1] == pytest.approx(0.0)
    assert nb["treat_all"][0] == pytest.approx(0.4 - 0.6 / 3)
    assert nb["treat_none"] == [0.0, 0.0]


def test_seed_spread_counts_the_seeds_that_reach_the_bar() -> None:
    def fig(aucs: list[float] | None, auc: float) -> dict[str, Any]:
        f: dict[str, Any] = {"roc_auc": auc}
        if aucs is not None:
            f["seed_spread"] = {"seeds": len(aucs), "roc_auc": aucs}
        return f

    loso = {
        "site": {
            "models": {
                "network": fig([0.80, 0.70, 0.85, 0.79], 0.80),
                "logistic": fig(None, 0.75),
                "hgb": fig([0.81] * 4, 0.81),
            }
        }
    }
    rows = [r for r in seed_spread_section(loso) if r.startswith("| site")]
    # Bar 0.81 - 0.02 = 0.79: reached by 0.80, 0.85 and 0.79, not by 0.70.
    assert rows[0] == "| site | our network | 0.800 | 0.795 | 0.700-0.850 | 3 of 4 (bar 0.790) |"
    assert rows[1] == "| site | HistGradientBoosting | 0.810 | 0.810 | 0.810-0.810 |  |"
    assert len(rows) == 2  # LogisticRegression has no spread
    assert seeds_meeting(loso["site"]["models"]["network"], 0.851) == "0 of 4"


def test_withhold_blanks_the_two_expensive_tests_in_a_copy() -> None:
    x = load_sites(["cleveland"]).x[:5]
    before = x.copy()
    out = withhold(x)
    np.testing.assert_array_equal(x, before)  # the caller's rows are left alone
    assert np.isnan(out[:, [11, 12]]).all()  # num_major_vessels, thal
    np.testing.assert_array_equal(out[:, :11], x[:, :11])


def test_withheld_table_gives_each_model_its_change_and_our_network_its_seeds() -> None:
    def fig(auc: float, withheld: float, spread: list[float] | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"roc_auc": auc, "n": 303}
        f["without_expensive_tests"] = {"roc_auc": withheld, "mean_predicted": 0.5}
        if spread is not None:
            f["seed_spread"] = {"roc_auc_without_expensive_tests": spread}
        return f

    paired = {"difference": -0.013, "95ci": [-0.04, 0.01], "draws": 1000}
    loso = {
        "site": {
            "models": {
                "network": fig(0.870, 0.867, [0.86, 0.87, 0.85]),
                "hgb": fig(0.893, 0.880),
            },
            "without_expensive_tests": {
                "features": ["num_major_vessels", "thal"],
                "measured": {"num_major_vessels": 299, "thal": 301},
                "paired_roc_auc_difference": {"hgb": paired},
            },
        }
    }
    rows = [r for r in withheld_section(loso) if r.startswith("| site")]
    assert rows == [
        "| site | 299 / 301 of 303 | our network | 0.870 | 0.867 | -0.003 | "
        "0.860 (0.850-0.870) |  |",
        "| site | 299 / 301 of 303 | HistGradientBoosting | 0.893 | 0.880 | -0.013 |  | "
        "-0.013 (-0.040 to +0.010) |",
    ]
    assert withheld_section({"site": {"models": {}}}) == []  # an older report has no such block


def test_paired_difference_keeps_the_shared_patient_luck_out() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    # A reference that sees the same signal plus noise of its own: the two models' own
    # intervals overlap, but on the same patients one is better on nearly every resample.
    p = y + rng.normal(0.0, 0.6, y.size)
    p_ref = p + rng.normal(0.0, 0.7, y.size)
    own = [
        site_figures(y, sigmoid, 0.5, n_boot=500)["roc_auc_95ci"]
        for sigmoid in (1.0 / (1.0 + np.exp(-p)), 1.0 / (1.0 + np.exp(-p_ref)))
    ]
    assert own[1][1] > own[0][0]  # the separate intervals overlap
    d = paired_auc_difference(y, p, p_ref, n_boot=500)
    assert d["difference"] == pytest.approx(roc_auc_score(y, p) - roc_auc_score(y, p_ref))
    lo, hi = d["95ci"]
    assert 0.0 < lo < d["difference"] < hi and d["draws"] == 500
    same = paired_auc_difference(y, p, p.copy(), n_boot=50)
    assert same["difference"] == 0.0 and same["95ci"] == [0.0, 0.0]


def test_quality_bar_quotes_the_paired_interval_of_the_better_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fig(auc: float) -> dict[str, Any]:
        spread = {"seeds": 2, "roc_auc": [auc, auc + 0.015]}
        return {"roc_auc": auc, "calibration_slope": 1.0, "seed_spread": spread}

    block = {
        "models": {"network": fig(0.86), "logistic": {"roc_auc": 0.84}, "hgb": fig(0.89)},
        "paired_roc_auc_difference": {
            "logistic": {"difference": 0.02, "95ci": [-0.01, 0.05], "draws": 10},
            "hgb": {"difference": -0.03, "95ci": [-0.06, 0.004], "draws": 10},
        },
    }
    result = {
        "leave_one_site_out": {"cleveland": block, "hungarian": block},
        "local_recalibration": {},
        "served": {"statlog_cv_complete_records": {"roc_auc": {"mean": 0.91, "std": 0.05}}},
    }
    monkeypatch.setattr("training.site_report.AUC_BARS", {"cleveland": 0.87})
    rows = quality_bar(result)
    assert (
        rows[2]
        == "| ROC AUC, cleveland held out, >= 0.87 | 0.860 (seeds reaching it: 1 of 2) | **no** |"
    )
    assert rows[3] == (
        "| cleveland: at most 0.02 below the better of LR and HGB (0.890) | -0.030 "
        "(seeds reaching it: 1 of 2; paired 95% CI -0.060 to +0.004) | **no** |"
    )
    table = [r for r in paired_section({"cleveland": block}) if r.startswith("| cleveland")]
    assert table == [
        "| cleveland | LogisticRegression | +0.020 | -0.010 to +0.050 |",
        "| cleveland | HistGradientBoosting | -0.030 | -0.060 to +0.004 |",
    ]


def test_trees_table_gives_both_paired_differences() -> None:
    def paired(d: float, lo: float, hi: float) -> dict[str, Any]:
        return {"difference": d, "95ci": [lo, hi], "draws": 1000}

    block = {
        "missing_values": "the network's rules",
        "roc_auc": 0.871,
        "roc_auc_95ci": [0.83, 0.91],
        "roc_auc_without_expensive_tests": 0.862,
        "brier": 0.152,
        "calibration_slope": 1.1,
        "paired_roc_auc_difference": {
            "native_gaps_minus_these": paired(0.022, 0.001, 0.04),
            "network_minus_these": paired(-0.001, -0.02, 0.02),
        },
    }
    lines = trees_section({"site": {"trees_under_our_rules": block}})
    assert "(the network's rules)" in " ".join(lines)
    rows = [r for r in lines if r.startswith("| site")]
    assert rows == [
        "| site | 0.871 (0.830-0.910) | 0.862 | 0.152 | 1.10 | +0.022 (+0.001 to +0.040) | "
        "-0.001 (-0.020 to +0.020) |"
    ]
    assert trees_section({"site": {"models": {}}}) == []  # an older report has no such block


def test_the_trees_denied_the_gaps_learn_from_the_training_sites_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Their search sees the other two sites' rows, at the network's mask rate; the held-out
    site is only scored."""
    from training import validation

    pooled = load_sites(UCI_SITES)
    real_tune = validation.tune
    seen: list[tuple[Any, np.ndarray]] = []

    def recording(spec: Any, x: np.ndarray, y: np.ndarray, **kw: Any) -> Any:
        seen.append((spec.make(), x))
        return real_tune(spec, x, y, **kw)

    monkeypatch.setattr(validation, "tune", recording)
    held = pooled.site == "cleveland"
    rng = np.random.default_rng(0)
    guesses = {name: rng.random(int(held.sum())) for name in ("network", "hgb")}
    block = validation.trees_under_our_rules(
        pooled, "cleveland", guesses, mask_rate=0.5, quick=True, n_boot=20
    )
    ((model, x),) = seen
    assert model.mask_rate == 0.5 == block["mask_rate"]
    np.testing.assert_array_equal(x, pooled.x[~held])


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    import json

    out = tmp_path_factory.mktemp("sites")
    assert sites_main(["--quick", "--output-dir", str(out)]) == 0
    return out, json.loads((out / "sites.json").read_text())


@pytest.mark.slow
def test_quick_validation_reports_every_figure(quick_report: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick_report
    assert result["quick"] is True
    pooled = load_sites(UCI_SITES)
    for held in UCI_SITES:
        block = result["leave_one_site_out"][held]
        assert held not in block["trained_on"] and len(block["trained_on"]) == 2
        for model in ("network", "logistic", "hgb"):
            f = block["models"][model]
            assert f["n"] == result["sites"][held]["n"]
            lo, hi = f["roc_auc_95ci"]
            assert 0.0 < lo <= f["roc_auc"] <= hi <= 1.0
            assert 0.0 < f["min_cost_threshold"] < 1.0
            for key in ("brier", "calibration_slope", "statlog_cost_served", "accuracy_served"):
                assert np.isfinite(f[key])
            assert len(f["decision_curve"]["model"]) == len(f["decision_curve"]["thresholds"])
        # Seed 0 of the spread is the reported model refitted: the same figure, exactly.
        for model in ("network", "hgb"):
            spread = block["models"][model]["seed_spread"]
            assert spread["seeds"] == len(spread["roc_auc"]) == 3
            assert spread["roc_auc"][0] == block["models"][model]["roc_auc"]
        assert "seed_spread" not in block["models"]["logistic"]
        groups = block["subgroups"]
        # ...and so are its subgroup figures, group by group.
        by_seed = block["models"]["network"]["seed_spread"]["subgroup_roc_auc"]
        assert list(by_seed) == list(groups)
        for name, aucs in by_seed.items():
            assert len(aucs) == 3
            assert aucs[0] == groups[name]["models"]["network"]["roc_auc"]
        # The tests withheld: every model scored again, our network also at every seed.
        withheld = block["without_expensive_tests"]
        for model in ("network", "logistic", "hgb"):
            assert 0.0 < block["models"][model]["without_expensive_tests"]["roc_auc"] < 1.0
        spread = block["models"]["network"]["seed_spread"]["roc_auc_without_expensive_tests"]
        assert len(spread) == 3
        assert spread[0] == block["models"]["network"]["without_expensive_tests"]["roc_auc"]
        for ref in ("logistic", "hgb"):
            d = withheld["paired_roc_auc_difference"][ref]
            ours = block["models"]["network"]["without_expensive_tests"]["roc_auc"]
            theirs = block["models"][ref]["without_expensive_tests"]["roc_auc"]
            assert d["difference"] == pytest.approx(ours - theirs, abs=1e-12)
        n = result["sites"][held]["n"]
        rows = pooled.x[pooled.site == held]
        assert withheld["measured"] == {
            "num_major_vessels": int((~np.isnan(rows[:, 11])).sum()),
            "thal": int((~np.isnan(rows[:, 12])).sum()),
        }
        # The trees denied the gaps: paired with both, on the same patients.
        trees = block["trees_under_our_rules"]
        lo, hi = trees["roc_auc_95ci"]
        assert 0.0 < lo <= trees["roc_auc"] <= hi <= 1.0
        assert 0.0 < trees["roc_auc_without_expensive_tests"] < 1.0
        for key, model in (("network_minus_these", "network"), ("native_gaps_minus_these", "hgb")):
            d = trees["paired_roc_auc_difference"][key]
            expected = block["models"][model]["roc_auc"] - trees["roc_auc"]
            assert d["difference"] == pytest.approx(expected, abs=1e-12)
        assert groups["women"]["n"] + groups["men"]["n"] == n
        assert groups["under 55"]["n"] + groups["55 and over"]["n"] == n
        for ref in ("logistic", "hgb"):
            paired = block["paired_roc_auc_difference"][ref]
            net_auc, ref_auc = (
                block["models"]["network"]["roc_auc"],
                block["models"][ref]["roc_auc"],
            )
            assert paired["difference"] == pytest.approx(net_auc - ref_auc, abs=1e-12)
            assert paired["95ci"][0] < paired["95ci"][1] and paired["draws"] > 0
    for site in ("hungarian", "switzerland"):
        demo = result["local_recalibration"][site]
        assert demo["fit_half_n"] + demo["report_half_n"] == result["sites"][site]["n"]
        repeated = demo["repeated_splits"]
        assert repeated["n_fits"] == 2 * repeated["seeds"] == len(repeated["report_half_gaps"])
        after = demo["after"]
        gap0 = after["mean_predicted"] - after["observed"]
        assert repeated["report_half_gaps"][0] == pytest.approx(gap0, abs=1e-9)
        # Both sexes or neither: one alone would give the other away by subtraction.
        sizes = [g["n"] for g in demo["by_sex"].values()]
        assert sizes == [None, None] or sum(sizes) == demo["report_half_n"]
    text = (out / "sites.md").read_text()
    assert text == markdown(result) and "--quick run" in text
    assert "Detrano" in text and "Pooled 10-fold" in text
    assert "median gap over 40 fits (20 half splits x 2 ways)" in text
    assert "## Seed spread" in text and "seeds 0-2" in text
    assert "(seeds reaching it: " in text  # the quality bar says how many seeds meet it
    assert "## Paired comparison with the references" in text and "; paired 95% CI " in text
    assert "## Subgroups: women and men, younger and older" in text
    assert "## Without fluoroscopy and thallium scan" in text
    assert "## Context: the same trees under the network's rules for gaps" in text
    assert "The same report halves per sex" in text
    for png in ("sites-reliability.png", "sites-decision.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recalibration_by_sex_table_leaves_small_groups_out() -> None:
    demo = {
        "switzerland": {
            "by_sex": {
                "women": {"n": None, "note": "not reported"},
                "men": {"n": None, "note": "not reported"},
            }
        },
        "hungarian": {
            "by_sex": {
                "women": {
                    "n": 39,
                    "observed": 0.18,
                    "mean_predicted_before": 0.28,
                    "mean_predicted_after": 0.126,
                },
            }
        },
    }
    rows = [r for r in recalibration_by_sex_section(demo) if r.startswith("| ")][1:]
    assert rows == [
        "| switzerland | women | not reported | | | |",
        "| switzerland | men | not reported | | | |",
        "| hungarian | women | 39 | 0.280 | 0.126 | 0.180 |",
    ]
    assert recalibration_by_sex_section({"hungarian": {}}) == []
