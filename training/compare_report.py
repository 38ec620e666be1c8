"""Turning a comparison result (the JSON document) into the terminal table and Markdown.

Everything here reads only the JSON-ready dict, so the Markdown committed
in ``results/`` and the README can always be regenerated from
``comparison.json`` alone, and tests can check all three agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from model.atomic import write_text_atomic

README_BEGIN: Final[str] = "<!-- comparison-table:begin (python -m training.compare --readme) -->"
README_END: Final[str] = "<!-- comparison-table:end -->"
HEADERS: Final[tuple[str, ...]] = (
    "Model",
    "Seeds",
    "Train acc %",
    "Test acc %: mean ± std [min-max]",
    "CV acc %",
    "CV ROC AUC",
    "StatLog cost: test / CV",
    "Agrees with LR (test) %",
    "Fit ms (x LR)",
    "Predict µs/row (x LR)",
)
DASH: Final[str] = "-"


def _pct(s: dict[str, float], *, with_range: bool = False) -> str:
    text = f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    if with_range:
        text += f" [{100 * s['min']:.1f}-{100 * s['max']:.1f}]"
    return text


def _timing(seconds: float, unit: float, ratio: float | None) -> str:
    value = seconds * unit
    text = f"{value:.0f}" if value >= 10 else f"{value:.2g}"
    if ratio is None:
        return text
    return text + (f" (x{ratio:.0f})" if ratio >= 10 else f" (x{ratio:.2g})")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in result["models"]:
        label = m["label"] + (f" **{m['badge']}**" if m.get("badge") else "")
        if m["status"] != "ok":
            rows.append([label, _status_text(m), *[DASH] * (len(HEADERS) - 2)])
            continue
        cv, test, timing = m["cross_validation"], m["test"], m["timing"]
        seeds = str(len(m["seeds"])) if m["seed_dependent"] else "1 (deterministic)"
        rows.append(
            [
                label,
                seeds,
                _pct(m["train"]["accuracy"]),
                _pct(test["accuracy"], with_range=m["seed_dependent"]),
                _pct(cv["accuracy"]),
                f"{cv['roc_auc']['mean']:.3f} ± {cv['roc_auc']['std']:.3f}",
                f"{test['statlog_cost']['mean']:.2f} / "
                f"{cv['statlog_cost']['mean']:.2f} ± {cv['statlog_cost']['std']:.2f}",
                f"{100 * m['agreement_with_reference']['mean']:.0f}",
                _timing(timing["fit_seconds_median"], 1e3, timing.get("fit_ratio_to_reference")),
                _timing(
                    timing["predict_seconds_per_row_median"],
                    1e6,
                    timing.get("predict_ratio_to_reference"),
                ),
            ]
        )
    return rows


def _status_text(m: dict[str, Any]) -> str:
    message: str = m["message"]
    return message if message.startswith(m["status"]) else f"{m['status']}: {message}"


def notes(result: dict[str, Any]) -> list[str]:
    """One line per model that has something to say: its note, its status, its warnings."""
    out = []
    for m in result["models"]:
        parts = []
        if m["status"] != "ok":
            parts.append(_status_text(m))
        if m["note"]:
            parts.append(m["note"])
        linear = m.get("linear_equivalent")
        if linear:
            text = (
                "measured: its probabilities equal sigmoid(x.w + b) with w = W1.W2 to within "
                f"{linear['max_abs_probability_difference']:.1g}"
            )
            cosine = linear.get("cosine_with_reference_coefficients")
            if cosine:
                text += (
                    f", and w points the same way as LogisticRegression's coefficients "
                    f"(cosine similarity {cosine['mean']:.3f}, min {cosine['min']:.3f})"
                )
            parts.append(text)
        warned = [w for w in m.get("warnings", []) if w.startswith("ConvergenceWarning")]
        if warned:
            parts.append("did not converge within its iteration budget (ConvergenceWarning)")
        if parts:
            out.append(f"**{m['label']}**: " + "; ".join(parts) + ".")
    return out


def facts(result: dict[str, Any]) -> list[str]:
    """The protocol, and the sizes that tell how far to trust a single figure."""
    p = result["protocol"]
    split, cv = p["split"], p["cross_validation"]
    point = p["one_test_patient_in_accuracy_points"]
    seed_models = [m for m in result["models"] if m["status"] == "ok" and m["seed_dependent"]]
    lines = [
        f"Split: `{split['function']}` (stratified, test_size {split['test_size']}, "
        f"random_state {split['random_state']}): {split['n_train']} training and "
        f"{split['n_test']} test patients. **One test patient is {point:.2f} accuracy "
        "points**, so the test column is mean ± std [min-max] over the seeds, never one run.",
        f"Seeds {', '.join(map(str, p['seeds']))} for every seed-dependent model on the split; "
        f"in cross-validation {cv['model_seeds']}.",
        f"Cross-validation: `{cv['function']}`, {cv['n_splits']}-fold x {cv['n_repeats']} "
        f"repeated stratified on {cv['data']} (random_state {cv['random_state']}), identical "
        "folds for every model.",
        f"Scaler: {p['scaler']}. Decision threshold {p['threshold']}. StatLog cost: a missed "
        "disease costs 5, a false alarm 1, averaged over patients.",
    ]
    if seed_models:
        stds = [100 * m["test"]["accuracy"]["std"] for m in seed_models]
        ranges = [
            100 * (m["test"]["accuracy"]["max"] - m["test"]["accuracy"]["min"]) for m in seed_models
        ]
        lines.append(
            f"Over the seeds, the test accuracy of one model has a std of {min(stds):.1f} to "
            f"{max(stds):.1f} points and a min-max range of {min(ranges):.1f} to "
            f"{max(ranges):.1f} points ({_patients(round(min(ranges) / point))} to "
            f"{_patients(round(max(ranges) / point))}), depending on the model: a single run "
            "on this split says little."
        )
    tuning = result["tuning"]["mlp_classifier"]
    scores = tuning["best_scores"]
    lines.append(
        f"MLPClassifier tuned: {tuning['best_params']} by grid search over {tuning['grid']}, "
        f"ranked by {tuning['ranking']}, with {tuning['cv']} ({tuning['source']}"
        + (
            f": CV ROC AUC {scores['roc_auc']:.3f}, log loss {scores['log_loss']:.3f}"
            if scores
            else ""
        )
        + ")."
    )
    return lines


def _patients(n: int) -> str:
    return f"{n} patient" + ("" if n == 1 else "s")


def versions_line(result: dict[str, Any]) -> str:
    v = result["versions"]
    return ", ".join(f"{k} {val}" for k, val in v.items())


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_body(result: dict[str, Any]) -> str:
    """Command, versions, protocol, table and notes: the part the README embeds."""
    parts = [
        f"Command: `{result['command']}` ({result['created_at']}, "
        f"{result['machine']['cpu_count']} CPUs).",
        "",
        f"Versions: {versions_line(result)}.",
        "",
        _markdown_table(table_rows(result)),
        "",
        *[f"- {n}" for n in notes(result)],
        "",
        *[f"- {f}" for f in facts(result)],
    ]
    return "\n".join(parts) + "\n"


def render_markdown(result: dict[str, Any]) -> str:
    return (
        "# Comparison: our NumPy network, scikit-learn and Keras\n\n"
        "Generated by `python -m training.compare`; the raw figures, per seed, are in "
        "`comparison.json` beside this file.\n\n" + render_body(result)
    )


def render_terminal(result: dict[str, Any]) -> str:
    rows = [list(HEADERS), *([c.replace("**", "") for c in r] for r in table_rows(result))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", *[n.replace("**", "") for n in notes(result)]]
    lines += ["", *[f.replace("**", "").replace("`", "") for f in facts(result)]]
    return "\n".join(lines)


def update_readme(path: Path, result: dict[str, Any]) -> None:
    """Replace what lies between the two markers; refuse when they are missing."""
    text = path.read_text(encoding="utf-8")
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(
            f"{path} has no comparison block: add the lines {README_BEGIN!r} and {README_END!r}"
        )
    new = text[: begin + len(README_BEGIN)] + "\n" + render_body(result) + text[end:]
    write_text_atomic(path, new)


def readme_block(text: str) -> str | None:
    """The generated part of a README, or None without markers (used by the tests)."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return None
    return text[begin + len(README_BEGIN) : end].strip("\n") + "\n"
