"""The leave-one-site-out report: JSON (every figure), Markdown (the tables), PNG (the curves).

``python -m bench.sites`` writes ``results/sites.{json,md}``,
``results/sites-reliability.png`` and ``results/sites-decision.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

from training.recalibrate import MIN_CELL
from training.report import write_json_atomic, write_text_atomic

COMMAND = "python -m bench.sites"
#: Wall time of the committed run (``--jobs 2``, 2 cores: 5 min 17 s with the trees under the
#: network's rules, beside another job's tests), rounded up for planning.
MINUTES = 6
NAMES = {"network": "our network", "logistic": "LogisticRegression", "hgb": "HistGradientBoosting"}


def _row(site: str, model: str, f: Mapping[str, Any]) -> str:
    lo, hi = f["roc_auc_95ci"]
    return (
        f"| {site} | {NAMES[model]} | {f['n']} | {f['prevalence']:.2f} | {f['roc_auc']:.3f} "
        f"({lo:.3f}-{hi:.3f}) | {f['brier']:.3f} | {f['calibration_intercept']:.2f} | "
        f"{f['calibration_slope']:.2f} | {f['mean_predicted']:.2f} vs {f['observed']:.2f} | "
        f"{f['statlog_cost_served']:.3f} | {f['min_cost_threshold']:.2f}: "
        f"{f['statlog_cost_min_cost']:.3f} | {f['statlog_cost_treat_all']:.3f} | "
        f"{f['accuracy_served']:.3f} |"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The report as Markdown; every number comes from ``result``."""
    quick = " (**--quick run: reduced protocol, not the committed figures**)" * result["quick"]
    lines = [
        "# Leave-one-site-out validation" + quick,
        "",
        f"Reproduce with `{COMMAND} --jobs 2` (about {MINUTES} minutes on 2 cores; `--jobs` "
        "changes the time, not the figures). Train on two UCI sites, report on the third. "
        "Each model chooses its hyperparameters (grid below, scored by log loss) and its "
        "StatLog-cost-minimising threshold by inner stratified 5-fold CV on the training "
        "sites only; the held-out site is never used to choose anything. "
        "Served threshold: 0.5. Cost: a missed disease costs 5, a false alarm 1, per patient. "
        "ROC AUC intervals: 1000 bootstrap resamples of the held-out site (percentile).",
        "",
        "Missing-value handling:",
        "",
    ]
    for name, how in result["missing_values"].items():
        lines.append(f"- **{NAMES[name]}**: {how}; grid {result['grids'][name]}.")
    lines += [
        "",
        "| held-out site | model | n | prevalence | ROC AUC (95% CI) | Brier | cal. intercept "
        "| cal. slope | mean predicted vs observed | cost at 0.5 | min-cost threshold: cost "
        "| cost, treat all | accuracy at 0.5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site, block in result["leave_one_site_out"].items():
        for model, figures in block["models"].items():
            lines.append(_row(site, model, figures))
    lines += ["", "Complete records (all 13 values) among the held-out patients: "]
    lines[-1] += ", ".join(
        f"{s} {b['complete_records']} of {b['models']['network']['n']}"
        for s, b in result["leave_one_site_out"].items()
    )
    lines += seed_spread_section(result["leave_one_site_out"])
    lines += paired_section(result["leave_one_site_out"])
    lines += withheld_section(result["leave_one_site_out"])
    lines += trees_section(result["leave_one_site_out"])
    lines += subgroup_section(result["leave_one_site_out"])
    lines += ["", "## Pooled 10-fold x 5 cross-validation (three sites, 720 patients)", ""]
    lines += [
        "| model | ROC AUC | Brier | accuracy at 0.5 | cost at 0.5 |",
        "|---|---|---|---|---|",
    ]
    for model, cv in result["pooled_cv"].items():
        lines.append(
            f"| {NAMES[model]} | {cv['roc_auc']['mean']:.3f} +- {cv['roc_auc']['std']:.3f} | "
            f"{cv['brier']['mean']:.3f} | {cv['accuracy']['mean']:.3f} | "
            f"{cv['statlog_cost']['mean']:.3f} |"
        )
    anchor = result["detrano_anchor"]
    lines += [
        "",
        "## Published anchor: Detrano et al. (1989)",
        "",
        "Detrano et al. (Am J Cardiol 1989;64:304-310) fitted a logistic model on Cleveland and "
        "report 77% accuracy in Hungary and 81% in Switzerland. Their cohorts differ a little "
        "from the UCI files (patients were added and removed when the files were made), so "
        "this is an anchor, not a replication. Our network fitted on Cleveland alone "
        f"(hyperparameters by inner CV: {anchor['chosen_hyperparameters']}), accuracy at 0.5:",
        "",
        "| site | ours | Detrano et al. | share with disease |",
        "|---|---|---|---|",
    ]
    for site in ("hungarian", "switzerland"):
        a = anchor[site]
        lines.append(
            f"| {site} | {a['accuracy']:.3f} | {a['published_accuracy']:.2f} | "
            f"{a['share_with_disease']:.2f} |"
        )
    lines += [
        "",
        "## Local recalibration (`heart-train recalibrate`)",
        "",
        "The network of the leave-one-site-out run (it never saw the site) recalibrated on one "
        "stratified half of the site's patients (intercept, slope, and the StatLog-cost threshold "
        "chosen on that half), reported on the other half:",
        "",
        "| site | fitted a, b | when | mean predicted vs observed | cal. intercept | cal. slope "
        "| Brier | threshold: cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for site, d in result["local_recalibration"].items():
        for when in ("before", "after"):
            f = d[when]
            lines.append(
                f"| {site} (n={f['n']}) | {d['intercept']:.2f}, {d['slope']:.2f} | {when} | "
                f"{f['mean_predicted']:.3f} vs {f['observed']:.3f} | "
                f"{f['calibration_intercept']:.2f} | {f['calibration_slope']:.2f} | "
                f"{f['brier']:.3f} | {f['threshold']:.2f}: {f['statlog_cost']:.3f} |"
            )
    lines += recalibration_by_sex_section(result["local_recalibration"])
    lines += repeated_splits_section(result["local_recalibration"])
    served = result["served"]
    cv = served["statlog_cv_complete_records"]
    cv_choice = served["statlog_cv_complete_records_inner_cv_choice"]
    folds = result["leave_one_site_out"]
    chosen = {s: b["models"]["network"]["chosen_hyperparameters"] for s, b in folds.items()}
    same = [s for s, params in chosen.items() if params == served["hyperparameters"]]
    lines += [
        "",
        "## The served configuration",
        "",
        f"`python -m training` trains our network on {', '.join(served['sites'])} with "
        f"{served['hyperparameters']}, the choice of the inner CV in {len(same)} of the "
        f"{len(folds)} leave-one-site-out folds above ({', '.join(same) or 'none'}). "
        "With all 13 values present, its 10x5 CV on Statlog: ROC AUC "
        f"{cv['roc_auc']['mean']:.3f} +- {cv['roc_auc']['std']:.3f}, accuracy "
        f"{cv['accuracy']['mean']:.3f}, Brier {cv['brier']['mean']:.3f}. Inner CV on all three "
        f"sites together prefers {served['inner_cv_choice_on_all_sites']} (by log loss); with it "
        f"the Statlog 10x5 ROC AUC is {cv_choice['roc_auc']['mean']:.3f}. Cost-minimising "
        "threshold on the three sites' out-of-fold predictions (inner CV): "
        f"{served['min_cost_threshold']:.3f}.",
        "",
        "Figures: `sites-reliability.png` (reliability diagrams) and `sites-decision.png` "
        "(net benefit, Vickers & Elkin 2006, against treat-all and treat-none).",
        "",
        "## Issue 9's quality bar, checked against the figures above",
        "",
        *quality_bar(result),
        "",
    ]
    return "\n".join(lines)


AUC_BARS = {"cleveland": 0.87, "hungarian": 0.87, "switzerland": 0.69}
#: How far below the better of LogisticRegression and HistGradientBoosting our network may be.
MARGIN = 0.02


def better_reference(models: Mapping[str, Any]) -> str:
    """Which of LogisticRegression and HistGradientBoosting ranks the held-out site better."""
    return max(("logistic", "hgb"), key=lambda name: float(models[name]["roc_auc"]))


def best_reference(models: Mapping[str, Any]) -> float:
    """The better held-out ROC AUC of LogisticRegression and HistGradientBoosting (seed 0)."""
    return float(models[better_reference(models)]["roc_auc"])


def paired_section(loso: Mapping[str, Any]) -> list[str]:
    """Our network minus each reference on the same patients: is a gap more than patient luck?"""
    if not all("paired_roc_auc_difference" in b for b in loso.values()):
        return []
    counts = {d["draws"] for b in loso.values() for d in b["paired_roc_auc_difference"].values()}
    draws = str(min(counts)) if len(counts) == 1 else f"{min(counts)} to {max(counts)}"
    lines = [
        "",
        "## Paired comparison with the references",
        "",
        "Our network's held-out ROC AUC minus each reference's, on the same patients (seed 0 "
        f"of each). Interval: {draws} bootstrap resamples of the held-out patients, both models "
        "scored on each resample (percentile). The models share the patients, so the interval "
        "of the difference is narrower than the two models' own intervals suggest. The bar "
        f"allows {MARGIN} below the better reference: an interval wholly below -{MARGIN} would "
        "mean the shortfall is more than the luck of which patients a site happened to have.",
        "",
        "| held-out site | reference | difference | paired 95% CI |",
        "|---|---|---|---|",
    ]
    for site, block in loso.items():
        for name, d in block["paired_roc_auc_difference"].items():
            lo, hi = d["95ci"]
            lines.append(
                f"| {site} | {NAMES[name]} | {d['difference']:+.3f} | {lo:+.3f} to {hi:+.3f} |"
            )
    return lines


def _difference(paired: Mapping[str, Any]) -> str:
    """A paired ROC AUC difference and its 95% interval, as one cell."""
    lo, hi = paired["95ci"]
    return f"{paired['difference']:+.3f} ({lo:+.3f} to {hi:+.3f})"


def trees_section(loso: Mapping[str, Any]) -> list[str]:
    """The trees denied the gaps, beside the trees that read them: context for the bar."""
    if not all("trees_under_our_rules" in b for b in loso.values()):
        return []
    first = next(iter(loso.values()))["trees_under_our_rules"]
    lines = [
        "",
        "## Context: the same trees under the network's rules for gaps",
        "",
        "The bar compares our network with HistGradientBoosting reading gaps natively, which "
        "the network may not do (a gap must carry no signal of its own). The same trees, tuned "
        f"the same way but denied the gaps ({first['missing_values']}), say how much of their "
        "figure needs the gaps. Denying them also trains the trees on imputed values, so this "
        "bounds what the gaps give rather than isolating it. Context only: not a reference of "
        "the bar, and nothing is chosen from it. Differences are paired, on the same patients, "
        'with the bootstrap intervals of "Paired comparison with the references".',
        "",
        "| held-out site | ROC AUC (95% CI), trees denied the gaps | both tests withheld "
        "| Brier | cal. slope | native gaps minus these | our network minus these |",
        "|---|---|---|---|---|---|---|",
    ]
    for site, block in loso.items():
        t = block["trees_under_our_rules"]
        lo, hi = t["roc_auc_95ci"]
        d = t["paired_roc_auc_difference"]
        cells = [_difference(d[key]) for key in ("native_gaps_minus_these", "network_minus_these")]
        lines.append(
            f"| {site} | {t['roc_auc']:.3f} ({lo:.3f}-{hi:.3f}) | "
            f"{t['roc_auc_without_expensive_tests']:.3f} | {t['brier']:.3f} | "
            f"{t['calibration_slope']:.2f} | {cells[0]} | {cells[1]} |"
        )
    return lines


def withheld_section(loso: Mapping[str, Any]) -> list[str]:
    """Every model on the same held-out patients with fluoroscopy and thallium scan withheld."""
    if not all("without_expensive_tests" in b for b in loso.values()):
        return []
    names = next(iter(loso.values()))["without_expensive_tests"]["features"]
    tests = " and ".join(f"`{n}`" for n in names)
    lines = [
        "",
        "## Without fluoroscopy and thallium scan",
        "",
        f"Most records outside Cleveland lack {tests}, the results of the two expensive tests. "
        "The same fitted models scored the same held-out patients again with both values "
        "withheld (sent as not measured), as at a hospital that does neither test: what such "
        "a hospital gets, on patients whose outcome is known, and how much of each model's "
        "figure the two tests carry. Where few held-out patients had the tests, little "
        "changes. Nothing is chosen from it. The network's seed column is median (min-max) "
        "over the seed spread's refits; the last column is our network minus that model, "
        "both with the tests withheld, with the paired 95% interval as above.",
        "",
        "| held-out site | patients with the tests | model | ROC AUC as recorded | "
        "both withheld | change | over seeds, withheld | our network minus it, withheld |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for site, block in loso.items():
        info = block["without_expensive_tests"]
        measured = " / ".join(str(info["measured"][n]) for n in names)
        for model, f in block["models"].items():
            w = f["without_expensive_tests"]
            spread = f.get("seed_spread", {}).get("roc_auc_without_expensive_tests")
            seeds = _over_seeds(spread) if model == "network" else ""
            paired = info["paired_roc_auc_difference"].get(model)
            versus = "" if paired is None else _difference(paired)
            lines.append(
                f"| {site} | {measured} of {f['n']} | {NAMES[model]} | {f['roc_auc']:.3f} | "
                f"{w['roc_auc']:.3f} | {w['roc_auc'] - f['roc_auc']:+.3f} | {seeds} | {versus} |"
            )
    return lines


def subgroup_section(loso: Mapping[str, Any]) -> list[str]:
    """Every model's held-out figures for women and men, younger and older patients."""
    if not all("subgroups" in b for b in loso.values()):
        return []
    lines = [
        "",
        "## Subgroups: women and men, younger and older",
        "",
        "The same held-out predictions, per sex and per age group (split at 55, fixed before "
        "any figure was seen; `training/subgroups.py` says why). ROC AUC with a 95% bootstrap "
        "interval for our network; n/a where every patient of the group has the same outcome. "
        "Small groups have wide intervals: read them as a check that no group is failed "
        'outright, not as a ranking. Nothing is chosen from them. The "over seeds" column is our '
        "network refitted with each seed of the seed spread above: median (min-max) of the "
        "group's ROC AUC, so that a group's figure can be read against the seed's noise.",
        "",
        "| held-out site | group | n (diseased) | our network: ROC AUC (95% CI) | "
        "our network over seeds | LogisticRegression | HistGradientBoosting | "
        "our network: mean predicted vs observed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for site, block in loso.items():
        spread = block.get("models", {}).get("network", {}).get("seed_spread", {})
        over_seeds = spread.get("subgroup_roc_auc", {})
        for group, g in block["subgroups"].items():
            if not g["n"]:
                lines.append(f"| {site} | {group} | 0 | n/a | n/a | n/a | n/a | n/a |")
                continue
            m = g["models"]
            net = m["network"]
            ours = _auc(net)
            if net["roc_auc_95ci"] is not None:
                lo, hi = net["roc_auc_95ci"]
                ours += f" ({lo:.3f}-{hi:.3f})"
            lines.append(
                f"| {site} | {group} | {g['n']} ({g['diseased']}) | {ours} | "
                f"{_over_seeds(over_seeds.get(group))} | "
                f"{_auc(m['logistic'])} | {_auc(m['hgb'])} | "
                f"{net['mean_predicted']:.2f} vs {g['observed']:.2f} |"
            )
    return lines


def _over_seeds(aucs: Sequence[float | None] | None) -> str:
    """Median (min-max) of a group's ROC AUC over the seed refits; n/a where there is none."""
    if not aucs or any(a is None for a in aucs):
        return "n/a"
    ordered = sorted(a for a in aucs if a is not None)
    return f"{median(ordered):.3f} ({ordered[0]:.3f}-{ordered[-1]:.3f})"


def _auc(figures: Mapping[str, Any]) -> str:
    return "n/a" if figures["roc_auc"] is None else f"{figures['roc_auc']:.3f}"


def seed_spread_section(loso: Mapping[str, Any]) -> list[str]:
    """How much each held-out ROC AUC moves when only the seed changes."""
    n_seeds = next(iter(loso.values()))["models"]["network"]["seed_spread"]["seeds"]
    lines = [
        "",
        "## Seed spread",
        "",
        f"Each model refitted on the same rows, with the hyperparameters its inner CV chose, "
        f"for seeds 0-{n_seeds - 1} (seed 0 is the model in the table above; "
        "LogisticRegression is left out: its solver draws no random numbers). Nothing is "
        "chosen from this: it says how far a held-out figure moves with the seed alone, so "
        "that a difference between models can be read against it. Last column: the seeds at "
        f"which our network is within {MARGIN} of the better of LogisticRegression and "
        "HistGradientBoosting (seed 0 of each).",
        "",
        f"| held-out site | model | seed 0 | median | min-max | seeds within {MARGIN} |",
        "|---|---|---|---|---|---|",
    ]
    for site, block in loso.items():
        models = block["models"]
        bar = best_reference(models) - MARGIN
        for name, figures in models.items():
            if "seed_spread" not in figures:
                continue
            aucs = sorted(figures["seed_spread"]["roc_auc"])
            within = f"{seeds_meeting(figures, bar)} (bar {bar:.3f})" if name == "network" else ""
            lines.append(
                f"| {site} | {NAMES[name]} | {figures['seed_spread']['roc_auc'][0]:.3f} | "
                f"{median(aucs):.3f} | {aucs[0]:.3f}-{aucs[-1]:.3f} | {within} |"
            )
    return lines


def seeds_meeting(figures: Mapping[str, Any], bar: float) -> str:
    """How many of a model's seed refits reach ``bar``: whether a met bar holds beyond seed 0."""
    aucs = figures["seed_spread"]["roc_auc"]
    return f"{sum(a >= bar for a in aucs)} of {len(aucs)}"


def _notes(block: Mapping[str, Any], bar: float, *, paired: bool = False) -> str:
    """The quality bar's notes on a network figure: how many seeds reach ``bar`` and, for the
    margin to the better reference, the paired interval (empty for a report without them)."""
    notes = []
    if "seed_spread" in block["models"]["network"]:
        notes.append(f"seeds reaching it: {seeds_meeting(block['models']['network'], bar)}")
    if paired and "paired_roc_auc_difference" in block:
        d = block["paired_roc_auc_difference"][better_reference(block["models"])]
        notes.append(f"paired 95% CI {d['95ci'][0]:+.3f} to {d['95ci'][1]:+.3f}")
    return f" ({'; '.join(notes)})" if notes else ""


def _spread(r: Mapping[str, Any]) -> str:
    return (
        f"median {r['median']:+.3f}, 5th-95th percentile {r['p5']:+.3f} to {r['p95']:+.3f}, "
        f"{r['share_within_bar']:.0%} within 0.05"
    )


def recalibration_by_sex_section(demo: Mapping[str, Any]) -> list[str]:
    """The report half's mean risk per sex: what the two refitted numbers cannot move apart."""
    sites = [s for s, d in demo.items() if "by_sex" in d]
    if not sites:
        return []
    lines = [
        "",
        "The same report halves per sex (`heart-train recalibrate` prints this check for a "
        f"hospital's own patients). Unless each sex has {MIN_CELL} patients with and "
        f"{MIN_CELL} without the disease in the half, neither is reported: the other's "
        "figures and the half's would give the small group away.",
        "",
        "| site | sex | n | mean predicted before | after | observed |",
        "|---|---|---|---|---|---|",
    ]
    for site in sites:
        for sex, g in demo[site]["by_sex"].items():
            if g["n"] is None:
                lines.append(f"| {site} | {sex} | not reported | | | |")
                continue
            lines.append(
                f"| {site} | {sex} | {g['n']} | {g['mean_predicted_before']:.3f} | "
                f"{g['mean_predicted_after']:.3f} | {g['observed']:.3f} |"
            )
    return lines


def repeated_splits_section(demo: Mapping[str, Any]) -> list[str]:
    """The recalibration's report-half gap over many splits: one split is one noisy draw."""
    sites = [s for s, d in demo.items() if "repeated_splits" in d]
    if not sites:
        return []
    r0 = demo[sites[0]]["repeated_splits"]
    lines = [
        "",
        "One half split is one draw: the report half's mean predicted risk moves by a few "
        f"hundredths with the split. Over {r0['seeds']} stratified half splits (seeds "
        f"0-{r0['seeds'] - 1}, seed 0 being the split above), each used both ways (fit on A, "
        f"report on B, and the reverse: {r0['n_fits']} fits per site), mean predicted minus "
        "observed on the report half after recalibration, scored through the recalibrated "
        "predictor (what the new artifact serves, marginalisation included):",
        "",
        "| site | fits | median | 5th-95th percentile | share within 0.05 | largest gap on the "
        "fit half |",
        "|---|---|---|---|---|---|",
    ]
    for site in sites:
        r = demo[site]["repeated_splits"]
        lines.append(
            f"| {site} | {r['n_fits']} | {r['median']:+.3f} | {r['p5']:+.3f} to {r['p95']:+.3f} "
            f"| {r['share_within_bar']:.0%} | {r['max_abs_fit_half_gap']:.1e} |"
        )
    lines += [
        "",
        "On the half it was fitted on, the unpenalised logistic fit matches the mean (its "
        "intercept's score equation), so a report-half gap is the difference between the two "
        "halves' patients, not a flaw of the fit.",
    ]
    return lines


def quality_bar(result: Mapping[str, Any]) -> list[str]:
    """Each bar of the issue with the measured figure and whether it is met."""
    loso = result["leave_one_site_out"]
    rows = ["| bar | measured | met |", "|---|---|---|"]

    def add(bar: str, figure: str, met: bool) -> None:
        rows.append(f"| {bar} | {figure} | {'yes' if met else '**no**'} |")

    for site, bar in AUC_BARS.items():
        block = loso[site]
        ours, best = block["models"]["network"]["roc_auc"], best_reference(block["models"])
        add(f"ROC AUC, {site} held out, >= {bar}", f"{ours:.3f}{_notes(block, bar)}", ours >= bar)
        add(
            f"{site}: at most {MARGIN} below the better of LR and HGB ({best:.3f})",
            f"{ours - best:+.3f}{_notes(block, best - MARGIN, paired=True)}",
            ours >= best - MARGIN,
        )
    for site in ("cleveland", "hungarian"):
        slope = loso[site]["models"]["network"]["calibration_slope"]
        add(f"calibration slope, {site}, in 0.7-1.3", f"{slope:.2f}", 0.7 <= slope <= 1.3)
    for site, d in result["local_recalibration"].items():
        after = d["after"]
        gap = after["mean_predicted"] - after["observed"]
        add(
            f"after local recalibration, {site} report half: mean predicted within 0.05 "
            "(one split, seed 0)",
            f"{after['mean_predicted']:.3f} vs {after['observed']:.3f} ({gap:+.3f})",
            abs(gap) <= 0.05,
        )
        if "repeated_splits" in d:
            r = d["repeated_splits"]
            add(
                f"after local recalibration, {site} report half: median gap over "
                f"{r['n_fits']} fits ({r['seeds']} half splits x 2 ways) within 0.05",
                _spread(r),
                abs(r["median"]) <= 0.05,
            )
    cv = result["served"]["statlog_cv_complete_records"]["roc_auc"]
    add(
        "Statlog 10x5 CV ROC AUC, served configuration, all 13 values, >= 0.905",
        f"{cv['mean']:.3f} +- {cv['std']:.3f}",
        cv["mean"] >= 0.905,
    )
    return rows


def _save(fig: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def plot(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Reliability diagrams and decision curves, one panel per held-out site."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    sites = result["leave_one_site_out"]
    written = []
    fig, axes = plt.subplots(1, len(sites), figsize=(5 * len(sites), 4.5), dpi=90)
    for ax, (site, block) in zip(axes, sites.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
        for model, f in block["models"].items():
            bins = f["reliability"]
            ax.plot(
                [b["mean_predicted"] for b in bins],
                [b["observed"] for b in bins],
                marker="o",
                label=f"{NAMES[model]} (slope {f['calibration_slope']:.2f})",
            )
        ax.set(title=f"held out: {site}", xlabel="mean predicted risk", ylabel="observed share")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out_dir / "sites-reliability.png")
    _save(fig, written[-1])
    plt.close(fig)
    fig, axes = plt.subplots(1, len(sites), figsize=(5 * len(sites), 4.5), dpi=90)
    for ax, (site, block) in zip(axes, sites.items(), strict=True):
        curve = block["models"]["network"]["decision_curve"]
        th = curve["thresholds"]
        for model, f in block["models"].items():
            ax.plot(th, f["decision_curve"]["model"], label=NAMES[model])
        ax.plot(th, curve["treat_all"], color="black", ls="--", label="treat all")
        ax.plot(th, curve["treat_none"], color="grey", ls=":", label="treat none")
        prevalence = block["models"]["network"]["prevalence"]
        ax.set(title=f"held out: {site}", xlabel="threshold probability", ylabel="net benefit")
        ax.set_ylim(-0.05, max(0.1, prevalence + 0.05))
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out_dir / "sites-decision.png")
    _save(fig, written[-1])
    plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from training.validation import run

    p = argparse.ArgumentParser(prog=COMMAND, description="Leave-one-site-out validation.")
    p.add_argument("--quick", action="store_true", help="reduced protocol for tests and CI")
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite sites.md and the PNGs from OUTPUT_DIR/sites.json without rerunning",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes running the independent parts side by side (same figures)",
    )
    args = p.parse_args(argv)
    if args.render_only:
        result = json.loads((args.output_dir / "sites.json").read_text(encoding="utf-8"))
    else:
        result = run(quick=args.quick, jobs=args.jobs)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, out / "sites.json")
    write_text_atomic(out / "sites.md", markdown(result))
    pngs = plot(result, out)
    print(f"wrote {out / 'sites.json'}, {out / 'sites.md'}" + "".join(f", {p}" for p in pngs))
    return 0
