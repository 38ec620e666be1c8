"""The artifact: round trip, folded-scaler inference, and every kind of broken file."""

from __future__ import annotations

import copy
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from model.artifact import ArtifactError, load_artifact, read_payload, save_artifact, sha256_of
from model.predictor import Predictor
from tests._tools import SESSION_TRAINING
from training.data import load_dataset, split
from training.pipeline import train

#: This module checks the artifact against Statlog's split (54 test patients).
STATLOG_TRAINING = replace(SESSION_TRAINING, cv_folds=0, sites=("statlog",))


@pytest.fixture(scope="module")
def trained() -> Any:
    return train(STATLOG_TRAINING)


def test_round_trip_gives_the_pipelines_probabilities(trained: Any, tmp_path: Path) -> None:
    path = save_artifact(trained.payload, tmp_path / "m.joblib")
    predictor = load_artifact(path)
    x, y = load_dataset()
    _, x_test, _, _ = split(x, y)
    expected = trained.pipeline.predict_proba(x_test)[:, 1]
    np.testing.assert_allclose(predictor.probability(x_test), expected, rtol=1e-12, atol=1e-14)
    one = predictor.probability(x_test[0])
    assert one.shape == (1,) and one[0] == pytest.approx(expected[0], rel=1e-12)
    assert predictor.model_version == trained.payload["model_version"]
    assert predictor.metadata["metrics"]["test"]["n"] == 54
    assert "weights" not in predictor.metadata


def test_predictor_rejects_wrong_width(trained: Any, tmp_path: Path) -> None:
    predictor = load_artifact(save_artifact(trained.payload, tmp_path / "m.joblib"))
    with pytest.raises(ValueError, match="13 features"):
        predictor.probability(np.zeros((2, 12)))


def test_probability_is_finite_and_bounded_for_extreme_rows(trained: Any, tmp_path: Path) -> None:
    predictor = load_artifact(save_artifact(trained.payload, tmp_path / "m.joblib"))
    rows = np.array([[1e9] * 13, [-1e9] * 13, [0.0] * 13])
    p = predictor.probability(rows)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


def test_same_training_twice_gives_identical_weights(trained: Any) -> None:
    again = train(STATLOG_TRAINING)
    for key, value in trained.payload["weights"].items():
        np.testing.assert_array_equal(value, again.payload["weights"][key])
    assert again.payload["model_version"] == trained.payload["model_version"]


def test_artifact_is_world_readable_and_atomic(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_artifact(trained.payload, tmp_path / "m.joblib")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    original = path.read_bytes()

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # the user pressing Ctrl-C mid-write

    monkeypatch.setattr(joblib, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(trained.payload, path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib"]


def _mutations() -> list[tuple[str, Any, str]]:
    def drop(key: str) -> Any:
        return lambda p: p.pop(key)

    def setter(key: str, value: Any) -> Any:
        return lambda p: p.__setitem__(key, value)

    def weight(key: str, value: Any) -> Any:
        return lambda p: p["weights"].__setitem__(key, value)

    return [
        ("missing key", drop("scaler"), "missing keys"),
        ("future format", setter("format_version", 99), "format version 99"),
        ("other features", lambda p: p["feature_names"].reverse(), "differ from this code"),
        ("wrong shape", weight("W1", np.zeros((12, 8))), "W1 has shape"),
        ("hidden mismatch", weight("b1", np.zeros(5)), "b1 has shape"),
        ("nan weights", weight("W2", np.full((8, 1), np.nan)), "NaN or infinite"),
        ("text weights", weight("b2", "abc"), "not numeric"),
        ("bad threshold", setter("threshold", 1.5), "threshold"),
        ("zero scale", lambda p: p["scaler"].__setitem__("scale", np.zeros(13)), "positive"),
    ]


@pytest.mark.parametrize(("case", "mutate", "message"), _mutations(), ids=lambda v: str(v)[:20])
def test_mismatched_artifacts_raise_one_clear_error(
    trained: Any, tmp_path: Path, case: str, mutate: Any, message: str
) -> None:
    payload = copy.deepcopy(trained.payload)
    mutate(payload)
    path = tmp_path / "bad.joblib"
    joblib.dump(payload, path)  # bypass save_artifact, which refuses to write these
    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(path)
    assert str(path) in str(info.value) and "python -m training" in str(info.value)
    with pytest.raises(ArtifactError):
        save_artifact(payload, tmp_path / "refused.joblib")
    assert not (tmp_path / "refused.joblib").exists()


def test_missing_truncated_corrupt_and_foreign_files(trained: Any, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "absent.joblib")
    good = save_artifact(trained.payload, tmp_path / "good.joblib").read_bytes()
    (tmp_path / "truncated.joblib").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.joblib").write_bytes(os.urandom(2048))
    (tmp_path / "empty.joblib").write_bytes(b"")
    joblib.dump([1, 2, 3], tmp_path / "list.joblib")
    for name, message in [
        ("truncated", "unreadable"),
        ("garbage", "unreadable"),
        ("empty", "empty file"),
        ("list", "holds a list"),
    ]:
        with pytest.raises(ArtifactError, match=message):
            read_payload(tmp_path / f"{name}.joblib")


def test_each_unusable_path_says_what_is_wrong(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: a directory is not "not found", and an unreadable file is not corrupt."""
    with pytest.raises(ArtifactError, match="is a directory, not a file") as info:
        load_artifact(tmp_path)
    assert "python -m training" not in str(info.value)  # retraining would not help
    with pytest.raises(ArtifactError, match="does not exist either"):
        load_artifact(tmp_path / "no-such-dir" / "model.joblib")
    locked = save_artifact(trained.payload, tmp_path / "locked.joblib")

    def denied(self: Path) -> bytes:  # what a mode-000 file gives a non-root user
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ArtifactError, match="permission denied") as info:
        load_artifact(locked)
    assert "corrupt" not in str(info.value)


def test_pinned_hash_is_checked_before_unpickling(trained: Any, tmp_path: Path) -> None:
    path = save_artifact(trained.payload, tmp_path / "m.joblib")
    digest = sha256_of(path.read_bytes())
    assert load_artifact(path, expected_sha256=digest.upper()).model_version
    # A pickle that would run code when loaded is refused without being loaded.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_RunsCode(str(marker)), evil)
    with pytest.raises(ArtifactError, match="not the pinned") as info:
        read_payload(evil, expected_sha256=digest)
    assert digest in str(info.value)
    assert not marker.exists()


class _RunsCode:
    """Unpickling this creates a file: what a malicious artifact could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).touch, ())


def test_predictor_folding_matches_explicit_scaling() -> None:
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(13, 4)), rng.normal(size=4)
    w2, b2 = rng.normal(size=(4, 1)), rng.normal(size=1)
    mean, scale = rng.normal(size=13), rng.uniform(0.5, 2.0, size=13)
    x = rng.normal(size=(5, 13)) * 10
    z = np.maximum(((x - mean) / scale) @ w1 + b1, 0) @ w2 + b2
    expected = 1 / (1 + np.exp(-z.ravel()))
    p = Predictor.from_network((w1, w2), (b1, b2), mean, scale).probability(x)
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-15)
