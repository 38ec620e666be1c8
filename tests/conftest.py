"""Shared fixtures: one real trained model and artifact per test session.

Training the real default model takes seconds, so the session trains it once
(with a short cross-validation, which only adds figures to the report) and
every test that needs a model uses that result or loads that file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from model.arrays import FloatArray, IntArray
from model.artifact import read_payload, save_artifact
from tests._tools import SESSION_TRAINING
from training.data import load_dataset
from training.pipeline import TrainingResult, train


@pytest.fixture(scope="session")
def trained() -> TrainingResult:
    """The default model, trained once for the whole session."""
    return train(SESSION_TRAINING)


@pytest.fixture(scope="session")
def artifact_path(trained: TrainingResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model written as a real artifact."""
    out = tmp_path_factory.mktemp("artifact") / "model.joblib"
    save_artifact(trained.payload, out)
    return out


@pytest.fixture(scope="session")
def artifact_payload(artifact_path: Path) -> dict[str, object]:
    return read_payload(artifact_path)


@pytest.fixture(scope="session")
def heart_data() -> tuple[FloatArray, IntArray]:
    return load_dataset()


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What Python would print as "Exception ignored in: ..." with a traceback during the
    test (an exception raised where no caller can catch it, such as in a callback from C
    code), recorded instead: on the service's stderr only JSON lines may appear, and
    heart-score's refusal is one line."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(f"{u.exc_type.__name__}"))
    return seen
