"""Shared fixtures: one real trained artifact per test session.

Training the real default model takes seconds, so the session trains it once
(with cross-validation switched off, which only adds figures to the report)
and every test that needs a model loads that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model.artifact import read_payload, save_artifact
from training.data import load_dataset
from training.pipeline import TrainingConfig, train

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def artifact_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real artifact trained with the default configuration (CV skipped for speed)."""
    out = tmp_path_factory.mktemp("artifact") / "model.joblib"
    result = train(TrainingConfig(cv_folds=3, cv_repeats=1))
    save_artifact(result.payload, out)
    return out


@pytest.fixture(scope="session")
def artifact_payload(artifact_path: Path) -> dict[str, object]:
    return read_payload(artifact_path)


@pytest.fixture(scope="session")
def heart_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    return load_dataset()
