"""The training command end to end on the real data, in a temporary directory."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from model.artifact import load_artifact
from tests._tools import REPO_ROOT, run
from training.data import default_data_path
from training.missing import MarginalMLPClassifier
from training.pipeline import TrainingConfig, make_model


def run_training(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "training", *args], cwd=cwd, timeout=300)


@pytest.mark.slow
def test_training_command_writes_artifact_report_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out" / "model.joblib"
    proc = run_training(
        "--output",
        str(out),
        "--cv-folds",
        "3",
        "--cv-repeats",
        "1",
        "--threshold-strategy",
        "min-cost",
        "--ensemble-size",
        "2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test  accuracy" in proc.stdout and "cv    accuracy" in proc.stdout
    pinned = re.search(r"HEART_MODEL_SHA256=([0-9a-f]{64})", proc.stdout)
    assert pinned is not None, proc.stdout
    assert pinned.group(1) == hashlib.sha256(out.read_bytes()).hexdigest()
    predictor = load_artifact(out, expected_sha256=pinned.group(1))
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["model_version"] == predictor.model_version
    assert report["threshold_strategy"] == "min-cost"
    assert 0.0 < predictor.threshold < 0.5  # a missed disease costs 5x a false alarm
    # Spelled out rather than taken from training.evaluate, so that a dropped metric fails here.
    expected = {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"}
    expected |= {"statlog_cost", "confusion_matrix"}
    for part in ("train", "test"):
        assert expected <= report["metrics"][part].keys(), part
    assert report["metrics"]["cross_validation"]["protocol"]["n_folds"] == 3
    assert len(report["loss_curve"]) == report["hyperparameters"]["epochs"]
    png = out.with_suffix(".loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # no temp files left behind next to the outputs
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.joblib",
        "model.loss.png",
        "model.reliability.png",
        "model.report.json",
    ]


def test_quiet_prints_nothing_and_hyperparameters_reach_the_artifact(tmp_path: Path) -> None:
    out = tmp_path / "m.joblib"
    proc = run_training(
        "--output",
        str(out),
        "--quiet",
        "--no-plot",
        "--cv-folds",
        "0",
        "--hidden-units",
        "10",
        "--learning-rate",
        "0.01",
        "--epochs",
        "50",
        "--optimizer",
        "sgd",
        "--init",
        "normal",
        "--seed",
        "3",
        "--ensemble-size",
        "2",
        "--networks",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    predictor = load_artifact(out)
    assert predictor.n_hidden == 10
    assert predictor.metadata["hyperparameters"]["n_networks"] == 1
    hp = predictor.metadata["hyperparameters"]
    assert (hp["optimizer"], hp["init"], hp["epochs"], hp["seed"]) == ("sgd", "normal", 50, 3)
    # No --alpha: the artifact records the weight decay actually used, not "the default".
    assert hp["alpha"] == MarginalMLPClassifier().alpha == 3.0
    assert predictor.ensemble is not None and predictor.ensemble.size == hp["ensemble_size"] == 2
    assert not out.with_suffix(".loss.png").exists()


def test_each_recipe_keeps_its_own_weight_decay() -> None:
    """``alpha=None`` is the recipe's own choice; a given alpha overrides both recipes."""
    gaps = TrainingConfig()
    tutorial = TrainingConfig(sites=("statlog",), missing_values=False)
    assert gaps.alpha is None and tutorial.alpha is None
    # The network for gaps: inner CV on the three UCI sites chose 3 (results/sites.md).
    gaps_model = make_model(gaps)
    assert isinstance(gaps_model, MarginalMLPClassifier)
    assert gaps.weight_decay() == gaps_model.alpha == 3.0
    # The tutorial network (training.compare, --sites statlog): training.tune's 10.
    tutorial_model = make_model(tutorial)
    assert not isinstance(tutorial_model, MarginalMLPClassifier)
    assert tutorial.weight_decay() == tutorial_model.named_steps["network"].alpha == 10.0
    for config in (gaps, tutorial):
        given = replace(config, alpha=0.5)
        assert given.weight_decay() == 0.5
        model = make_model(given)
        network = model if isinstance(model, MarginalMLPClassifier) else model[-1]
        assert network.alpha == 0.5


def test_help_documents_defaults() -> None:
    proc = run_training("--help", cwd=REPO_ROOT)
    assert proc.returncode == 0
    for option in (
        "--hidden-units",
        "--alpha",
        "--optimizer",
        "--threshold-strategy",
        "--accept-data-change",
        "--quiet",
    ):
        assert option in proc.stdout
    text = " ".join(proc.stdout.split())
    shown = re.search(r"\(default: ([^)]*)\)", text.split(" --alpha ", 1)[1])
    # Each recipe's own weight decay: the tutorial's 10, the network for gaps' 3.
    assert shown is not None and shown.group(1).split()[0] == "10", text
    assert shown.group(1).endswith("else 3"), shown.group(1)


def test_changed_data_is_refused_then_accepted(tmp_path: Path) -> None:
    data = tmp_path / "heart.dat"
    rows = default_data_path().read_text().splitlines()
    data.write_text("\n".join(rows[:-1]) + "\n")
    args = (
        "--sites",
        "statlog",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "m.joblib"),
        "--quiet",
        "--no-plot",
        "--cv-folds",
        "0",
    )
    refused = run_training(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "SHA-256" in refused.stderr
    assert not (tmp_path / "m.joblib").exists()
    accepted = run_training(*args, "--accept-data-change", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert load_artifact(tmp_path / "m.joblib").metadata["split"]["n_train"] == 215


def test_bad_data_and_bad_options_exit_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "bad.dat"
    data.write_text("63 1 4 145 233 1 2 150 0 2.3 3 0 9 1\n")
    proc = run_training(
        "--sites",
        "statlog",
        "--data",
        str(data),
        "--accept-data-change",
        "--output",
        str(tmp_path / "m.joblib"),
        "--quiet",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "row 1, column 13 (thal)" in proc.stderr
    proc = run_training(
        "--learning-rate",
        "-1",
        "--output",
        str(tmp_path / "m.joblib"),
        "--quiet",
        "--cv-folds",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "learning_rate must be positive" in proc.stderr


def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path: Path) -> None:
    """A directory named as the output, or a path through a file, was a traceback after the
    whole training run; an --output named as the --data file replaced the data with a pickle."""
    data = tmp_path / "heart.dat"
    data.write_bytes(default_data_path().read_bytes())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = [
        (tmp_path, f"cannot write {tmp_path}: Is a directory"),
        (blocker / "m.joblib", f"cannot write {blocker / 'm.joblib'}: Not a directory"),
        (data, f"--output {data} is the --data file"),
    ]
    for output, message in cases:
        proc = run_training(
            "--sites",
            "statlog",
            "--data",
            str(data),
            "--output",
            str(output),
            "--quiet",
            cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert data.read_bytes() == default_data_path().read_bytes()
