"""The comparison command (issue 5) on the real data, in reduced form.

These run in the main virtualenv, which has no Keras: the Keras rows must
then say "not installed" and how to get it, and nothing may crash. Where
Keras *is* installed (CI's Keras virtualenv) the same tests expect those
rows to have run. tests/test_compare_keras.py covers the Keras wrapper itself.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

import training.compare as compare
import training.compare_models as compare_models
import training.keras_model as keras_model
from model.network import NumpyMLPClassifier
from tests._tools import REPO_ROOT
from training.compare import CompareOptions, build_parser, options_from_args, run_comparison
from training.compare_models import (
    RECORDED_MLP_PARAMS,
    ModelSpec,
    TutorialNumpyNetwork,
    scaled,
)
from training.compare_report import (
    HEADERS,
    readme_block,
    render_body,
    render_markdown,
    render_terminal,
)
from training.data import load_dataset, split
from training.evaluate import classification_metrics, cross_validate
from training.keras_model import INSTALL_HINT, keras_status
from training.pipeline import TrainingConfig, make_pipeline, train

RESULTS = REPO_ROOT / "results"
ALL_KEYS = [
    "logistic_regression",
    "numpy_tutorial_8",
    "numpy_tutorial_8_literal",
    "numpy_tutorial_10",
    "numpy_default",
    "mlp_tutorial",
    "mlp_tuned",
    "keras_tutorial",
    "keras_relu",
]
KERAS_KEYS = {"keras_tutorial", "keras_relu"}
SPREAD_KEYS = {"mean", "std", "min", "max"}
REDUCED = CompareOptions(seeds=2, cv_folds=3, cv_repeats=1, tune=False, predict_repeats=1)
NON_KERAS = tuple(k for k in ALL_KEYS if k not in KERAS_KEYS)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    """One reduced run of every model (Keras rows only where Keras is installed)."""
    return run_comparison(REDUCED, command="python -m training.compare --quick")


def by_key(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["key"]: m for m in result["models"]}


def test_every_model_of_the_issue_is_a_row_in_order(result: dict[str, Any]) -> None:
    assert [m["key"] for m in result["models"]] == ALL_KEYS


def test_non_keras_rows_ran_with_the_reduced_protocol(result: dict[str, Any]) -> None:
    rows = by_key(result)
    for key in NON_KERAS:
        row = rows[key]
        assert row["status"] == "ok", row["message"]
        cv = row["cross_validation"]
        assert cv["protocol"] == {"n_splits": 3, "n_repeats": 1, "random_state": 0, "n_folds": 3}
        for part in ("train", "test"):
            for metric in ("accuracy", "roc_auc", "statlog_cost", "log_loss"):
                s = row[part][metric]
                assert set(s) == SPREAD_KEYS
                assert s["min"] - 1e-12 <= s["mean"] <= s["max"] + 1e-12
                assert s["std"] >= 0.0
        if row["seed_dependent"]:
            assert row["seeds"] == [0, 1]
            assert [r["seed"] for r in row["per_seed"]] == [0, 1]
        else:
            assert row["seeds"] == []
            assert row["test"]["accuracy"]["std"] == 0.0  # refitted, but deterministic
        assert row["timing"]["fit_seconds_median"] > 0.0
        assert row["timing"]["predict_seconds_per_row_median"] > 0.0


def test_keras_rows_say_not_installed_or_ran(result: dict[str, Any]) -> None:
    rows = by_key(result)
    status = keras_status()
    assert result["keras"]["available"] is status.available
    for key in KERAS_KEYS:
        if status.available:
            assert rows[key]["status"] == "ok", rows[key]["message"]
        else:
            assert rows[key]["status"] == "not installed"
            assert rows[key]["message"] == f"not installed: {INSTALL_HINT}"
    # The tutorial model's defining fact is stated whether or not Keras ran.
    assert "logistic regression in disguise" in rows["keras_tutorial"]["note"]


def test_test_split_and_the_one_patient_fact(result: dict[str, Any]) -> None:
    protocol = result["protocol"]
    assert protocol["split"]["n_train"] == 216
    assert protocol["split"]["n_test"] == 54
    assert protocol["one_test_patient_in_accuracy_points"] == pytest.approx(1.85, abs=0.005)
    # Every test accuracy is a whole number of patients out of 54.
    for row in result["models"]:
        for record in row.get("per_seed", []):
            patients = record["test"]["accuracy"] * 54
            assert patients == pytest.approx(round(patients))


def test_split_figures_match_training_evaluate_directly(result: dict[str, Any]) -> None:
    """The LogisticRegression row, recomputed by hand with the shared helpers."""
    x, y = load_dataset()
    x_train, x_test, y_train, y_test = split(x, y)
    model = scaled(LogisticRegression()).fit(x_train, y_train)
    row = by_key(result)["logistic_regression"]
    for part, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
        expected = classification_metrics(ys, model.predict_proba(xs)[:, 1])
        for metric in ("accuracy", "roc_auc", "statlog_cost", "log_loss"):
            assert row[part][metric]["mean"] == pytest.approx(expected[metric])
    cv = cross_validate(
        lambda: scaled(LogisticRegression()),
        x,
        y,
        n_splits=3,
        n_repeats=1,
        random_state=0,
        tune_threshold=False,
    )
    for metric in ("accuracy", "roc_auc", "statlog_cost"):
        assert row["cross_validation"][metric] == pytest.approx(cv[metric])


def test_default_row_is_the_model_the_training_command_ships(result: dict[str, Any]) -> None:
    """Seed 0 of our default row must reproduce ``python -m training``'s own test figures."""
    payload = train(TrainingConfig(cv_folds=0, sites=("statlog",), missing_values=False)).payload
    seed0 = by_key(result)["numpy_default"]["per_seed"][0]
    assert seed0["seed"] == TrainingConfig().seed == 0
    assert payload["hyperparameters"]["alpha"] == 10.0  # the tutorial's, not the gaps network's
    for metric in ("accuracy", "roc_auc", "statlog_cost"):
        assert seed0["test"][metric] == pytest.approx(payload["metrics"]["test"][metric])
        assert seed0["train"][metric] == pytest.approx(payload["metrics"]["train"][metric])


def test_cross_validation_gives_fold_i_seed_i(result: dict[str, Any]) -> None:
    x, y = load_dataset()
    seeds = iter(range(100))
    cv = cross_validate(
        lambda: make_pipeline(replace(TrainingConfig(), seed=next(seeds))),
        x,
        y,
        n_splits=3,
        n_repeats=1,
        random_state=0,
        tune_threshold=False,
    )
    row = by_key(result)["numpy_default"]
    assert row["cross_validation"]["accuracy"] == pytest.approx(cv["accuracy"])
    assert row["cross_validation"]["roc_auc"] == pytest.approx(cv["roc_auc"])


def test_agreement_column_is_measured_against_logistic_regression(
    result: dict[str, Any],
) -> None:
    rows = by_key(result)
    assert rows["logistic_regression"]["agreement_with_reference"]["mean"] == 1.0
    # The literal reading of the tutorial's learning rate barely leaves its random start,
    # so it cannot agree with a fitted model on most patients.
    literal = rows["numpy_tutorial_8_literal"]
    assert literal["agreement_with_reference"]["mean"] < 0.8
    assert (
        literal["test"]["accuracy"]["mean"] < rows["numpy_tutorial_8"]["test"]["accuracy"]["mean"]
    )


def test_tutorial_learning_rate_is_the_tutorials_summed_gradient() -> None:
    """lr 0.001 on summed gradients is lr 0.001 * n on mean ones: identical weights."""
    x, y = load_dataset()
    x_train, _, y_train, _ = split(x, y)
    ours = TutorialNumpyNetwork(8, 0.001, 100, random_state=3).fit(x_train, y_train)
    direct = NumpyMLPClassifier(
        hidden_units=8,
        learning_rate=0.001 * x_train.shape[0],
        max_iter=100,
        optimizer="sgd",
        init="normal",
        random_state=3,
    ).fit(x_train, y_train)
    for a, b in zip(ours.network_.coefs_, direct.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.predict_proba(x_train), direct.predict_proba(x_train))


def test_result_is_strict_json(result: dict[str, Any]) -> None:
    text = json.dumps(result, allow_nan=False)
    again = json.loads(text)
    assert set(again) >= {"command", "protocol", "versions", "keras", "tuning", "models"}
    assert again["tuning"]["mlp_classifier"]["source"] == "recorded"
    assert again["versions"]["scikit-learn"]


def test_markdown_and_terminal_tables(result: dict[str, Any]) -> None:
    md = render_markdown(result)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(ALL_KEYS)
    assert all(line.count("|") == len(HEADERS) + 1 for line in table)
    assert "1.85 accuracy points" in md
    assert "logistic regression in disguise" in md
    assert result["command"] in md
    if not keras_status().available:
        assert f"not installed: {INSTALL_HINT}" in md
    terminal = render_terminal(result)
    for row in result["models"]:
        assert row["label"] in terminal
    assert "**" not in terminal


def test_cli_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = compare.main(
        ["--quick", "--models", "logistic_regression,keras_tutorial", "--output-dir", str(tmp_path)]
    )
    assert code == 0
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert [m["key"] for m in data["models"]] == ["logistic_regression", "keras_tutorial"]
    assert data["protocol"]["cross_validation"]["n_splits"] == 3
    assert data["command"].startswith("python -m training.compare --quick")
    assert (tmp_path / "comparison.md").read_text() == render_markdown(data)
    assert "LogisticRegression" in capsys.readouterr().out


def test_quick_defaults_yield_to_explicit_options() -> None:
    argv = ["--quick", "--seeds", "4"]
    options = options_from_args(build_parser().parse_args(argv), argv)
    assert (options.seeds, options.cv_folds, options.cv_repeats, options.tune) == (4, 3, 1, False)
    full = options_from_args(build_parser().parse_args([]), [])
    assert (full.seeds, full.cv_folds, full.cv_repeats, full.tune) == (10, 10, 5, True)


def test_a_failing_keras_row_fails_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What CI relies on: with Keras present, any error in its rows is a non-zero exit."""

    def broken() -> Any:
        raise ImportError("simulated broken Keras install")

    monkeypatch.setattr(
        compare,
        "keras_status",
        lambda: keras_model.KerasStatus(True, "jax", "", {"keras": "test"}),
    )
    monkeypatch.setattr(keras_model, "import_keras", broken)
    argv = ["--quick", "--models", "logistic_regression,keras_relu", "--output-dir", str(tmp_path)]
    assert compare.main(argv) == 1
    rows = by_key(json.loads((tmp_path / "comparison.json").read_text()))
    assert rows["logistic_regression"]["status"] == "ok"
    assert rows["keras_relu"]["status"] == "error"
    assert "simulated broken Keras install" in rows["keras_relu"]["message"]
    assert "1 model(s) failed: Keras Dense(8, relu)" in capsys.readouterr().err


def test_any_failing_model_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Exploding(BaseEstimator):
        def fit(self, X: Any, y: Any) -> Exploding:
            raise RuntimeError("boom")

    real_specs = compare_models.model_specs

    def specs(tuned: dict[str, Any], config: TrainingConfig) -> list[ModelSpec]:
        bad = ModelSpec("exploding", "Exploding", lambda seed: scaled(Exploding()), {})
        return [real_specs(tuned, config)[0], bad]

    monkeypatch.setattr(compare, "model_specs", specs)
    assert compare.main(["--quick", "--output-dir", str(tmp_path), "-q"]) == 1
    rows = by_key(json.loads((tmp_path / "comparison.json").read_text()))
    assert rows["logistic_regression"]["status"] == "ok"
    assert rows["exploding"]["status"] == "error"
    assert rows["exploding"]["message"] == "RuntimeError: boom"


def test_require_keras_fails_without_keras(capsys: pytest.CaptureFixture[str]) -> None:
    if keras_status().available:
        pytest.skip("Keras is installed here; tests/test_compare_keras.py covers that side")
    assert compare.main(["--quick", "--require-keras", "--no-write"]) == 1
    assert INSTALL_HINT in capsys.readouterr().err


def test_unknown_model_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(["--quick", "--models", "nope", "--no-write", "-q"]) == 2
    assert "unknown model key(s) ['nope']" in capsys.readouterr().err


def test_recorded_mlp_settings_are_those_of_the_committed_full_run() -> None:
    data = json.loads((RESULTS / "comparison.json").read_text())
    tuning = data["tuning"]["mlp_classifier"]
    assert tuning["source"] == "grid search in this run"
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in RECORDED_MLP_PARAMS.items()}
    assert tuning["best_params"] == recorded
    tuned_row = by_key(data)["mlp_tuned"]
    assert tuned_row["settings"] == {**recorded, "max_iter": 2000}


def test_committed_markdown_and_readme_are_generated_from_the_committed_json() -> None:
    data = json.loads((RESULTS / "comparison.json").read_text())
    assert (RESULTS / "comparison.md").read_text() == render_markdown(data)
    assert data["protocol"]["cross_validation"]["n_splits"] == 10
    assert data["protocol"]["cross_validation"]["n_repeats"] == 5
    assert len(data["protocol"]["seeds"]) >= 5
    block = readme_block((REPO_ROOT / "docs" / "comparison.md").read_text())
    assert block == render_body(data), "run: python -m training.compare --readme docs/comparison.md"
